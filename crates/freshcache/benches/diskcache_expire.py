"""python-diskcache's expire() on N entries, half of them expired: the W5 baseline.

The cache is populated once; each of RUNS passes runs expire() on its own copy of it (the
Rust side does the same), and the median pass is reported.

Prints one JSON line: {"entries": N, "removed": R, "populate_s": P, "expire_s": E,
"expire_runs_s": [...]}.
Usage: python3 diskcache_expire.py DIR N [RUNS]
"""
import json
import os
import shutil
import sys
import time

import diskcache


def main() -> None:
    directory, n = sys.argv[1], int(sys.argv[2])
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    settings = {"size_limit": 1 << 40, "cull_limit": 0}
    cache = diskcache.Cache(directory, **settings)
    value = b"x" * 100
    started = time.perf_counter()
    batch = 10_000
    for start in range(0, n, batch):
        with cache.transact():
            for i in range(start, min(start + batch, n)):
                # Even entries live 10 s, odd ones 10 000 s; expire() runs 100 s "later".
                cache.set(f"odds:g{i}:1", value, expire=10 if i % 2 == 0 else 10_000)
    populate = time.perf_counter() - started
    cache.close()
    passes = []
    removed = 0
    for r in range(runs):
        copy = f"{directory}-run{r}"
        shutil.copytree(directory, copy)
        cache = diskcache.Cache(copy, **settings)
        started = time.perf_counter()
        removed = cache.expire(now=time.time() + 100)
        passes.append(time.perf_counter() - started)
        cache.close()
        shutil.rmtree(copy)
    elapsed = sorted(passes)[len(passes) // 2]
    print(json.dumps({"entries": n, "removed": removed, "populate_s": populate,
                      "expire_s": elapsed, "expire_runs_s": passes}))


if __name__ == "__main__":
    main()
