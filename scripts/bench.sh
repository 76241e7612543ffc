#!/usr/bin/env bash
# The whole benchmark suite (issue 7), every contender in the same run: W1 memory hits, W6 hit
# ratio, W2 disk tier, W5 expired sweep and W3 Redis tier (`cargo bench --bench tiers`), then W4
# the HTTP service beside Redis (`cargo bench --bench service`). Prints tables with ratios and
# writes JSON to target/bench/. Installs the contenders it needs on Debian: python-diskcache
# (pip), redis-server, redis-benchmark and wrk (apt); the Python section makes its own venv.
#
# Usage: ./scripts/bench.sh [flags]   e.g. --runs 5, --keys 100000, --disk-keys 20000,
#        --large-keys 1000, --sweep-entries 1000000, --ops 2000000, --redis-ops 100000,
#        --secs 5 (per wrk run), --requests 400000 (per redis-benchmark run), --smoke.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! python3 -c "import diskcache" 2>/dev/null; then
  echo "==> installing python-diskcache"
  python3 -m pip install -q diskcache
fi

mkdir -p target/bench
started=$(date +%s)
cargo bench -p freshcache --bench tiers -- --json "$PWD/target/bench/tiers.json" "$@"
cargo bench -p freshcache-cli --bench service -- --json "$PWD/target/bench/service.json" "$@"

# The Python face (crates/freshcache-py/bench/bench.py) against the Python peers, installed
# from the package index into their own venv: cachebox, python-diskcache, redis-py. The
# extension is built in release mode here (a cold build takes ~5 minutes on 2 cores). It uses
# the Redis on 127.0.0.1:6379 unless BENCH_REDIS_URL names another.
echo "==> Python: freshcache from Python vs cachebox, python-diskcache, redis-py"
venv=target/py-bench-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip "maturin>=1.16,<2" cachebox diskcache redis numpy
"$venv/bin/python" -m pip install -q --force-reinstall --no-deps ./crates/freshcache-py
py_args=()
for a in "$@"; do [ "$a" = "--smoke" ] && py_args+=(--smoke); done
"$venv/bin/python" crates/freshcache-py/bench/bench.py --json "$PWD/target/bench/python.json" "${py_args[@]}"
echo "==> benchmark suite finished in $(( $(date +%s) - started )) s; JSON in target/bench/"
