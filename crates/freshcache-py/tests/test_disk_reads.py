"""Large disk hits from Python, with the memory tier too small to hold them: reads again from
the blob file an earlier read found (no index query) give the same answers as a read through
the index, every time — after damage, expiry and another instance's rewrite or delete."""

from __future__ import annotations

import os
import random
from pathlib import Path

import freshcache


SMALL_MEMORY = {"max_bytes": "64KiB"}


def value(seed: int, n: int = 64 * 1024) -> bytes:
    return random.Random(seed).randbytes(n)


def blob_of(root: Path) -> Path:
    (blob,) = list((root / "blobs").rglob("*.blob"))
    return blob


def test_a_large_disk_hit_read_again_is_whole_and_counted(tmp_path: Path, clock: freshcache.ManualClock) -> None:
    with freshcache.Cache(cache_dir=tmp_path, memory=SMALL_MEMORY, clock=clock) as c:
        c.set("news:espn:a1", value(1))
        for _ in range(3):
            hit = c.get("news:espn:a1")
            assert hit is not None and hit.tier == "disk"
            assert hit.value == value(1) and isinstance(hit.value, bytes)
            assert hit.to_bytes() == value(1) and len(hit) == 64 * 1024
            assert hit.value is hit.value  # made once per hit
        (disk,) = [t for t in c.stats()["tiers"] if t["tier"] == "disk"]
        assert disk["hits"] == 3 and disk["misses"] == 0


def test_a_blob_damaged_in_place_is_never_served(tmp_path: Path) -> None:
    with freshcache.Cache(cache_dir=tmp_path, memory=SMALL_MEMORY) as c:
        c.set("news:espn:a1", value(1))
        first = c.get("news:espn:a1")
        assert first is not None and first.value == value(1)  # the location is now kept
        blob = blob_of(tmp_path)
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one bit of rot in the value itself
        os.chmod(blob, 0o644)
        blob.write_bytes(bytes(data))
        assert c.get("news:espn:a1") is None
        assert c.get("news:espn:a1") is None


def test_a_value_past_its_ttl_is_not_read_from_its_kept_location(
    tmp_path: Path, clock: freshcache.ManualClock
) -> None:
    with freshcache.Cache(cache_dir=tmp_path, memory=SMALL_MEMORY, clock=clock) as c:
        c.set("news:espn:a1", value(1), ttl=60)
        assert c.get("news:espn:a1") is not None
        clock.advance(59.999)
        hit = c.get("news:espn:a1")
        assert hit is not None and hit.value == value(1)
        clock.advance(0.001)
        assert c.get("news:espn:a1") is None


def test_a_rewrite_by_another_instance_is_what_the_next_read_sees(tmp_path: Path) -> None:
    with freshcache.Cache(cache_dir=tmp_path, memory=SMALL_MEMORY) as a, freshcache.Cache(
        cache_dir=tmp_path, memory=SMALL_MEMORY
    ) as b:
        a.set("news:espn:a1", value(1))
        hit = a.get("news:espn:a1")
        assert hit is not None and hit.value == value(1)
        b.set("news:espn:a1", value(2, 70_000))
        hit = a.get("news:espn:a1")
        assert hit is not None and hit.value == value(2, 70_000)
        b.delete("news:espn:a1")
        assert a.get("news:espn:a1") is None


def test_a_compressible_value_reads_back_whole(tmp_path: Path) -> None:
    text = ("odds moved " * 8000).encode()
    with freshcache.Cache(cache_dir=tmp_path, memory=SMALL_MEMORY) as c:
        c.set("news:espn:a1", text)
        for _ in range(2):
            hit = c.get("news:espn:a1")
            assert hit is not None and hit.value == text
