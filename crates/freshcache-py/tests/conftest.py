"""Shared fixtures: a real cache directory per test, the manual clock, polling helpers."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

import freshcache

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def clock() -> freshcache.ManualClock:
    return freshcache.ManualClock(1_800_000_000.0)


@pytest.fixture
def cache(tmp_path: Path, clock: freshcache.ManualClock) -> Iterator[freshcache.Cache]:
    with freshcache.Cache(cache_dir=tmp_path / "cache", clock=clock) as c:
        yield c


def wait_for(cond: Callable[[], bool], what: str, deadline_s: float = 10.0) -> None:
    """Polls `cond` until true or the deadline passes (no fixed sleeps)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.002)
    raise AssertionError(f"timed out waiting for {what}")


def fork_children(bodies: list[Callable[[], int]], deadline_s: float = 60.0) -> list[int]:
    """Runs each body in a child made by `os.fork()` (all started before any is waited for)
    and returns their exit codes (1 if one raised). A child still running at the deadline is
    killed (it is this test's own) and fails the test: a hang is reported, not waited out."""
    pids = []
    for body in bodies:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = body()
            finally:
                os._exit(code)
        pids.append(pid)
    codes: dict[int, int] = {}
    end = time.monotonic() + deadline_s
    while len(codes) < len(pids) and time.monotonic() < end:
        for pid in pids:
            if pid not in codes:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    hung = [pid for pid in pids if pid not in codes]
    for pid in hung:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert not hung, f"{len(hung)} of {len(pids)} forked children still running after {deadline_s}s"
    return [codes[pid] for pid in pids]


def in_forked_child(body: Callable[[], int]) -> int:
    """Runs `body` in a child made by `os.fork()` and returns its code (1 if it raised)."""
    return fork_children([body])[0]


def type_stat(c: freshcache.Cache, data_type: str, field: str) -> int:
    for row in c.stats()["data_types"]:
        if row["data_type"] == data_type:
            return int(row[field])
    raise KeyError(data_type)


@pytest.fixture(scope="session")
def cli() -> Path:
    """The workspace's `freshcache` binary (built here when the test script has not)."""
    exe = Path(os.environ.get("FRESHCACHE_CLI", REPO / "target" / "debug" / "freshcache"))
    if not exe.exists():
        subprocess.run(["cargo", "build", "-q", "-p", "freshcache-cli"], cwd=REPO, check=True)
    assert exe.exists(), exe
    return exe
