"""The synchronous `Cache`, the guard's `InferenceRun` and the `cached` decorator."""

from __future__ import annotations

import datetime as _dt
import functools
import inspect
import json
import os
import string
from types import TracebackType
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar, Union, cast

from . import _codecs
from ._native import Hit, ManualClock, NativeCache

Seconds = Union[float, int, _dt.timedelta]
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_SECTIONS = ("cache", "server")


def _secs(v: Optional[Seconds], what: str) -> Optional[float]:
    if v is None:
        return None
    if isinstance(v, _dt.timedelta):
        return v.total_seconds()
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{what} must be seconds (int/float) or a timedelta, got {type(v).__name__}")
    return float(v)


def _unix(v: Union[float, int, _dt.datetime, None]) -> Optional[float]:
    if v is None:
        return None
    if isinstance(v, _dt.datetime):
        if v.tzinfo is None:
            raise ValueError("as_of must be timezone-aware (UTC), not a naive datetime")
        return v.timestamp()
    return float(v)


def _duration_text(v: object) -> str:
    if isinstance(v, _dt.timedelta):
        return f"{int(v.total_seconds() * 1000)}ms"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return f"{int(round(float(v) * 1000))}ms"
    return str(v)


def _env_pairs(overrides: Mapping[str, object]) -> tuple[list[tuple[str, str]], Optional[str]]:
    """Keyword overrides as `FRESHCACHE_CACHE__…` pairs (the library's environment override
    syntax), plus `cache_dir`, which also moves the index."""
    env: list[tuple[str, str]] = []
    cache_dir: Optional[str] = None
    for name, value in overrides.items():
        if value is None:
            continue
        if name == "cache_dir":
            cache_dir = os.fspath(cast("os.PathLike[str] | str", value))
        elif name == "ttl":
            if not isinstance(value, Mapping):
                raise TypeError("ttl must be a mapping of data type to seconds")
            for dtype, secs in value.items():
                env.append((f"FRESHCACHE_CACHE__TTL__{str(dtype).upper()}", _duration_text(secs)))
        elif isinstance(value, Mapping):
            for sub, v in value.items():
                env.append(
                    (f"FRESHCACHE_CACHE__{name.upper()}__{str(sub).upper()}", _scalar(v))
                )
        else:
            section = "SERVER" if name in ("listen", "auth_token") else "CACHE"
            env.append((f"FRESHCACHE_{section}__{name.upper()}", _scalar(value)))
    return env, cache_dir


def _scalar(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, _dt.timedelta):
        return _duration_text(v)
    return str(v)


