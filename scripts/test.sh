#!/usr/bin/env bash
# Runs every freshcache test, installing what the tests need on a fresh Debian machine first.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi

runner=(cargo test)
if cargo nextest --version >/dev/null 2>&1; then
  runner=(cargo nextest run --no-fail-fast)
fi

echo "==> unit, property and integration tests (${runner[*]})"
"${runner[@]}" --workspace

echo "==> doc tests"
cargo test --workspace --doc --quiet

echo "==> benchmark smoke run (tiny sizes, no timing assertions)"
cargo test -p freshcache --bench tiers --quiet -- --smoke

echo "all tests passed"
