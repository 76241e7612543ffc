"""Every codec round-trips; numpy arrays come back equal, read-only and without a copy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

import freshcache


@pytest.mark.parametrize(
    ("value", "codec", "stored"),
    [
        (b"\x00\x01raw bytes\xff", None, "bytes"),
        (bytearray(b"mutable"), None, "bytes"),
        ("grüße ✓", None, "text"),
        ({"home": 1.91, "away": [2, 3], "live": True, "n": None}, None, "json"),
        ([1, "two", 3.5], None, "json"),
        (42, None, "json"),
        ({"home": 1.91, "blob": b"\x00\x01"}, "msgpack", "msgpack"),
        ([1, 2, 3], "msgpack", "msgpack"),
    ],
)
def test_round_trip_for_every_codec(
    cache: freshcache.Cache, value: Any, codec: Any, stored: str
) -> None:
    cache.set("news:espn:a1", value, codec=codec)
    hit = cache.get("news:espn:a1")
    assert hit is not None
    assert hit.codec == stored
    expected = bytes(value) if isinstance(value, bytearray) else value
    assert hit.decode() == expected


def test_msgpack_bytes_are_standard_messagepack(cache: freshcache.Cache) -> None:
    cache.set("news:espn:m", {"a": 1}, codec="msgpack")
    hit = cache.get("news:espn:m")
    assert hit is not None
    assert msgpack.unpackb(hit.to_bytes()) == {"a": 1}


def test_large_bytes_value_is_a_read_only_view_without_copy(cache: freshcache.Cache) -> None:
    payload = bytes(range(256)) * 1024  # 256 KiB
    cache.set("news:espn:big", payload)
    hit = cache.get("news:espn:big")
    assert hit is not None
    view = hit.value
    assert isinstance(view, memoryview)
    assert view.readonly
    assert view == payload
    # Two views of one hit share memory: nothing was copied out of the entry.
    assert np.shares_memory(np.asarray(view), np.asarray(hit))


def test_a_mid_size_value_is_bytes_made_once(cache: freshcache.Cache) -> None:
    # Below 128 KiB a copy costs less than a view: `bytes`, made once per hit.
    payload = bytes(range(256)) * 256  # 64 KiB
    cache.set("news:espn:mid", payload)
    hit = cache.get("news:espn:mid")
    assert hit is not None
    assert isinstance(hit.value, bytes) and hit.value == payload
    assert hit.value is hit.value


@pytest.mark.parametrize("dtype", ["float32", "float64", "int8", "int64", "uint16", "bool", "complex64", ">i4"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_numpy_arrays_round_trip_read_only_without_copy(
    cache: freshcache.Cache, dtype: str, order: str
) -> None:
    rng = np.random.default_rng(7)
    arr = np.asarray(rng.integers(0, 100, size=(5, 7, 3)), dtype=dtype, order=order)  # type: ignore[call-overload]
    assert arr.flags.f_contiguous == (order == "F")
    cache.set("llm:features:c1:2026-11-24", arr)
    hit = cache.get("llm:features:c1:2026-11-24")
    assert hit is not None
    back = hit.decode()
    assert isinstance(back, np.ndarray)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert np.array_equal(back, arr)
    assert back.flags.f_contiguous == (order == "F")
    assert not back.flags.writeable
    with pytest.raises(ValueError):
        back[0, 0, 0] = 1
    # The array's memory is the hit's bytes: no copy was made on the way out.
    assert np.shares_memory(back, np.asarray(hit))


def test_feature_vector_768_float32(cache: freshcache.Cache) -> None:
    vec = np.random.default_rng(1).standard_normal(768).astype(np.float32)
    cache.set("llm:features:c7:2026-11-24", vec)
    hit = cache.get("llm:features:c7:2026-11-24")
    assert hit is not None
    back = hit.decode()
    assert back.dtype == np.float32 and back.shape == (768,)
    assert np.array_equal(back, vec)
    assert not back.flags.writeable
    assert np.shares_memory(back, np.asarray(hit))
    # Stored in the .npy layout: numpy's own reader agrees.
    import io

    assert np.array_equal(np.load(io.BytesIO(hit.to_bytes()), allow_pickle=False), vec)


def test_array_layouts_each_read_back_as_written_on_every_read(cache: freshcache.Cache) -> None:
    # Headers are remembered by layout on the way in and by their bytes on the way out: arrays
    # alike in all but dtype, shape, order or rank must still come back as they went in.
    base = np.arange(24)
    arrays: list[np.ndarray[Any, Any]] = [
        base.astype(np.float32),
        base.astype(np.float64),
        base.astype(">i4"),
        base.astype(np.float32)[:12],
        base.astype(np.float32).reshape(4, 6),
        np.asfortranarray(base.astype(np.float32).reshape(4, 6)),
        base.astype(np.float32).reshape(6, 4),
        base.astype(np.float32).reshape(2, 3, 4),
        np.array(1.5, dtype=np.float32),
    ]
    for _ in range(2):
        for i, arr in enumerate(arrays):
            cache.set(f"llm:features:layout{i}:2026-11-24", arr)
        for i, arr in enumerate(arrays):
            hit = cache.get(f"llm:features:layout{i}:2026-11-24")
            assert hit is not None
            back = hit.decode()
            assert back.dtype == arr.dtype and back.shape == arr.shape, (i, back.dtype, back.shape)
            fortran = arr.flags.f_contiguous and not arr.flags.c_contiguous
            assert (back.flags.f_contiguous and not back.flags.c_contiguous) == fortran
            assert np.array_equal(back, arr)


def test_a_bad_numpy_header_is_a_codec_error_on_every_read(cache: freshcache.Cache) -> None:
    header = b"{'descr': 'O', 'fortran_order': False, 'shape': (2,), }"
    header += b" " * (118 - len(header)) + b"\n"
    cache.set("llm:features:bad:1", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(16))
    hit = cache.get("llm:features:bad:1")
    assert hit is not None
    for _ in range(2):  # a refused header is never remembered as good
        with pytest.raises(freshcache.CodecError, match="pickle"):
            hit.decode()


def test_object_arrays_are_refused_never_pickled(cache: freshcache.Cache) -> None:
    with pytest.raises(freshcache.CodecError, match="pickle"):
        cache.set("llm:features:c1:x", np.array([object(), 1], dtype=object))
    assert cache.get("llm:features:c1:x") is None
    assert not cache.inspect("llm:features:c1:x")["on_disk"]


def test_unknown_codec_name_is_a_codec_error(cache: freshcache.Cache) -> None:
    with pytest.raises(freshcache.CodecError):
        cache.set("news:espn:a", {"a": 1}, codec="pickle")


def test_numpy_is_imported_only_when_needed(tmp_path: Path) -> None:
    # A process that stores and reads small values never imports numpy (nor starts its BLAS
    # threads); the first large value read imports it for the zero-copy view.
    script = f"""
import sys, freshcache
with freshcache.Cache(cache_dir={str(tmp_path)!r}) as c:
    c.set("odds:g1:1", {{"home": 1.9}})
    assert c.get("odds:g1:1").decode() == {{"home": 1.9}}
    c.set("news:espn:1", "x" * 10)
    assert c.get("news:espn:1").decode() == "x" * 10
    assert "numpy" not in sys.modules, "imported early"
    c.set("news:espn:2", bytes(200_000))
    view = c.get("news:espn:2").value
    assert isinstance(view, memoryview) and view.readonly and "numpy" in sys.modules
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
