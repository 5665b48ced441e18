"""Named arrays <-> protobuf, and any large message <-> a stream of chunk frames.

Arrays travel as raw little-endian bytes with their dtype and shape; decoding checks that
the byte count matches, so a truncated or padded tensor is refused rather than reshaped.
Messages above gRPC's per-message limit (4 MiB by default) travel as ``Chunk`` frames.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar

import numpy as np
from google.protobuf.message import DecodeError, Message

from enclaverec.arrays import ROW_ID_DTYPE, Arrays, SparseRows
from enclaverec.errors import MalformedInputError, MessageTooLargeError
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
    try:
        return (
            np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"))
            .astype(dtype)
            .reshape(shape)
        )
    except (ValueError, OverflowError) as exc:
        # E.g. an empty array "of shape [0, 2**62]": the byte count matches, numpy refuses.
        raise MalformedInputError(f"{what}: cannot be shaped {list(shape)}") from exc


# --- exact encoded sizes (protobuf wire format), for limits computed from a layout ---------

MAX_INCARNATION_BYTES = 64
"""Longest incarnation string a legitimate payload carries (ours are 16 hex digits)."""


def varint_size(value: int) -> int:
    """Bytes of ``value`` as a protobuf varint (negative int64 values take 10)."""
    if value < 0:
        return 10
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def field_size(payload: int) -> int:
    """Bytes of a length-delimited field (numbers 1-15: one tag byte) of ``payload`` bytes."""
    return 1 + varint_size(payload) + payload


def max_varint_field(bits: int) -> int:
    """Bytes of a varint field (tag byte + value) holding any unsigned ``bits``-bit value."""
    return 1 + varint_size((1 << bits) - 1)


def max_tensor_bytes(name: str, dtype: str, shape: tuple[int, ...], *, table: bool) -> int:
    """The encoded size of an array of ``shape`` in a bundle (with its field header): whole
    (a ``Tensor``), or for a table, as every one of its rows (``SparseRows``) if larger."""
    itemsize = np.dtype(dtype).itemsize
    header = field_size(len(name.encode())) + field_size(len(dtype))
    if shape:
        header += field_size(sum(varint_size(int(d)) for d in shape))
    data = math.prod(int(d) for d in shape) * itemsize
    whole = header + field_size(data)
    if not shape or not table:
        return field_size(whole)
    rows = header + field_size(int(shape[0]) * ROW_ID_DTYPE.itemsize) + field_size(data)
    return field_size(max(whole, rows))


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
    return frames_of(message.SerializeToString(), chunk_bytes)


def frames_of(payload: bytes, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tensors_pb2.Chunk]:
    """A serialised message cut into frames of at most ``chunk_bytes``."""
    view = memoryview(payload)
    count = max(1, -(-len(payload) // chunk_bytes))
    for index in range(count):
        yield tensors_pb2.Chunk(
            index=index,
            last=index == count - 1,
            data=bytes(view[index * chunk_bytes : (index + 1) * chunk_bytes]),
        )


class InFlightBudget:
    """Bytes that callers have streamed in and not yet released, bounded per caller.

    A caller's concurrent streams share one allowance (its largest legitimate message), so
    eight parallel calls from one caller hold no more than one, and the total is bounded by
    the sum of the callers' allowances. Thread-safe; one per server.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    def reserve(self, caller: str, size: int, limit: int) -> None:
        """Add ``size`` bytes to ``caller``'s account, or refuse if it would exceed ``limit``."""
        with self._lock:
            held = self._held.get(caller, 0)
            if held + size > limit:
                raise MessageTooLargeError(
                    f"{caller} has {held + size} bytes in flight, more than the {limit} "
                    "its largest message may hold"
                )
            self._held[caller] = held + size

    def release(self, caller: str, size: int) -> None:
        with self._lock:
            left = self._held.get(caller, 0) - size
            if left > 0:
                self._held[caller] = left
            else:
                self._held.pop(caller, None)

    def held(self, caller: str) -> int:
        with self._lock:
            return self._held.get(caller, 0)


def check_one_message(message: M, max_bytes: int, what: str) -> M:
    """A message sent whole rather than in frames, held to the bound a stream of it has."""
    size = message.ByteSize()
    if size > max_bytes:
        raise MessageTooLargeError(f"{what} has {size} bytes, more than its bound {max_bytes}")
    return message


class ChunkAssembler:
    """Frames in, one message out: in order, gap-free, ending with ``last``, refused
    (``MessageTooLargeError``) as soon as the bytes so far exceed ``max_bytes`` or the
    caller's share of ``budget``. A plain object, so a sync or an asyncio servicer can feed
    it; call :meth:`close` in a ``finally`` to give the bytes back to the budget."""

    def __init__(
        self,
        *,
        max_bytes: int = MAX_MESSAGE_BYTES,
        budget: InFlightBudget | None = None,
        caller: str = "",
    ) -> None:
        self.max_bytes = max_bytes
        self._budget = budget
        self._caller = caller
        self._parts: list[bytes] = []
        self._size = 0
        self._reserved = 0
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    def add(self, chunk: tensors_pb2.Chunk) -> None:
        if self._closed:
            raise MalformedInputError("frame after the last one")
        if chunk.index != len(self._parts):
            raise MalformedInputError(
                f"frame {chunk.index} out of order, expected {len(self._parts)}"
            )
        size = len(chunk.data)
        if self._size + size > self.max_bytes:
            raise MessageTooLargeError(f"message larger than {self.max_bytes} bytes")
        if self._budget is not None:
            self._budget.reserve(self._caller, size, self.max_bytes)
            self._reserved += size
        self._size += size
        self._parts.append(chunk.data)
        self._closed = chunk.last

    def parse(self, message_type: type[M]) -> M:
        if not self._closed:
            raise MalformedInputError("stream ended before its last frame")
        message = message_type()
        try:
            message.ParseFromString(b"".join(self._parts))
        except DecodeError as exc:
            raise MalformedInputError(f"cannot parse {message_type.__name__}") from exc
        finally:
            self._parts = []
        return message

    def close(self) -> None:
        """Give the reserved bytes back (idempotent)."""
        self._parts = []
        if self._budget is not None and self._reserved:
            self._budget.release(self._caller, self._reserved)
            self._reserved = 0


def from_chunks(
    chunks: Iterable[tensors_pb2.Chunk],
    message_type: type[M],
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
    budget: InFlightBudget | None = None,
    caller: str = "",
) -> M:
    """Reassemble frames (in order, gap-free, ending with ``last``) and parse them; refuse
    the stream as soon as it exceeds ``max_bytes`` (or the caller's share of ``budget``)."""
    assembler = ChunkAssembler(max_bytes=max_bytes, budget=budget, caller=caller)
    try:
        for chunk in chunks:
            assembler.add(chunk)
        return assembler.parse(message_type)
    finally:
        assembler.close()
