#!/usr/bin/env bash
# Long variants of the reliability tests (minutes, not seconds). The short variants run in
# ./scripts/test.sh. Usage: ./scripts/soak.sh [seconds-per-fuzz-target]
set -euo pipefail
cd "$(dirname "$0")/.."
fuzz_secs="${1:-120}"

echo "==> crash rounds: 500 SIGKILLs of a writer mid-write"
FRESHCACHE_CRASH_ROUNDS=500 cargo test -p freshcache --test it --release crash:: -- --nocapture 2>&1 | grep -E "crash:|test result"

echo "==> network, disk and clock faults, torn data, symlinks and the concurrency history, 10 times over"
for i in $(seq 1 10); do
  cargo test -p freshcache --test it --release -- netfault diskfault skew symlinks torn history 2>&1 | grep -E "test result"
done

echo "==> the service under mixed load for 300s: no errors, no stale reads, flat memory"
FRESHCACHE_LOAD_SECS=300 cargo test -p freshcache-cli --test cli --release load:: -- --nocapture 2>&1 | grep -E "load:|load failure|test result"

echo "==> fuzzing (key parser, envelope decoder, config loader, HTTP headers) for ${fuzz_secs}s each"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
for target in key_parse envelope_decode config_load http_headers; do
  (cd fuzz && cargo +nightly fuzz run "$target" -- -max_total_time="$fuzz_secs" -rss_limit_mb=2048)
done
echo "soak finished"
