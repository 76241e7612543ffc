"""Every codec round-trips; numpy arrays come back equal, read-only and without a copy."""

from __future__ import annotations

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
    payload = bytes(range(256)) * 256  # 64 KiB
    cache.set("news:espn:big", payload)
    hit = cache.get("news:espn:big")
    assert hit is not None
    view = hit.value
    assert isinstance(view, memoryview)
    assert view.readonly
    assert view == payload
    # Two views of one hit share memory: nothing was copied out of the entry.
    assert np.shares_memory(np.asarray(view), np.asarray(hit))


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


def test_object_arrays_are_refused_never_pickled(cache: freshcache.Cache) -> None:
    with pytest.raises(freshcache.CodecError, match="pickle"):
        cache.set("llm:features:c1:x", np.array([object(), 1], dtype=object))
    assert cache.get("llm:features:c1:x") is None
    assert not cache.inspect("llm:features:c1:x")["on_disk"]


def test_unknown_codec_name_is_a_codec_error(cache: freshcache.Cache) -> None:
    with pytest.raises(freshcache.CodecError):
        cache.set("news:espn:a", {"a": 1}, codec="pickle")
