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

    def child() -> int:
        # The parent's threads were reading and writing this directory at the fork.
        with freshcache.Cache(cache_dir=tmp_path) as mine:
            hit = mine.get("news:t:a0")
            mine.set("news:t:child", b"z" * 30_000)
            back = mine.get("news:t:child")
            ok = hit is not None and len(hit.to_bytes()) == 20_000
            return 0 if ok and back is not None and back.to_bytes() == b"z" * 30_000 else 3

    for _ in range(3):
        assert in_forked_child(child) == 0
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


def test_a_relative_cache_dir_stays_the_same_directory_after_a_chdir_and_a_fork(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache opened again after a fork is the directory it was opened on, not one of the
    same relative name under a new working directory."""
    monkeypatch.chdir(tmp_path)
    c = freshcache.Cache(cache_dir="rel")
    c.set("odds:g1:1", "before")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert in_forked_child(lambda: 0) == 0
    c.set("odds:g1:1", "after")
    c.close()
    assert not (tmp_path / "elsewhere" / "rel").exists()
    with freshcache.Cache(cache_dir=tmp_path / "rel") as other:
        hit = other.get("odds:g1:1")
        assert hit is not None and hit.decode() == "after"


def test_a_loader_calling_its_own_cache_while_another_thread_forks_does_not_wait_for_the_fork(
    tmp_path: Path,
) -> None:
    """The fork waits for the loader's call; the loader's own call into the same cache goes
    through rather than waiting for the fork (which waits for it): no stall."""
    c = freshcache.Cache(cache_dir=tmp_path)
    started = threading.Event()
    release = threading.Event()
    inner: list[float] = []

    def loader() -> str:
        started.set()
        release.wait(10)
        t0 = time.monotonic()
        c.set("odds:inner:1", "written from the loader")
        inner.append(time.monotonic() - t0)
        return "loaded"

    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(c.get_or_fetch("news:slow:a1", loader).decode()))
    t.start()
    assert started.wait(10)
    codes: list[int] = []
    forker = threading.Thread(target=lambda: codes.append(in_forked_child(lambda: 0)))
    forker.start()
    # Let the loader go on once the fork's hook is waiting for its call.
    threading.Timer(0.2, release.set).start()
    t.join(30)
    forker.join(30)
    assert out == ["loaded"] and codes == [0]
    assert inner and inner[0] < 5, f"the loader's call waited {inner} s for the fork"
    hit = c.get("odds:inner:1")
    assert hit is not None and hit.decode() == "written from the loader"
    c.close()


def test_a_child_returning_into_a_call_from_a_loader_that_forked_gets_an_error_and_writes_nothing(
    tmp_path: Path,
) -> None:
    """A raw os.fork() inside a loader, the child returning from the loader into the cache's
    call: the call in the child fails with a clear error instead of writing through the
    parent's index connections; the parent's call stores its own value."""
    c = freshcache.Cache(cache_dir=tmp_path)
    parent = os.getpid()
    children: list[int] = []

    def loader() -> str:
        pid = os.fork()
        if pid == 0:
            return "from the child"
        children.append(pid)
        return "from the parent"

    try:
        hit = c.get_or_fetch("news:forked:a1", loader)
    except BaseException as e:  # noqa: BLE001 - the child reports through its exit code
        if os.getpid() != parent:
            os._exit(0 if "before fork()" in str(e) else 3)
        raise
    if os.getpid() != parent:
        os._exit(4)  # the child's call went through on the parent's connections
    assert hit.decode() == "from the parent"
    (pid,) = children
    end = time.monotonic() + 30
    status = None
    while status is None and time.monotonic() < end:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(st)
        else:
            time.sleep(0.005)
    if status is None:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert status == 0, f"child ended with {status} (None: hung)"
    again = c.get("news:forked:a1")
    assert again is not None and again.decode() == "from the parent"
    c.close()
    with freshcache.Cache(cache_dir=tmp_path) as fresh:
        again = fresh.get("news:forked:a1")
        assert again is not None and again.decode() == "from the parent"
