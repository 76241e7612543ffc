"""Value codecs: bytes, text, JSON, MessagePack and numpy arrays. Never pickle.

numpy arrays are stored in the `.npy` layout (a self-describing header: dtype, shape, order,
then the raw data) under the `bytes` codec, so `freshcache get KEY > a.npy` loads with
`numpy.load`. They are read back as read-only arrays over the cached bytes, without a copy.
"""

from __future__ import annotations

import ast
import json
import sys
from typing import Any, Optional

from . import _native
from ._native import CodecError, Hit

CODECS = ("bytes", "text", "json", "msgpack", "numpy")
NPY_MAGIC = b"\x93NUMPY\x01\x00"
# Data kinds with a fixed binary layout: bool, ints, floats, complex, datetimes.
_NPY_KINDS = frozenset("biufcmM")

# numpy is optional (arrays need it, everything else works without it) and imported on first
# need, not with the package: a process that never stores or reads an array or a large value
# does not pay for numpy's import and its BLAS threads. `_np` is the module once looked for
# (None if absent), `_NP_UNSET` until then.
_NP_UNSET: Any = object()
_np: Any = _NP_UNSET


def _numpy() -> Any:
    """numpy, imported on first call, or None when it is not installed."""
    global _np
    if _np is _NP_UNSET:
        try:
            import numpy
        except ImportError:  # pragma: no cover - exercised only without numpy
            _np = None
        else:
            _np = numpy
    return _np


def _is_ndarray(value: object) -> bool:
    # An array exists only once its caller has imported numpy: no import needed to tell.
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.ndarray)


# `.npy` headers by array layout, and parsed headers by their bytes: a cache holds few
# distinct layouts (a feature vector's dtype and shape repeat on every write and read), and
# building or parsing a header costs more than the rest of the codec. Both are bounded.
_MEMO_MAX = 256
_HEADERS_OUT: dict[tuple[Any, tuple[int, ...], bool], bytes] = {}
_HEADERS_IN: dict[bytes, tuple[Any, tuple[int, ...], Optional[str]]] = {}


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[key] = value


def _npy_header(dtype: Any, shape: tuple[int, ...], fortran: bool) -> bytes:
    """Magic, header length and header, padded so the data starts on a 64-byte boundary of
    the value (as the .npy format does)."""
    if dtype.kind not in _NPY_KINDS or dtype.fields is not None or dtype.hasobject:
        raise CodecError(
            f"numpy dtype {dtype} has no fixed binary layout; freshcache never pickles"
        )
    header = "{'descr': %r, 'fortran_order': %r, 'shape': %r, }" % (
        dtype.str,
        fortran,
        tuple(int(n) for n in shape),
    )
    raw = header.encode("latin1")
    total = len(NPY_MAGIC) + 2 + len(raw) + 1
    raw += b" " * ((64 - total % 64) % 64) + b"\n"
    return NPY_MAGIC + len(raw).to_bytes(2, "little") + raw


def _encode_array(arr: Any) -> bytes:
    flags = arr.flags
    fortran = bool(flags.f_contiguous and not flags.c_contiguous)
    layout = (arr.dtype, arr.shape, fortran)
    head = _HEADERS_OUT.get(layout)
    if head is None:
        head = _npy_header(arr.dtype, arr.shape, fortran)
        _remember(_HEADERS_OUT, layout, head)
    data: bytes = arr.tobytes(order="F" if fortran else "C")
    return head + data


def _parse_header(key: str, text: bytes) -> tuple[Any, tuple[int, ...], Optional[str]]:
    """`(dtype, shape, order)` from a `.npy` header, the order `None` for a 1-D array (the
    flat view needs no reshape); raises `CodecError`."""
    try:
        header = ast.literal_eval(text.decode("latin1"))
        dtype = _numpy().dtype(header["descr"])
        shape = tuple(int(n) for n in header["shape"])
        fortran = bool(header["fortran_order"])
    except (ValueError, SyntaxError, KeyError, TypeError) as e:
        raise CodecError(f"{key}: bad numpy header: {e}") from e
    if dtype.kind not in _NPY_KINDS:
        raise CodecError(f"{key}: numpy dtype {dtype} is not readable without pickle")
    if len(shape) == 1:
        return dtype, shape, None
    return dtype, shape, "F" if fortran else "C"


def _decode_array(hit: Hit, whole: Any = None, head: bytes = b"") -> Any:
    """The array in `hit` as a read-only view over the cached bytes (its base is the hit).
    `whole` and `head` (a prefix of the bytes) spare the caller's work being done twice."""
    np = _numpy()
    if np is None:
        raise CodecError(f"{hit.key} holds a numpy array: install numpy to read it")
    if whole is None:
        whole = np.asarray(hit)  # read-only uint8 view over the cached bytes
    magic = len(NPY_MAGIC) + 2
    if len(head) < magic:
        head = whole[:128].tobytes()
    start = magic + int.from_bytes(head[len(NPY_MAGIC) : magic], "little")
    if len(head) < start:
        head = whole[:start].tobytes()
    text = head[magic:start]
    layout = _HEADERS_IN.get(text)
    if layout is None:
        layout = _parse_header(hit.key, text)
        _remember(_HEADERS_IN, text, layout)
    dtype, shape, order = layout
    flat = whole[start:].view(dtype)
    if order is None and flat.shape == shape:
        return flat
    return flat.reshape(shape, order=order or "C")


def encode(value: object, codec: Optional[str]) -> tuple[bytes, str]:
    """`(bytes, codec name)` for `value`; raises `CodecError` (nothing is written then)."""
    if codec is None:
        np = sys.modules.get("numpy")
        if np is not None and type(value) is np.ndarray:
            return _encode_array(value), "bytes"  # the feature-vector path, first
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
    np = _np if _np is not _NP_UNSET else _numpy()
    if len(hit) >= 64 and np is not None:
        whole = np.asarray(hit)
        head = whole[:128].tobytes()
        if head[:8] == NPY_MAGIC:
            return _decode_array(hit, whole, head)
        return whole.data
    raw = hit.to_bytes()
    if raw[:8] == NPY_MAGIC:
        return _decode_array(hit)
    return raw


def view(hit: Hit) -> Any:
    """A read-only memoryview over the hit's bytes (no copy), or a copy without numpy."""
    np = _np if _np is not _NP_UNSET else _numpy()
    if np is None:
        return hit.to_bytes()
    return np.asarray(hit).data


_native._register_codecs(decode, view)
