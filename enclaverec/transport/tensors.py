"""Named arrays <-> protobuf, and any large message <-> a stream of chunk frames.

Arrays travel as raw little-endian bytes with their dtype and shape; decoding checks that
the byte count matches, so a truncated or padded tensor is refused rather than reshaped.
Messages above gRPC's per-message limit (4 MiB by default) travel as ``Chunk`` frames.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar

import numpy as np
from google.protobuf.message import DecodeError, Message

from enclaverec.arrays import ROW_ID_DTYPE, Arrays, SparseRows
from enclaverec.errors import MalformedInputError
from enclaverec.transport.proto import tensors_pb2

ALLOWED_DTYPES = frozenset({"float32", "float64", "int32", "int64", "uint8"})
CHUNK_BYTES = 1 << 20  # 1 MiB frames: well under gRPC's 4 MiB default message limit
MAX_MESSAGE_BYTES = 4 << 30  # refuse to buffer a single reassembled message above 4 GiB

M = TypeVar("M", bound=Message)


def _little_endian(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


def _decode_array(data: bytes, dtype: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    if dtype not in ALLOWED_DTYPES:
        raise MalformedInputError(f"{what}: dtype {dtype!r} not allowed")
    if any(d < 0 for d in shape):
        raise MalformedInputError(f"{what}: negative dimension in {list(shape)}")
    # Python integers: numpy's product would wrap around for a forged huge shape.
    expected = math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize
    if len(data) != expected:
        raise MalformedInputError(
            f"{what}: {len(data)} bytes, expected {expected} for {dtype}{list(shape)}"
        )
    # frombuffer gives a read-only view of the message's bytes; copy so callers own it.
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)


def encode_tensor(name: str, array: np.ndarray) -> tensors_pb2.Tensor:
    array = np.asarray(array)
    if str(array.dtype) not in ALLOWED_DTYPES:
        raise ValueError(f"{name}: dtype {array.dtype} cannot be sent")
    return tensors_pb2.Tensor(
        name=name,
        dtype=str(array.dtype),
        shape=list(array.shape),
        data=_little_endian(array).tobytes(),
    )


def decode_tensor(message: tensors_pb2.Tensor) -> tuple[str, np.ndarray]:
    return message.name, _decode_array(
        message.data, message.dtype, tuple(message.shape), message.name
    )


def encode_rows(
    name: str, rows: SparseRows, table_shape: tuple[int, ...]
) -> tensors_pb2.SparseRows:
    values = np.asarray(rows.values)
    return tensors_pb2.SparseRows(
        name=name,
        dtype=str(values.dtype),
        shape=list(table_shape),
        row_ids=_little_endian(np.asarray(rows.row_ids, ROW_ID_DTYPE)).tobytes(),
        values=_little_endian(values).tobytes(),
    )


def decode_rows(message: tensors_pb2.SparseRows) -> tuple[str, SparseRows, tuple[int, ...]]:
    shape = tuple(message.shape)
    if not shape:
        raise MalformedInputError(f"{message.name}: a table needs a shape")
    count, remainder = divmod(len(message.row_ids), ROW_ID_DTYPE.itemsize)
    if remainder:
        raise MalformedInputError(f"{message.name}: row id bytes not a multiple of 8")
    ids = _decode_array(message.row_ids, "int64", (count,), f"{message.name} row ids")
    values = _decode_array(
        message.values, message.dtype, (count, *shape[1:]), f"{message.name} rows"
    )
    return message.name, SparseRows(ids, values), shape


def encode_bundle(
    dense: Mapping[str, np.ndarray],
    sparse: Mapping[str, SparseRows] | None = None,
    table_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> tensors_pb2.ArrayBundle:
    bundle = tensors_pb2.ArrayBundle()
    for name, value in dense.items():
        bundle.dense.append(encode_tensor(name, value))
    for name, rows in (sparse or {}).items():
        if table_shapes is None or name not in table_shapes:
            raise ValueError(f"{name}: the table's shape is needed to send its rows")
        bundle.sparse.append(encode_rows(name, rows, table_shapes[name]))
    return bundle


def decode_bundle(bundle: tensors_pb2.ArrayBundle) -> tuple[Arrays, dict[str, SparseRows]]:
    dense: Arrays = {}
    sparse: dict[str, SparseRows] = {}
    for message in bundle.dense:
        name, value = decode_tensor(message)
        if name in dense:
            raise MalformedInputError(f"{name}: sent twice")
        dense[name] = value
    for message in bundle.sparse:
        name, rows, _ = decode_rows(message)
        if name in sparse or name in dense:
            raise MalformedInputError(f"{name}: sent twice")
        sparse[name] = rows
    return dense, sparse


def to_chunks(message: Message, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tensors_pb2.Chunk]:
    """Serialise ``message`` and cut it into frames of at most ``chunk_bytes``."""
    payload = message.SerializeToString()
    view = memoryview(payload)
    count = max(1, -(-len(payload) // chunk_bytes))
    for index in range(count):
        yield tensors_pb2.Chunk(
            index=index,
            last=index == count - 1,
            data=bytes(view[index * chunk_bytes : (index + 1) * chunk_bytes]),
        )


def from_chunks(
    chunks: Iterable[tensors_pb2.Chunk],
    message_type: type[M],
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> M:
    """Reassemble frames (in order, gap-free, ending with ``last``) and parse them."""
    parts: list[bytes] = []
    size = 0
    closed = False
    for expected_index, chunk in enumerate(chunks):
        if closed:
            raise MalformedInputError("frame after the last one")
        if chunk.index != expected_index:
            raise MalformedInputError(
                f"frame {chunk.index} out of order, expected {expected_index}"
            )
        size += len(chunk.data)
        if size > max_bytes:
            raise MalformedInputError(f"message larger than {max_bytes} bytes")
        parts.append(chunk.data)
        closed = chunk.last
    if not closed:
        raise MalformedInputError("stream ended before its last frame")
    message = message_type()
    try:
        message.ParseFromString(b"".join(parts))
    except DecodeError as exc:
        raise MalformedInputError(f"cannot parse {message_type.__name__}") from exc
    return message
