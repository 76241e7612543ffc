"""python-diskcache's expire() on N entries, half of them expired: the W5 baseline.

Prints one JSON line: {"entries": N, "removed": R, "populate_s": P, "expire_s": E}.
Usage: python3 diskcache_expire.py DIR N
"""
import json
import sys
import time

import diskcache


def main() -> None:
    directory, n = sys.argv[1], int(sys.argv[2])
    cache = diskcache.Cache(directory, size_limit=1 << 40, cull_limit=0)
    value = b"x" * 100
    started = time.perf_counter()
    batch = 10_000
    for start in range(0, n, batch):
        with cache.transact():
            for i in range(start, min(start + batch, n)):
                # Even entries live 10 s, odd ones 10 000 s; expire() runs 100 s "later".
                cache.set(f"odds:g{i}:1", value, expire=10 if i % 2 == 0 else 10_000)
    populate = time.perf_counter() - started
    started = time.perf_counter()
    removed = cache.expire(now=time.time() + 100)
    elapsed = time.perf_counter() - started
    cache.close()
    print(json.dumps({"entries": n, "removed": removed, "populate_s": populate, "expire_s": elapsed}))


if __name__ == "__main__":
    main()
