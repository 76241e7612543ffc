"""Value codecs: bytes, text, JSON, MessagePack and numpy arrays. Never pickle.

numpy arrays are stored in the `.npy` layout (a self-describing header: dtype, shape, order,
then the raw data) under the `bytes` codec, so `freshcache get KEY > a.npy` loads with
`numpy.load`. They are read back as read-only arrays over the cached bytes, without a copy.
"""

from __future__ import annotations

import ast
import json
from typing import Any, Optional

from . import _native
from ._native import CodecError, Hit

CODECS = ("bytes", "text", "json", "msgpack", "numpy")
NPY_MAGIC = b"\x93NUMPY\x01\x00"
# Data kinds with a fixed binary layout: bool, ints, floats, complex, datetimes.
_NPY_KINDS = frozenset("biufcmM")

try:  # numpy is optional: arrays need it, everything else works without it.
    import numpy as _np
except ImportError:  # pragma: no cover - exercised only without numpy
    _np = None  # type: ignore[assignment]


def _is_ndarray(value: object) -> bool:
    return _np is not None and isinstance(value, _np.ndarray)


def _encode_array(arr: Any) -> bytes:
    dtype = arr.dtype
    if dtype.kind not in _NPY_KINDS or dtype.fields is not None or dtype.hasobject:
        raise CodecError(
            f"numpy dtype {dtype} has no fixed binary layout; freshcache never pickles"
        )
    fortran = bool(arr.flags.f_contiguous and not arr.flags.c_contiguous)
    header = "{'descr': %r, 'fortran_order': %r, 'shape': %r, }" % (
        dtype.str,
        fortran,
        tuple(int(n) for n in arr.shape),
    )
    # Pad so the data starts on a 64-byte boundary of the value (as the .npy format does).
    raw = header.encode("latin1")
    total = len(NPY_MAGIC) + 2 + len(raw) + 1
    raw += b" " * ((64 - total % 64) % 64) + b"\n"
    data: bytes = arr.tobytes(order="F" if fortran else "C")
    return NPY_MAGIC + len(raw).to_bytes(2, "little") + raw + data


def _decode_array(hit: Hit) -> Any:
    if _np is None:
        raise CodecError(f"{hit.key} holds a numpy array: install numpy to read it")
    whole = _np.asarray(hit)  # read-only uint8 view over the cached bytes; base is the hit
    head = bytes(whole[: len(NPY_MAGIC) + 2])
    hlen = int.from_bytes(head[len(NPY_MAGIC) :], "little")
    start = len(NPY_MAGIC) + 2 + hlen
    try:
        header = ast.literal_eval(bytes(whole[len(NPY_MAGIC) + 2 : start]).decode("latin1"))
        dtype = _np.dtype(header["descr"])
        shape = tuple(int(n) for n in header["shape"])
        fortran = bool(header["fortran_order"])
    except (ValueError, SyntaxError, KeyError, TypeError) as e:
        raise CodecError(f"{hit.key}: bad numpy header: {e}") from e
    if dtype.kind not in _NPY_KINDS:
        raise CodecError(f"{hit.key}: numpy dtype {dtype} is not readable without pickle")
    flat = whole[start:].view(dtype)
    return flat.reshape(shape, order="F" if fortran else "C")


def encode(value: object, codec: Optional[str]) -> tuple[bytes, str]:
    """`(bytes, codec name)` for `value`; raises `CodecError` (nothing is written then)."""
    if codec is not None and codec not in CODECS:
        raise CodecError(f"unknown codec {codec!r}: expected one of {', '.join(CODECS)}")
    if codec is None:
        if isinstance(value, (bytes, bytearray, memoryview)):
            codec = "bytes"
        elif isinstance(value, str):
            codec = "text"
        elif _is_ndarray(value):
            codec = "numpy"
        elif value is None or isinstance(value, (dict, list, tuple, int, float, bool)):
            codec = "json"
        else:
            raise CodecError(
                f"no codec for {type(value).__name__}: pass bytes, str, a JSON-able value, "
                "a numpy array, or codec='msgpack'; freshcache never pickles"
            )
    if codec == "bytes":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise CodecError(f"codec 'bytes' needs bytes, got {type(value).__name__}")
        return bytes(value), "bytes"
    if codec == "text":
        if not isinstance(value, str):
            raise CodecError(f"codec 'text' needs str, got {type(value).__name__}")
        return value.encode("utf-8"), "text"
    if codec == "numpy":
        if not _is_ndarray(value):
            raise CodecError(f"codec 'numpy' needs a numpy array, got {type(value).__name__}")
        return _encode_array(value), "bytes"
    if codec == "json":
        try:
            text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise CodecError(f"not JSON-able: {e}; freshcache never pickles") from e
        return text.encode("utf-8"), "json"
    # msgpack
    try:
        import msgpack
    except ImportError as e:
        raise CodecError("codec 'msgpack' needs the msgpack package") from e
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise CodecError(f"not MessagePack-able: {e}; freshcache never pickles") from e
    return packed, "msgpack"


def decode(hit: Hit) -> Any:
    """The hit's value decoded by its codec."""
    codec = hit.codec
    if codec == "text":
        return hit.to_bytes().decode("utf-8")
    if codec == "json":
        return json.loads(hit.to_bytes())
    if codec == "msgpack":
        try:
            import msgpack
        except ImportError as e:
            raise CodecError(f"{hit.key} is MessagePack: install msgpack to read it") from e
        return msgpack.unpackb(hit.to_bytes(), raw=False)
    if len(hit) >= 64 and _np is not None:
        whole = _np.asarray(hit)
        if bytes(whole[:8]) == NPY_MAGIC:
            return _decode_array(hit)
        return whole.data
    raw = hit.to_bytes()
    if raw[:8] == NPY_MAGIC:
        return _decode_array(hit)
    return raw


def view(hit: Hit) -> Any:
    """A read-only memoryview over the hit's bytes (no copy), or a copy without numpy."""
    if _np is None:
        return hit.to_bytes()
    return _np.asarray(hit).data


_native._register_codecs(decode, view)
