#!/usr/bin/env bash
# Runs every freshcache test, installing what the tests need on a fresh Debian machine first.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi

# Tests start their own redis-server processes (never the one on 6379; one over TLS with a CA
# made by openssl), check the metrics exposition and alert rules with promtool (Debian's
# `prometheus` package), and run processes with clocks five minutes off under libfaketime
# (Debian's `faketime`).
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v promtool >/dev/null || need+=(prometheus)
command -v openssl >/dev/null || need+=(openssl)
command -v faketime >/dev/null || need+=(faketime)
# The service benchmark's smoke run drives `serve` with wrk and Redis with redis-benchmark.
command -v wrk >/dev/null || need+=(wrk)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
# The Python package's tests run in a virtual environment (Debian splits venv out of python3).
command -v python3 >/dev/null || need+=(python3)
python3 -c "import venv, ensurepip" 2>/dev/null || need+=(python3-venv)
# The console test drives `serve`'s /ui in Debian's headless Chromium through playwright-core
# (a Node package, installed below from tests/ui/package-lock.json).
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "==> console test's browser driver (npm ci in crates/freshcache-cli/tests/ui)"
(cd crates/freshcache-cli/tests/ui && npm ci --no-audit --no-fund --silent)

runner=(cargo test)
if cargo nextest --version >/dev/null 2>&1; then
  runner=(cargo nextest run --no-fail-fast)
fi

echo "==> unit, property and integration tests (${runner[*]})"
"${runner[@]}" --workspace

echo "==> doc tests"
cargo test --workspace --doc --quiet

echo "==> alert rules (promtool)"
promtool check rules deploy/prometheus/freshcache-rules.yml
(cd deploy/prometheus && promtool test rules freshcache-rules.test.yml)

echo "==> the pipeline example (short run)"
cargo run -q -p freshcache --example pipeline -- --seconds 3

echo "==> benchmark smoke run (tiny sizes, no timing assertions)"
cargo test -p freshcache --bench tiers --quiet -- --smoke
cargo test -p freshcache-cli --bench service --quiet -- --smoke

echo "==> Python package: build into target/py-venv, mypy --strict, pytest, the example"
# The same PEP 517 build as the README's `pip install ./crates/freshcache-py`, in the dev
# profile: it shares the debug build above, where a cold release build costs ~5 minutes.
venv=target/py-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip "maturin>=1.16,<2" pytest mypy numpy msgpack msgpack-types
"$venv/bin/python" -m pip install -q --force-reinstall --no-deps \
  --config-settings=build-args="--profile dev" ./crates/freshcache-py
cargo build -q -p freshcache-cli   # the interop tests drive the debug build of the CLI
# Where cargo builds (CARGO_TARGET_DIR may move it away from ./target).
target_dir=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
(cd crates/freshcache-py && "../../$venv/bin/mypy" --strict python tests examples)
(cd crates/freshcache-py && FRESHCACHE_CLI="$target_dir/debug/freshcache" \
  "../../$venv/bin/python" -m pytest -q -p no:cacheprovider tests)
"$venv/bin/python" crates/freshcache-py/examples/pipeline.py --seconds 3

echo "all tests passed"
