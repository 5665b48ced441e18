"""The federated protocol's payloads <-> numpy: the plan, the model, updates, evaluations.

Both sides use these functions, so a payload is encoded and checked in one place. Decoding
refuses what does not fit (lengths that disagree, a table sent as rows of a dense array);
the aggregation pre-check then judges the values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import tomli_w

from enclaverec.arrays import Arrays, ModelLayout, ModelUpdate, SparseRows
from enclaverec.errors import MalformedInputError
from enclaverec.federated.config import FederationConfig
from enclaverec.tee.measurement import canonical_config
from enclaverec.transport import tensors
from enclaverec.transport.proto import federated_pb2

FLOAT_DTYPE = np.dtype("<f4")
ROW_DTYPE = np.dtype("<i8")


@dataclass(frozen=True)
class Evaluation:
    """One party's scores of one round's global model on its validation and test rows."""

    validation_scores: np.ndarray
    validation_labels: np.ndarray
    test_scores: np.ndarray
    test_labels: np.ndarray
    test_row_ids: np.ndarray


def plan_message(config: FederationConfig, layout: ModelLayout) -> federated_pb2.Plan:
    plan_toml = canonical_config(tomli_w.dumps(config.plan.to_toml()).encode())
    return federated_pb2.Plan(
        plan_toml=plan_toml,
        layout_json=json.dumps(layout.to_dict(), sort_keys=True).encode(),
        federation=config.name,
        rounds=config.plan.rounds,
    )


def decode_layout(message: federated_pb2.Plan) -> ModelLayout:
    try:
        return ModelLayout.from_dict(json.loads(message.layout_json))
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedInputError("the plan's model layout is malformed") from exc


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
) -> federated_pb2.ModelPayload:
    return federated_pb2.ModelPayload(
        version=version,
        incarnation=incarnation,
        complete=complete,
        arrays=tensors.encode_bundle(dense, sparse, _shapes(layout)),
    )


def apply_model(
    payload: federated_pb2.ModelPayload, held: Arrays | None, layout: ModelLayout
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
            raise MalformedInputError("changes arrived for a model this party does not hold")
        arrays = {name: value.copy() for name, value in held.items()}
        for name, value in dense.items():
            arrays[name] = value
        for name, rows in sparse.items():
            if name not in arrays:
                raise MalformedInputError(f"rows of unknown table {name}")
            arrays[name][rows.row_ids] = rows.values
    for name, spec in layout.specs.items():
        if tuple(arrays[name].shape) != spec.shape or str(arrays[name].dtype) != spec.dtype:
            raise MalformedInputError(f"{name}: the model's array does not fit the plan's layout")
    return arrays


def encode_update(
    update: ModelUpdate,
    layout: ModelLayout,
    *,
    round_index: int,
    base_version: int,
    incarnation: str,
    train_loss: float,
    train_seconds: float,
) -> federated_pb2.UpdatePayload:
    return federated_pb2.UpdatePayload(
        round=round_index,
        base_version=base_version,
        incarnation=incarnation,
        num_samples=update.num_samples,
        train_loss=train_loss,
        train_seconds=train_seconds,
        delta=tensors.encode_bundle(update.dense, update.sparse, _shapes(layout)),
    )


def decode_update(payload: federated_pb2.UpdatePayload) -> ModelUpdate:
    dense, sparse = tensors.decode_bundle(payload.delta)
    return ModelUpdate(dense=dense, sparse=sparse, num_samples=int(payload.num_samples))


def _floats(data: bytes, what: str) -> np.ndarray:
    if len(data) % FLOAT_DTYPE.itemsize:
        raise MalformedInputError(f"{what}: not a whole number of float32 values")
    return np.frombuffer(data, FLOAT_DTYPE).astype(np.float32)


def encode_evaluation(
    *,
    round_index: int,
    model_version: int,
    incarnation: str,
    validation_scores: np.ndarray,
    validation_labels: np.ndarray,
    test_scores: np.ndarray,
    test_labels: np.ndarray,
    test_row_ids: np.ndarray,
) -> federated_pb2.EvaluationPayload:
    return federated_pb2.EvaluationPayload(
        round=round_index,
        model_version=model_version,
        incarnation=incarnation,
        validation_scores=np.asarray(validation_scores, FLOAT_DTYPE).tobytes(),
        validation_labels=np.asarray(validation_labels, FLOAT_DTYPE).tobytes(),
        test_scores=np.asarray(test_scores, FLOAT_DTYPE).tobytes(),
        test_labels=np.asarray(test_labels, FLOAT_DTYPE).tobytes(),
        test_row_ids=np.asarray(test_row_ids, ROW_DTYPE).tobytes(),
    )


def decode_evaluation(payload: federated_pb2.EvaluationPayload) -> Evaluation:
    validation_scores = _floats(payload.validation_scores, "validation scores")
    validation_labels = _floats(payload.validation_labels, "validation labels")
    test_scores = _floats(payload.test_scores, "test scores")
    test_labels = _floats(payload.test_labels, "test labels")
    if len(payload.test_row_ids) % ROW_DTYPE.itemsize:
        raise MalformedInputError("test row ids: not a whole number of int64 values")
    test_row_ids = np.frombuffer(payload.test_row_ids, ROW_DTYPE).astype(np.int64)
    if len(validation_scores) != len(validation_labels):
        raise MalformedInputError("validation scores and labels differ in length")
    if not (len(test_scores) == len(test_labels) == len(test_row_ids)):
        raise MalformedInputError("test scores, labels and row ids differ in length")
    for name, values in (("validation", validation_scores), ("test", test_scores)):
        if not np.all(np.isfinite(values)) or np.any((values < 0) | (values > 1)):
            raise MalformedInputError(f"{name} scores must be probabilities")
    for name, labels in (("validation", validation_labels), ("test", test_labels)):
        if not np.all(np.isin(labels, (0.0, 1.0))):
            raise MalformedInputError(f"{name} labels must be 0 or 1")
    return Evaluation(validation_scores, validation_labels, test_scores, test_labels, test_row_ids)
