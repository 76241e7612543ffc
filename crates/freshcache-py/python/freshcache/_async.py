"""`AsyncCache`: the cache for asyncio code. Every call that can block (disk, Redis, HTTP,
waiting on another caller's loader) runs on a worker thread with the GIL released, so the
event loop never blocks."""

from __future__ import annotations

import asyncio
import datetime as _dt
import functools
import inspect
import os
from types import TracebackType
from typing import Any, Callable, Optional, Sequence, TypeVar, Union

from ._cache import Cache, InferenceRun, Seconds, _cached, _loaded
from ._native import Hit, ManualClock

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class AsyncCache:
    """The awaitable twin of `Cache`: same arguments, same files, same Redis keys."""

    def __init__(
        self,
        cache_dir: Union[str, "os.PathLike[str]", None] = None,
        redis_url: Optional[str] = None,
        ttl: Optional[dict[str, Seconds]] = None,
        *,
        config_path: Union[str, "os.PathLike[str]", None] = None,
        clock: Optional[ManualClock] = None,
        **overrides: object,
    ) -> None:
        self.sync = Cache(
            cache_dir, redis_url, ttl, config_path=config_path, clock=clock, **overrides
        )

    @classmethod
    def _wrap(cls, sync: Cache) -> "AsyncCache":
        me = cls.__new__(cls)
        me.sync = sync
        return me

    @classmethod
    def open(
        cls,
        config_path: Union[str, "os.PathLike[str]", None] = None,
        *,
        clock: Optional[ManualClock] = None,
        **overrides: object,
    ) -> "AsyncCache":
        return cls._wrap(Cache.open(config_path, clock=clock, **overrides))

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(fn, *args, **kwargs)
        )

    async def close(self) -> None:
        await self._run(self.sync.close)

    async def __aenter__(self) -> "AsyncCache":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    async def get(self, key: str, *, max_stale: Optional[Seconds] = None) -> Optional[Hit]:
        if max_stale is None:
            # A memory hit never blocks: answer it on the loop, without a thread hop.
            hit = self.sync._get_memory(key)
            if hit is not None:
                return hit
        return await self._run(self.sync.get, key, max_stale=max_stale)

    async def set(
        self,
        key: str,
        value: object,
        *,
        ttl: Optional[Seconds] = None,
        as_of: Union[float, int, _dt.datetime, None] = None,
        codec: Optional[str] = None,
        etag: Optional[str] = None,
        derived_from: Optional[Sequence[str]] = None,
        tags: Optional[Sequence[str]] = None,
        unchecked_inputs: bool = False,
    ) -> None:
        await self._run(
            self.sync.set,
            key,
            value,
            ttl=ttl,
            as_of=as_of,
            codec=codec,
            etag=etag,
            derived_from=derived_from,
            tags=tags,
            unchecked_inputs=unchecked_inputs,
        )

    async def delete(self, key: str) -> bool:
        return await self._run(self.sync.delete, key)

    async def invalidate_prefix(self, prefix: str) -> int:
        return await self._run(self.sync.invalidate_prefix, prefix)

    async def invalidate_tag(self, tag: str) -> float:
        return await self._run(self.sync.invalidate_tag, tag)

    async def invalidate_all(self) -> int:
        return await self._run(self.sync.invalidate_all)

    async def inspect(self, key: str) -> dict[str, Any]:
        return await self._run(self.sync.inspect, key)

    async def stats(self) -> dict[str, Any]:
        return await self._run(self.sync.stats)

    async def fetch(self, url: str, key: str) -> Optional[Hit]:
        return await self._run(self.sync.fetch, url, key)

    async def get_or_fetch(
        self,
        key: str,
        loader: Callable[[], Any],
        *,
        ttl: Optional[Seconds] = None,
        codec: Optional[str] = None,
    ) -> Hit:
        """As `Cache.get_or_fetch`; `loader` may be a plain function or return an awaitable
        (a coroutine function), which runs on this event loop."""
        loop = asyncio.get_running_loop()

        def call() -> tuple[bytes, str, Optional[float], Optional[float]]:
            out = loader()
            if inspect.isawaitable(out):
                awaitable = out

                async def wrap() -> Any:
                    return await awaitable

                out = asyncio.run_coroutine_threadsafe(wrap(), loop).result()
            return _loaded(out, ttl, codec)

        return await self._run(self.sync._get_or_fetch_raw, key, call)

    def cached(
        self, key: str, *, ttl: Optional[Seconds] = None, codec: Optional[str] = None
    ) -> Callable[[F], F]:
        """As `Cache.cached`, for async (and sync) functions."""
        return _cached(self, key, ttl, codec)

    async def require_fresh(self, run_id: str, keys: list[str]) -> dict[str, Hit]:
        return await self._run(self.sync.require_fresh, run_id, keys)

    async def audit(self, run_id: str) -> list[dict[str, Any]]:
        return await self._run(self.sync.audit, run_id)

    def inference_run(self, run_id: str) -> "AsyncInferenceRun":
        return AsyncInferenceRun(self, run_id)


class AsyncInferenceRun:
    """`async with cache.inference_run(run_id) as run: signals = await run.require([...])`."""

    def __init__(self, cache: AsyncCache, run_id: str) -> None:
        self.cache = cache
        self.run_id = run_id
        self.signals: dict[str, Hit] = {}

    async def require(self, keys: list[str]) -> dict[str, Hit]:
        got = await self.cache.require_fresh(self.run_id, keys)
        self.signals.update(got)
        return got

    async def __aenter__(self) -> "AsyncInferenceRun":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        return None


__all__ = ["AsyncCache", "AsyncInferenceRun", "InferenceRun"]
