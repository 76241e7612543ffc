"""`@cache.cached` on sync and async functions: one call per key, key from the arguments."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

import freshcache


def test_sync_decorator_calls_once_per_key(cache: freshcache.Cache) -> None:
    calls: list[tuple[str, str]] = []

    @cache.cached(key="llm:features:{cluster_id}:{date}", codec="numpy")
    def features(cluster_id: str, date: str = "2026-11-24") -> np.ndarray:
        calls.append((cluster_id, date))
        return np.full(768, len(calls), dtype=np.float32)

    a = features("c7")
    b = features(cluster_id="c7", date="2026-11-24")
    c = features("c8")
    assert calls == [("c7", "2026-11-24"), ("c8", "2026-11-24")]
    assert np.array_equal(a, b) and a[0] == 1 and c[0] == 2
    assert cache.get("llm:features:c7:2026-11-24") is not None
    assert features.__name__ == "features"


def test_decorator_ttl(cache: freshcache.Cache, clock: freshcache.ManualClock) -> None:
    n = 0

    @cache.cached(key="odds:{game}:live", ttl=10)
    def odds(game: str) -> dict[str, float]:
        nonlocal n
        n += 1
        return {"home": 1.5 + n}

    assert odds("g1") == {"home": 2.5}
    clock.advance(9)
    assert odds("g1") == {"home": 2.5}
    clock.advance(1)
    assert odds("g1") == {"home": 3.5}


def test_decorator_template_must_name_parameters(cache: freshcache.Cache) -> None:
    with pytest.raises(TypeError):

        @cache.cached(key="odds:{nope}:live")
        def f(game: str) -> str:
            return game


def test_async_decorator_calls_once_and_does_not_block_the_loop(
    tmp_path: Path, clock: freshcache.ManualClock
) -> None:
    acache = freshcache.AsyncCache(cache_dir=tmp_path, clock=clock)
    calls = 0

    @acache.cached(key="news:{source}:{article}")
    async def article(source: str, article: str) -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return f"{source}/{article}"

    async def main() -> None:
        got = await asyncio.gather(*[article("espn", "a1") for _ in range(20)])
        assert got == ["espn/a1"] * 20
        assert await article("espn", "a2") == "espn/a2"
        await acache.close()

    asyncio.run(main())
    assert calls == 2


def test_async_function_decorated_by_the_sync_cache(cache: freshcache.Cache) -> None:
    calls = 0

    @cache.cached(key="news:{source}:x")
    async def fetch(source: str) -> dict[str, str]:
        nonlocal calls
        calls += 1
        return {"s": source}

    async def main() -> None:
        assert await fetch("espn") == {"s": "espn"}
        assert await fetch("espn") == {"s": "espn"}

    asyncio.run(main())
    assert calls == 1
