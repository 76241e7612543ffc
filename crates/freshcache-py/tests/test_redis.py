"""The Redis tier, on a redis-server this module starts on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Iterator

import pytest

import freshcache

from conftest import type_stat, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this module's own, stopped by its pid at the end."""
    exe = shutil.which("redis-server")
    assert exe is not None, "redis-server is installed by scripts/test.sh"
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    try:
        wait_for(up, "redis-server to listen")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def test_two_instances_share_values_through_redis(tmp_path: Path, redis_url: str) -> None:
    ns = f"fcpytest-{uuid.uuid4().hex[:8]}:"
    a = freshcache.Cache(cache_dir=tmp_path / "a", redis_url=redis_url, redis={"namespace": ns})
    b = freshcache.Cache(cache_dir=tmp_path / "b", redis_url=redis_url, redis={"namespace": ns})
    try:
        assert a.redis_state() == "up"
        a.set("odds:g1:1", {"home": 1.8})
        hit = b.get("odds:g1:1")
        assert hit is not None and hit.tier == "redis"
        assert hit.decode() == {"home": 1.8}
        # One loader across the two instances (the library's Redis lease).
        calls = 0
        gate = threading.Event()

        def loader() -> str:
            nonlocal calls
            calls += 1
            gate.wait(10)
            return "once"

        got: list[str] = []

        def worker(c: freshcache.Cache) -> None:
            got.append(c.get_or_fetch("odds:g2:1", loader).decode())

        ts = [threading.Thread(target=worker, args=(c,)) for c in (a, b)]
        for t in ts:
            t.start()
        wait_for(lambda: calls == 1, "the first loader")
        gate.set()
        for t in ts:
            t.join(15)
        assert got == ["once", "once"] and calls == 1
        assert type_stat(a, "odds_data", "loads") + type_stat(b, "odds_data", "loads") == 1
        # A prefix invalidation on one instance reaches the other's memory tier.
        assert a.invalidate_prefix("odds:") >= 1
        wait_for(lambda: b.get("odds:g1:1") is None, "the invalidation to reach b")
    finally:
        a.close()
        b.close()
