"""python-diskcache Cache.set / Cache.get of N values of SIZE bytes: the W2 baseline.

Defaults of diskcache 5 (SQLite WAL, synchronous=NORMAL; values >= 32 KiB live in their own
files, written without fsync), the same durability class as freshcache's disk tier. The set
pass writes every key in order, the get pass reads them back in a shuffled order (page cache
warm), each op timed on its own with perf_counter_ns.

Prints one JSON line: {"n", "size", "set_s", "get_s", "set_p50_us", "set_p99_us",
"get_p50_us", "get_p99_us"}.
Usage: python3 diskcache_get_set.py DIR N SIZE
"""
import json
import os
import random
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
    cache = diskcache.Cache(directory)
    rng = random.Random(7)
    values = [os.urandom(size) for _ in range(min(n, 64))]
    keys = [f"blob:k{i}" for i in range(n)]
    set_s, set_lat = timed(lambda i: cache.set(keys[i], values[i % len(values)]), range(n))
    order = list(range(n))
    rng.shuffle(order)
    for i in order[: n // 10]:  # warm-up, as the Rust side does
        cache.get(keys[i])

    def get(i):
        if cache.get(keys[i]) is None:
            raise SystemExit(f"diskcache lost {keys[i]}")

    get_s, get_lat = timed(get, order)
    cache.close()
    print(json.dumps({
        "n": n, "size": size, "set_s": set_s, "get_s": get_s,
        "set_p50_us": pct(set_lat, 0.5), "set_p99_us": pct(set_lat, 0.99),
        "get_p50_us": pct(get_lat, 0.5), "get_p99_us": pct(get_lat, 0.99),
    }))


if __name__ == "__main__":
    main()
