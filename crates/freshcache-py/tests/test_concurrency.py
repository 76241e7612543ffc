"""Threads and processes: single flight, the GIL released while waiting, fork safety."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path
from typing import Any

import pytest

import freshcache

from conftest import in_forked_child, type_stat, wait_for


def test_hundred_threads_on_one_missing_key_call_one_loader(cache: freshcache.Cache) -> None:
    calls = 0
    release = threading.Event()
    lock = threading.Lock()

    def loader() -> dict[str, int]:
        nonlocal calls
        with lock:
            calls += 1
        release.wait(10)
        return {"value": 7}

    barrier = threading.Barrier(100)
    results: list[Any] = []

    def worker() -> None:
        barrier.wait()
        results.append(cache.get_or_fetch("odds:g1:1700000000", loader).decode())

    threads = [threading.Thread(target=worker) for _ in range(100)]
    for t in threads:
        t.start()
    # Every other thread is parked on the leader's load (coalesced) before it finishes.
    wait_for(lambda: type_stat(cache, "odds_data", "coalesced") >= 50, "waiters to coalesce")
    release.set()
    for t in threads:
        t.join(10)
    assert calls == 1
    assert results == [{"value": 7}] * 100


def test_loader_exception_reaches_every_waiter_and_nothing_is_cached(cache: freshcache.Cache) -> None:
    release = threading.Event()
    calls = 0

    class FeedDown(RuntimeError):
        pass

    def loader() -> bytes:
        nonlocal calls
        calls += 1
        release.wait(10)
        raise FeedDown("odds feed down")

    errors: list[BaseException] = []

    def worker() -> None:
        try:
            cache.get_or_fetch("odds:g2:1", loader)
        except BaseException as e:  # noqa: BLE001 - the test inspects what arrived
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    wait_for(lambda: type_stat(cache, "odds_data", "coalesced") >= 7, "waiters to coalesce")
    release.set()
    for t in threads:
        t.join(10)
    assert calls == 1
    assert len(errors) == 8 and all(isinstance(e, FeedDown) for e in errors)
    assert cache.get("odds:g2:1") is None
    # The next call loads again.
    assert cache.get_or_fetch("odds:g2:1", lambda: b"ok").decode() == b"ok"


def test_loader_may_return_value_and_ttl(cache: freshcache.Cache, clock: freshcache.ManualClock) -> None:
    hit = cache.get_or_fetch("odds:g3:1", lambda: ({"p": 1}, 5))
    assert hit.tier == "loader" and hit.ttl == 5
    clock.advance(5)
    assert cache.get("odds:g3:1") is None


def test_second_thread_progresses_while_first_waits_on_a_slow_loader(cache: freshcache.Cache) -> None:
    release = threading.Event()
    waiting = threading.Event()

    def slow_loader() -> str:
        waiting.set()
        release.wait(10)
        return "done"

    leader = threading.Thread(target=lambda: cache.get_or_fetch("odds:g9:1", slow_loader))
    follower_result: list[str] = []
    follower = threading.Thread(
        target=lambda: follower_result.append(cache.get_or_fetch("odds:g9:1", lambda: "never").decode())
    )
    leader.start()
    assert waiting.wait(10)
    follower.start()
    wait_for(lambda: type_stat(cache, "odds_data", "coalesced") >= 1, "the follower to wait")
    # While one thread runs the loader and another waits for it inside the library, this
    # thread keeps using the cache: the waiter does not hold the GIL.
    for i in range(200):
        cache.set(f"odds:other:{i}", str(i))
        hit = cache.get(f"odds:other:{i}")
        assert hit is not None and hit.decode() == str(i)
    assert follower.is_alive()
    release.set()
    leader.join(10)
    follower.join(10)
    assert follower_result == ["done"]


def _writer(cache_dir: str, worker: int, rounds: int, out: Any) -> None:
    import hashlib

    bad = 0
    reads = 0
    with freshcache.Cache(cache_dir=cache_dir) as c:
        for i in range(rounds):
            body = hashlib.sha256(f"{worker}:{i}".encode()).digest() * (1 + (i % 400))
            c.set(f"news:w{worker}:{i % 20}", body)
            c.set("news:shared:hot", body)
            for other in range(4):
                for key in (f"news:w{other}:{i % 20}", "news:shared:hot"):
                    hit = c.get(key)
                    if hit is None:
                        continue
                    reads += 1
                    data = hit.to_bytes()
                    unit = data[:32]
                    if len(data) % 32 or data != unit * (len(data) // 32):
                        bad += 1
    out.put((worker, reads, bad))


def test_four_processes_on_one_directory_never_read_a_corrupt_value(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 150, out)) for w in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sum(r[1] for r in results) > 1000
    assert [r[2] for r in results] == [0, 0, 0, 0]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_after_fork_the_child_gets_a_clear_error_and_can_reopen(tmp_path: Path) -> None:
    c = freshcache.Cache(cache_dir=tmp_path)
    c.set("odds:g1:1", "parent")

    def child() -> int:
        try:
            c.get("odds:g1:1")
            return 2
        except freshcache.CacheClosed as e:
            if "fork" not in str(e):
                return 1
            with freshcache.Cache(cache_dir=tmp_path) as again:
                hit = again.get("odds:g1:1")
                again.set("odds:g1:2", "child")
                return 0 if hit is not None and hit.decode() == "parent" else 3

    assert in_forked_child(child) == 0
    # The parent's cache still works and sees the child's write.
    hit = c.get("odds:g1:2")
    assert hit is not None and hit.decode() == "child"
    c.close()

