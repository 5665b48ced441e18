"""The parameter service's payloads <-> numpy: models (whole or changed rows) and updates.

Clients and servers use these functions, so a payload is encoded and checked in one place.
Decoding refuses what does not fit the layout; the pre-check (``combine.check_update``)
then judges an update's values.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from enclaverec.arrays import Arrays, ModelLayout, ModelUpdate, SparseRows
from enclaverec.errors import MalformedInputError
from enclaverec.transport import tensors
from enclaverec.transport.proto import paramservice_pb2


def max_bundle_bytes(layout: ModelLayout) -> int:
    """The largest ``ArrayBundle`` a legitimate sender makes for ``layout``: every array
    whole, every table whole or as all of its rows (row ids included), whichever is larger."""
    return sum(
        tensors.max_tensor_bytes(name, spec.dtype, spec.shape, table=spec.table)
        for name, spec in layout.specs.items()
    )


def max_update_bytes(layout: ModelLayout) -> int:
    """The exact maximum size of a legitimate ``UpdatePayload`` for ``layout`` (its
    integers at their largest, the incarnation at ``MAX_INCARNATION_BYTES``). A push that
    streams more is refused before it is buffered."""
    return (
        tensors.max_varint_field(32)  # step
        + tensors.max_varint_field(64)  # base_version
        + tensors.field_size(tensors.MAX_INCARNATION_BYTES)
        + tensors.max_varint_field(64)  # num_samples
        + 2 * 9  # train_loss, train_seconds: fixed64 with a tag byte
        + tensors.field_size(max_bundle_bytes(layout))
    )


def _shapes(layout: ModelLayout) -> dict[str, tuple[int, ...]]:
    return {name: spec.shape for name, spec in layout.specs.items()}


def encode_model(
    dense: Mapping[str, np.ndarray],
    sparse: Mapping[str, SparseRows],
    layout: ModelLayout,
    *,
    version: int,
    incarnation: str,
    complete: bool,
    tag: int = 0,
) -> paramservice_pb2.ModelPayload:
    return paramservice_pb2.ModelPayload(
        version=version,
        incarnation=incarnation,
        complete=complete,
        tag=tag,
        arrays=tensors.encode_bundle(dense, sparse, _shapes(layout)),
    )


def apply_model(
    payload: paramservice_pb2.ModelPayload, held: Arrays | None, layout: ModelLayout
) -> Arrays:
    """The model after ``payload``: a complete payload replaces everything; otherwise its
    arrays and rows overwrite those of ``held`` (a copy is returned)."""
    dense, sparse = tensors.decode_bundle(payload.arrays)
    if payload.complete:
        arrays: Arrays = {}
        for name in layout.names:
            if name not in dense:
                raise MalformedInputError(f"a complete model lacks {name}")
            arrays[name] = dense[name]
    else:
        if held is None:
            raise MalformedInputError("changes arrived for a model the caller does not hold")
        arrays = {name: value.copy() for name, value in held.items()}
        for name, value in dense.items():
            arrays[name] = value
        for name, rows in sparse.items():
            if name not in arrays:
                raise MalformedInputError(f"rows of unknown table {name}")
            arrays[name][rows.row_ids] = rows.values
    for name, spec in layout.specs.items():
        if tuple(arrays[name].shape) != spec.shape or str(arrays[name].dtype) != spec.dtype:
            raise MalformedInputError(f"{name}: the model's array does not fit the layout")
    return arrays


def encode_update(
    update: ModelUpdate,
    layout: ModelLayout,
    *,
    step: int,
    base_version: int,
    incarnation: str,
    train_loss: float = 0.0,
    train_seconds: float = 0.0,
) -> paramservice_pb2.UpdatePayload:
    return paramservice_pb2.UpdatePayload(
        step=step,
        base_version=base_version,
        incarnation=incarnation,
        num_samples=update.num_samples,
        train_loss=train_loss,
        train_seconds=train_seconds,
        delta=tensors.encode_bundle(update.dense, update.sparse, _shapes(layout)),
    )


def decode_update(payload: paramservice_pb2.UpdatePayload) -> ModelUpdate:
    """The update a payload carries (shapes and values judged by ``combine.check_update``)."""
    dense, sparse = tensors.decode_bundle(payload.delta)
    return ModelUpdate(dense=dense, sparse=sparse, num_samples=int(payload.num_samples))
