"""python-diskcache Cache.set / Cache.get of N values of SIZE bytes: the W2 baseline.

Defaults of diskcache 5 (SQLite WAL, synchronous=NORMAL; values >= 32 KiB live in their own
files, written without fsync), the same durability class as freshcache's disk tier. The set
pass writes every key in order, the get pass reads them back in a shuffled order (page cache
warm), each op timed on its own with perf_counter_ns.

With RUNS > 1 each pass is repeated and the median pass time is reported: every set pass
writes into a new, empty cache (as the Rust side's do), the get passes read the last one;
latencies come from the last pass.

Prints one JSON line: {"n", "size", "set_s", "get_s", "set_runs_s", "get_runs_s",
"set_p50_us", "set_p99_us", "get_p50_us", "get_p99_us"}.
Usage: python3 diskcache_get_set.py DIR N SIZE [RUNS]
"""
import json
import os
import random
import shutil
import sys
import time

import diskcache


def pct(sorted_ns, p):
    if not sorted_ns:
        return float("nan")
    return sorted_ns[round((len(sorted_ns) - 1) * p)] / 1000.0


def timed(op, order):
    lat = []
    started = time.perf_counter()
    for i in order:
        t = time.perf_counter_ns()
        op(i)
        lat.append(time.perf_counter_ns() - t)
    elapsed = time.perf_counter() - started
    lat.sort()
    return elapsed, lat


def main() -> None:
    directory, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    rng = random.Random(7)
    values = [os.urandom(size) for _ in range(min(n, 64))]
    keys = [f"blob:k{i}" for i in range(n)]
    set_runs = []
    cache = None
    for r in range(runs):
        if cache is not None:
            cache.close()
            shutil.rmtree(os.path.join(directory, f"pass{r - 1}"))
        # No size limit (its default of 1 GB would evict part of a 20k x 64 KiB run).
        cache = diskcache.Cache(os.path.join(directory, f"pass{r}"), size_limit=1 << 40)
        os.sync()  # no dirty pages left from earlier passes (the Rust side does the same)
        set_s, set_lat = timed(lambda i: cache.set(keys[i], values[i % len(values)]), range(n))
        set_runs.append(set_s)
    os.sync()  # no writeback in flight while reads are timed (the Rust side does the same)
    order = list(range(n))
    rng.shuffle(order)
    for i in order[: n // 10]:  # warm-up, as the Rust side does
        cache.get(keys[i])

    def get(i):
        if cache.get(keys[i]) is None:
            raise SystemExit(f"diskcache lost {keys[i]}")

    get_runs = []
    for _ in range(runs):
        get_s, get_lat = timed(get, order)
        get_runs.append(get_s)
    cache.close()
    print(json.dumps({
        "n": n, "size": size,
        "set_s": sorted(set_runs)[len(set_runs) // 2], "get_s": sorted(get_runs)[len(get_runs) // 2],
        "set_runs_s": set_runs, "get_runs_s": get_runs,
        "set_p50_us": pct(set_lat, 0.5), "set_p99_us": pct(set_lat, 0.99),
        "get_p50_us": pct(get_lat, 0.5), "get_p99_us": pct(get_lat, 0.99),
    }))


if __name__ == "__main__":
    main()
