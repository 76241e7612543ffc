"""`AsyncCache`: awaitable calls that never block the event loop; coroutine loaders."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import pytest

import freshcache


def test_async_round_trip_and_guard(tmp_path: Path, clock: freshcache.ManualClock) -> None:
    async def main() -> None:
        async with freshcache.AsyncCache(cache_dir=tmp_path, clock=clock) as c:
            await c.set("odds:g1:1", {"home": 1.9})
            hit = await c.get("odds:g1:1")
            assert hit is not None and hit.decode() == {"home": 1.9}
            async with c.inference_run("arun-1") as run:
                got = await run.require(["odds:g1:1"])
                assert list(got) == ["odds:g1:1"]
            clock.advance(60)
            with pytest.raises(freshcache.StaleSignals):
                await c.require_fresh("arun-2", ["odds:g1:1"])
            assert [r["verdict"] for r in await c.audit("arun-1")] == ["fresh"]
            assert await c.delete("odds:g1:1") in (True, False)
            assert (await c.stats())["cache_dir"] == str(tmp_path)

    asyncio.run(main())


def test_coroutine_loader_runs_once_while_the_loop_keeps_ticking(tmp_path: Path) -> None:
    async def main() -> None:
        async with freshcache.AsyncCache(cache_dir=tmp_path) as c:
            calls = 0
            gate = asyncio.Event()
            ticks = 0

            async def loader() -> bytes:
                nonlocal calls
                calls += 1
                await gate.wait()
                return b"loaded"

            async def ticker() -> None:
                nonlocal ticks
                while not gate.is_set():
                    ticks += 1
                    if ticks == 50:
                        gate.set()
                    await asyncio.sleep(0)

            results = await asyncio.gather(
                *[c.get_or_fetch("news:espn:slow", loader) for _ in range(5)], ticker()
            )
            hits = cast(list[freshcache.Hit], results[:5])
            assert [h.decode() for h in hits] == [b"loaded"] * 5
            assert calls == 1
            assert ticks >= 50

    asyncio.run(main())