class Cache(NativeCache):
    """A freshcache cache, in-process: memory, optional Redis, disk with a SQLite index.

    `Cache(cache_dir=..., redis_url=..., ttl={"odds_data": 60})` opens with the built-in
    defaults plus these overrides; `Cache.open(config_path)` reads a `runtime.yml`. Numbers
    are seconds (the YAML file's bare numbers under `ttl:` are hours). `FRESHCACHE_…`
    environment variables apply as they do for the CLI and service.

    Inherited from the extension, unchanged: `get(key, *, max_stale=None) -> Hit | None`
    (a memory hit is answered without releasing the GIL; every other path releases it),
    `delete`, `invalidate_prefix`, `invalidate_all`, `inspect`, `close`.
    """

    clock: Optional[ManualClock]
    last_fetch: tuple[str, int]

    def __new__(
        cls,
        cache_dir: Union[str, "os.PathLike[str]", None] = None,
        redis_url: Optional[str] = None,
        ttl: Optional[Mapping[str, Seconds]] = None,
        *,
        config_path: Union[str, "os.PathLike[str]", None] = None,
        clock: Optional[ManualClock] = None,
        **overrides: object,
    ) -> "Cache":
        all_overrides: dict[str, object] = dict(overrides)
        all_overrides.update({"cache_dir": cache_dir, "redis_url": redis_url, "ttl": ttl})
        env, cdir = _env_pairs(all_overrides)
        path = None if config_path is None else os.fspath(config_path)
        self = super().__new__(cls, path, env, cdir, clock)
        self.clock = clock
        self.last_fetch = ("", 0)
        return self

    def __init__(self, *args: object, **kwargs: object) -> None:
        # Everything happens in __new__ (the extension opens the cache there).
        pass

    @classmethod
    def open(
        cls,
        config_path: Union[str, "os.PathLike[str]", None] = None,
        *,
        clock: Optional[ManualClock] = None,
        **overrides: object,
    ) -> "Cache":
        """Opens the cache described by `config_path` (default: `$FRESHCACHE_CONFIG`, else
        the built-in defaults), with keyword overrides on top."""
        if config_path is None:
            config_path = os.environ.get("FRESHCACHE_CONFIG")
        factory: Any = cls  # overrides may name any configuration field
        return cast("Cache", factory(config_path=config_path, clock=clock, **overrides))

    # -- lifetime -------------------------------------------------------------------------

    def __enter__(self) -> "Cache":
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return not self.is_open

    # -- one entry ------------------------------------------------------------------------

    def set(
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
        """Stores `value` (bytes, str, JSON-able, numpy array, or `codec="msgpack"`).
        Raises `CodecError` for an object with no codec, before anything is written.

        `derived_from` names the keys the value was computed from: each must be fresh now
        (else `InputNotFresh` naming it, nothing written, unless `unchecked_inputs`), and the
        value is fresh only while they stay fresh and unchanged. `tags` group values for
        `invalidate_tag`."""
        data, name = _codecs.encode(value, codec)
        self._set_raw(
            key,
            data,
            name,
            _secs(ttl, "ttl"),
            _unix(as_of),
            etag,
            None if derived_from is None else list(derived_from),
            None if tags is None else list(tags),
            unchecked_inputs,
        )

    def stats(self) -> dict[str, Any]:
        """Per tier and per data type: entries, bytes, hits, misses, ratios, …"""
        return cast(dict[str, Any], json.loads(self._stats_json()))

    def fetch(self, url: str, key: str) -> Optional[Hit]:
        """Conditional HTTP fetch of `url` into `key` (ETag / Last-Modified; a 304 re-stores
        the cached body). Returns the stored hit, or `None` when the response may not be
        stored. The outcome (`fetched`, `revalidated`, `not_stored`) is `last_fetch`."""
        outcome, status, hit = self._fetch_raw(url, key)
        self.last_fetch = (outcome, status)
        return hit

    # -- loaders --------------------------------------------------------------------------

    def _loader(
        self, loader: Callable[[], Any], ttl: Optional[Seconds], codec: Optional[str]
    ) -> Callable[[], tuple[bytes, str, Optional[float], Optional[float]]]:
        def call() -> tuple[bytes, str, Optional[float], Optional[float]]:
            out = loader()
            if inspect.isawaitable(out):
                raise TypeError("a coroutine loader needs AsyncCache (or the async decorator)")
            return _loaded(out, ttl, codec)

        return call

    def get_or_fetch(
        self,
        key: str,
        loader: Callable[[], Any],
        *,
        ttl: Optional[Seconds] = None,
        codec: Optional[str] = None,
    ) -> Hit:
        """The fresh value under `key`, or `loader()`'s, stored. One loader runs per key at a
        time across threads (and across instances sharing Redis); the others wait with the
        GIL released and share its result. The loader returns the value or `(value, ttl)`;
        its exception reaches every waiter and nothing is cached."""
        return self._get_or_fetch_raw(key, self._loader(loader, ttl, codec))

    def cached(
        self, key: str, *, ttl: Optional[Seconds] = None, codec: Optional[str] = None
    ) -> Callable[[F], F]:
        """Decorates a sync or async function: its result is cached under `key`, a format
        string filled from the call's bound arguments (`"llm:features:{cluster_id}:{date}"`).
        The function runs once per key at a time; hits return the decoded value."""
        return _cached(self, key, ttl, codec)

    # -- the freshness guard --------------------------------------------------------------

    def require_fresh(self, run_id: str, keys: list[str]) -> dict[str, Hit]:
        """Every key's fresh hit, or `StaleSignals` naming each stale or missing key with its
        age and TTL. Every check is recorded in the audit under `run_id`."""
        hits = self._require_fresh_raw(run_id, list(keys))
        return {h.key: h for h in hits}

    def inference_run(self, run_id: str) -> "InferenceRun":
        """`with cache.inference_run(run_id) as run: signals = run.require([...])`."""
        return InferenceRun(self, run_id)

    def audit(self, run_id: str) -> list[dict[str, Any]]:
        """The audit rows of `run_id`: key, verdict, age, TTL, checksum, ETag, when."""
        return cast(list[dict[str, Any]], json.loads(self._audit_json(run_id)))


class InferenceRun:
    """One guarded inference run: every `require` is checked and audited under `run_id`."""

    def __init__(self, cache: Cache, run_id: str) -> None:
        self.cache = cache
        self.run_id = run_id
        self.signals: dict[str, Hit] = {}

    def require(self, keys: list[str]) -> dict[str, Hit]:
        got = self.cache.require_fresh(self.run_id, keys)
        self.signals.update(got)
        return got

    def audit(self) -> list[dict[str, Any]]:
        return self.cache.audit(self.run_id)

    def __enter__(self) -> "InferenceRun":
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        return None


def _loaded(
    out: Any, ttl: Optional[Seconds], codec: Optional[str]
) -> tuple[bytes, str, Optional[float], Optional[float]]:
    """A loader's result as the native layer takes it: `(bytes, codec, ttl, as_of)`."""
    if isinstance(out, tuple) and len(out) == 2 and (
        out[1] is None or isinstance(out[1], (int, float, _dt.timedelta))
    ) and not isinstance(out[1], bool):
        out, ttl = out[0], out[1]
    data, name = _codecs.encode(out, codec)
    return data, name, _secs(ttl, "ttl"), None


def _key_template(key: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(key) if f]


def _cached(owner: Any, key: str, ttl: Optional[Seconds], codec: Optional[str]) -> Callable[[F], F]:
    fields = _key_template(key)

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)
        missing = [f for f in fields if f.split(".")[0].split("[")[0] not in sig.parameters]
        if missing:
            raise TypeError(f"key template {key!r} names {missing}, not parameters of {fn.__name__}")

        def key_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            return key.format(**bound.arguments)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                from ._async import AsyncCache

                k = key_of(args, kwargs)
                acache = owner if isinstance(owner, AsyncCache) else AsyncCache._wrap(owner)
                hit = await acache.get_or_fetch(k, lambda: fn(*args, **kwargs), ttl=ttl, codec=codec)
                return hit.decode()

            return cast(F, awrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            k = key_of(args, kwargs)
            sync = owner if isinstance(owner, Cache) else owner.sync
            return sync.get_or_fetch(k, lambda: fn(*args, **kwargs), ttl=ttl, codec=codec).decode()

        return cast(F, wrapper)

    return decorate


__all__ = ["Cache", "InferenceRun", "Seconds"]
