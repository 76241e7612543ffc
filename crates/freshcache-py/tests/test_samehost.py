"""Several Python processes (and cache instances) on one directory without Redis: one loader per
key across processes, and changes one instance makes are seen by the others' memory tiers."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import freshcache

from conftest import wait_for

KEY = "news:shared:a1"


def _load_once(cache_dir: str, calls_file: str, start: Any, out: Any) -> None:
    with freshcache.Cache(cache_dir=cache_dir) as c:

        def loader() -> bytes:
            # Appends one line per call (O_APPEND: one write, whole lines) and takes a while,
            # so the other processes arrive while the load is in progress.
            fd = os.open(calls_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, f"{os.getpid()}\n".encode())
            finally:
                os.close(fd)
            time.sleep(0.3)
            return b"article body"

        start.wait(30)
        hit = c.get_or_fetch(KEY, loader)
        out.put(hit.to_bytes())


def test_four_processes_missing_one_key_call_one_loader(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start = ctx.Event()
    calls = tmp_path / "calls"
    procs = [
        ctx.Process(target=_load_once, args=(str(tmp_path / "cache"), str(calls), start, out))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    start.set()
    values = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert values == [b"article body"] * 4
    lines = calls.read_text().splitlines()
    assert len(lines) == 1, f"the loader ran in {len(lines)} processes: {lines}"


def test_an_overwrite_and_a_delete_reach_another_instances_memory(tmp_path: Path) -> None:
    with freshcache.Cache(cache_dir=tmp_path) as a, freshcache.Cache(cache_dir=tmp_path) as b:
        a.set(KEY, b"v1")
        # B holds a memory copy once a read is answered from memory.
        wait_for(
            lambda: (h := b.get(KEY)) is not None and h.tier == "memory",
            "B to hold a memory copy",
        )

        def b_reads(want: bytes | None) -> bool:
            h = b.get(KEY)
            return (None if h is None else h.to_bytes()) == want

        a.set(KEY, b"v2")
        wait_for(lambda: b_reads(b"v2"), "B to see A's overwrite", deadline_s=5)
        a.delete(KEY)
        wait_for(lambda: b_reads(None), "B to see A's delete", deadline_s=5)


def _overwrite_then_delete(
    cache_dir: str, value: bytes, go_set: Any, go_delete: Any, done: Any
) -> None:
    with freshcache.Cache(cache_dir=cache_dir) as c:
        go_set.wait(30)
        c.set("news:big:a1", value)
        done.put("set")
        go_delete.wait(30)
        c.delete("news:big:a1")
        done.put("deleted")


def test_a_large_value_read_again_follows_another_process_at_once(tmp_path: Path) -> None:
    """A value too large for the memory tier is read again from its blob file without the
    index; another process's overwrite or delete is seen by the very next read, without waiting
    for the change feed (the process removed the old blob before its call returned)."""
    ctx = multiprocessing.get_context("spawn")
    go_set, go_delete, done = ctx.Event(), ctx.Event(), ctx.Queue()
    cache_dir = str(tmp_path / "cache")
    # Incompressible, so they are stored in blob files.
    first, second = os.urandom(100 * 1024), os.urandom(100 * 1024)
    with freshcache.Cache(cache_dir=cache_dir, memory={"max_bytes": "64KiB"}) as a:
        a.set("news:big:a1", first)
        writer = ctx.Process(
            target=_overwrite_then_delete, args=(cache_dir, second, go_set, go_delete, done)
        )
        writer.start()
        for _ in range(3):
            hit = a.get("news:big:a1")
            assert hit is not None and hit.tier == "disk" and hit.to_bytes() == first
        go_set.set()
        assert done.get(timeout=60) == "set"
        for _ in range(3):
            hit = a.get("news:big:a1")
            assert hit is not None and hit.to_bytes() == second
        go_delete.set()
        assert done.get(timeout=60) == "deleted"
        assert a.get("news:big:a1") is None
        writer.join(30)
        assert writer.exitcode == 0
