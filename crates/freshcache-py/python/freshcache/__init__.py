"""freshcache: a multi-tier cache for time-sensitive signals that never serves a value past
its TTL — the Rust library, in-process.

    import freshcache
    with freshcache.Cache(cache_dir="data/cache") as cache:
        cache.set("odds:g42:1700000000", {"home": 1.91})
        hit = cache.get("odds:g42:1700000000")
"""

from ._native import (
    AlreadyExpired,
    CacheClosed,
    CodecError,
    ConfigError,
    Error,
    FetchError,
    Hit,
    InputNotFresh,
    InvalidKey,
    LineageCycle,
    ManualClock,
    RedisUnavailable,
    StaleSignals,
    StorageError,
    TtlNotAllowed,
    ValueTooLarge,
)
from . import _codecs  # registers the codecs with the native module
from . import _native as _ext

import os as _os

if hasattr(_os, "register_at_fork"):
    # Before a fork every open cache is closed (calls under way finish, new ones wait), so
    # the child inherits no index connection and can open caches of its own; after it the
    # parent opens them again. A child refuses the caches it inherited with `CacheClosed`.
    _os.register_at_fork(
        before=_ext._before_fork,
        after_in_parent=_ext._after_fork_in_parent,
        after_in_child=_ext._after_fork_in_child,
    )
from ._cache import Cache, InferenceRun
from ._async import AsyncCache, AsyncInferenceRun

__all__ = [
    "AlreadyExpired",
    "AsyncCache",
    "AsyncInferenceRun",
    "Cache",
    "CacheClosed",
    "CodecError",
    "ConfigError",
    "Error",
    "FetchError",
    "Hit",
    "InferenceRun",
    "InputNotFresh",
    "InvalidKey",
    "LineageCycle",
    "ManualClock",
    "RedisUnavailable",
    "StaleSignals",
    "StorageError",
    "TtlNotAllowed",
    "ValueTooLarge",
]
