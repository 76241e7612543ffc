"""`os.fork()` with caches open: the package closes every cache before the fork and opens it
again after it in the parent, so a child opens caches of its own on a clean slate."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

import freshcache

from conftest import fork_children, in_forked_child, wait_for

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def big(i: int, j: int) -> bytes:
    return random.Random(i * 100 + j).randbytes(100 * 1024)


def test_children_forked_from_one_parent_write_whole_values_each_in_a_file_of_its_own(
    tmp_path: Path,
) -> None:
    """Children forked after the parent opened a cache and wrote a blob (drawing a name on this
    thread) open their own and write large values at once: no child blocks, every value comes
    back whole, each in a blob file of its own."""
    c = freshcache.Cache(cache_dir=tmp_path)
    c.set("news:parent:a0", big(-1, 0))

    def child(i: int) -> Callable[[], int]:
        def body() -> int:
            with freshcache.Cache(cache_dir=tmp_path) as mine:
                for j in range(5):
                    mine.set(f"news:child{i}:a{j}", big(i, j))
            return 0

        return body

    assert fork_children([child(i) for i in range(3)]) == [0, 0, 0]
    for i in range(3):
        for j in range(5):
            hit = c.get(f"news:child{i}:a{j}")
            assert hit is not None and hit.to_bytes() == big(i, j), (i, j)
    blobs = list((tmp_path / "blobs").rglob("*.blob"))
    assert len(blobs) == 16, f"{len(blobs)} blob files for 16 values"
    c.close()


def test_a_fork_waits_for_a_call_under_way_and_the_parent_goes_on(tmp_path: Path) -> None:
    """A loader running on another thread when the main thread forks: the fork waits for its
    call to finish (the child sees what it stored), and afterwards the parent's cache, opened
    again, serves and stores as before, on both threads."""
    c = freshcache.Cache(cache_dir=tmp_path)
    started = threading.Event()
    release = threading.Event()

    def loader() -> str:
        started.set()
        release.wait(10)
        return "loaded"

    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(c.get_or_fetch("news:slow:a1", loader).decode()))
    t.start()
    assert started.wait(10)
    # Let the loader finish only once the fork is under way (its hook waits for the call).
    threading.Timer(0.2, release.set).start()

    def child() -> int:
        with freshcache.Cache(cache_dir=tmp_path) as mine:
            hit = mine.get("news:slow:a1")
            return 0 if hit is not None and hit.decode() == "loaded" else 3

    assert in_forked_child(child) == 0
    t.join(10)
    assert out == ["loaded"]
    assert c.is_open
    c.set("news:after:a1", "parent")
    hit = c.get("news:after:a1")
    assert hit is not None and hit.decode() == "parent"
    assert c.stats()["data_types"]
    c.close()
    assert not c.is_open


def test_writes_queued_behind_are_committed_before_the_fork(tmp_path: Path) -> None:
    c = freshcache.Cache(cache_dir=tmp_path, disk={"write_behind": "1s"})
    c.set("odds:g1:1", "queued")

    def child() -> int:
        with freshcache.Cache(cache_dir=tmp_path) as mine:
            hit = mine.get("odds:g1:1")
            return 0 if hit is not None and hit.decode() == "queued" else 3

    assert in_forked_child(child) == 0
    hit = c.get("odds:g1:1")
    assert hit is not None and hit.decode() == "queued"
    c.close()


def test_a_fork_from_inside_a_loader_leaves_the_child_unable_to_open_a_cache(tmp_path: Path) -> None:
    """The cache cannot be closed for a fork made inside one of its own calls: the child is
    told why, and opens nothing; the parent's call and cache carry on."""
    c = freshcache.Cache(cache_dir=tmp_path)
    codes: list[int] = []

    def child() -> int:
        try:
            freshcache.Cache(cache_dir=tmp_path / "other")
            return 2
        except freshcache.Error as e:
            return 0 if "forked" in str(e) and "spawn" in str(e) else 3

    def loader() -> str:
        codes.append(in_forked_child(child))
        return "v"

    assert c.get_or_fetch("news:in:a1", loader).decode() == "v"
    assert codes == [0]
    # A later fork, outside any call, is clean again.
    assert in_forked_child(lambda: 0 if freshcache.Cache(cache_dir=tmp_path).is_open else 3) == 0
    c.close()


def test_a_closed_cache_stays_closed_across_a_fork(tmp_path: Path) -> None:
    c = freshcache.Cache(cache_dir=tmp_path)
    c.close()
    assert in_forked_child(lambda: 0) == 0
    assert not c.is_open
    with pytest.raises(freshcache.CacheClosed):
        c.get("odds:g1:1")


def test_threads_reading_through_a_fork_see_no_error(tmp_path: Path) -> None:
    """Threads that read and write while the main thread forks wait for the fork instead of
    failing: calls made while the cache is closed for it go on once it is open again."""
    c = freshcache.Cache(cache_dir=tmp_path, memory={"max_bytes": "64KiB"})
    c.set("news:t:a0", b"x" * 20_000)
    stop = threading.Event()
    errors: list[BaseException] = []
    done = [0, 0]

    def worker(n: int) -> None:
        try:
            while not stop.is_set():
                hit = c.get("news:t:a0")
                assert hit is not None and len(hit.to_bytes()) == 20_000
                c.set(f"news:t:b{n}", b"y" * 100)
                done[n] += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    wait_for(lambda: min(done) > 10, "workers to start")
    for _ in range(3):
        assert in_forked_child(lambda: 0) == 0
    before = list(done)
    wait_for(lambda: all(d > b + 10 for d, b in zip(done, before)), "workers to go on after the forks")
    stop.set()
    for t in threads:
        t.join(10)
    assert errors == []
    c.close()


def _pool_worker(args: tuple[str, int]) -> int:
    """A pool worker: opens the directory the parent has open and writes its values."""
    root, n = args
    with freshcache.Cache(cache_dir=root) as mine:
        for j in range(3):
            mine.set(f"news:worker{n}:a{j}", big(n, j))
    return n


def test_a_fork_pool_writes_into_the_directory_its_parent_has_open(tmp_path: Path) -> None:
    """multiprocessing's `fork` start method (os.fork underneath, the package's hooks around
    each): workers open the parent's directory and write; the parent, reading all along,
    then reads every value whole."""
    import multiprocessing

    c = freshcache.Cache(cache_dir=tmp_path)
    c.set("news:parent:a0", big(-1, 0))
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        done = pool.map_async(_pool_worker, [(str(tmp_path), n) for n in range(6)])
        deadline = time.monotonic() + 60
        while not done.ready() and time.monotonic() < deadline:
            hit = c.get("news:parent:a0")
            assert hit is not None and hit.to_bytes() == big(-1, 0)
            done.wait(0.01)
        assert sorted(done.get(60)) == list(range(6))
    for n in range(6):
        for j in range(3):
            hit = c.get(f"news:worker{n}:a{j}")
            assert hit is not None and hit.to_bytes() == big(n, j), (n, j)
    c.close()
