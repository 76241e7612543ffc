"""The Redis tier, on the machine's Redis (127.0.0.1:6379) under a namespace of this test."""

from __future__ import annotations

import socket
import threading
import uuid
from pathlib import Path

import pytest

import freshcache

REDIS = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _redis_up(), reason="needs the Redis server on 127.0.0.1:6379")


def test_two_instances_share_values_through_redis(tmp_path: Path) -> None:
    ns = f"fcpytest-{uuid.uuid4().hex[:8]}:"
    a = freshcache.Cache(cache_dir=tmp_path / "a", redis_url=REDIS, redis={"namespace": ns})
    b = freshcache.Cache(cache_dir=tmp_path / "b", redis_url=REDIS, redis={"namespace": ns})
    try:
        a.set("odds:g1:1", {"home": 1.8})
        hit = b.get("odds:g1:1")
        assert hit is not None and hit.tier == "redis"
        assert hit.decode() == {"home": 1.8}
        assert a.redis_state() if hasattr(a, "redis_state") else True
        # One loader across the two instances.
        calls = 0
        gate = threading.Event()

        def loader() -> str:
            nonlocal calls
            calls += 1
            gate.wait(10)
            return "once"

        got: list[str] = []
        ts = [
            threading.Thread(target=lambda c=c: got.append(c.get_or_fetch("odds:g2:1", loader).decode()))
            for c in (a, b)
        ]
        for t in ts:
            t.start()
        from conftest import type_stat, wait_for

        wait_for(lambda: calls == 1, "the first loader")
        gate.set()
        for t in ts:
            t.join(15)
        assert got == ["once", "once"] and calls == 1
        assert type_stat(a, "odds_data", "loads") + type_stat(b, "odds_data", "loads") == 1
        a.invalidate_prefix("odds:")
        wait_for(lambda: b.get("odds:g1:1") is None, "the invalidation to reach b")
    finally:
        a.invalidate_all()
        a.close()
        b.close()
