"""Write-behind from Python (`disk={"write_behind": ...}`): the writer reads its queued writes,
another instance sees them once committed (close commits), bad settings are typed errors."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import freshcache


def test_queued_writes_are_read_by_their_writer_and_committed_on_close(tmp_path: Path) -> None:
    vec = np.arange(768, dtype=np.float32)
    a = freshcache.Cache(cache_dir=tmp_path, memory={"max_bytes": "64KiB"}, disk={"write_behind": "1s"})
    b = freshcache.Cache(cache_dir=tmp_path)
    keys = [f"llm:features:c{i}:2026-12-04" for i in range(100)]
    started = time.monotonic()
    for k in keys:
        a.set(k, vec)
    for k in keys:  # most were pushed out of a's 64 KiB memory tier: read from the queue
        hit = a.get(k)
        assert hit is not None and np.array_equal(hit.decode(), vec)
    seen = b.get(keys[-1])
    assert seen is None or time.monotonic() - started >= 1.0, "seen before its commit was due"
    a.close()  # commits the queue
    for k in keys:
        hit = b.get(k)
        assert hit is not None and np.array_equal(hit.decode(), vec), k
    b.close()


def test_write_behind_setting_is_checked(tmp_path: Path) -> None:
    with pytest.raises(freshcache.ConfigError) as e:
        freshcache.Cache(cache_dir=tmp_path, disk={"write_behind": "5s"})
    assert e.value.field == "cache.disk.write_behind"
