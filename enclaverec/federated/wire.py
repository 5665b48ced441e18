"""The federated protocol's own payloads <-> numpy: the plan and evaluations (the model and
updates travel through the parameter service, ``enclaverec.paramservice.codec``).

Both sides use these functions, so a payload is encoded and checked in one place. Decoding
refuses what does not fit (lengths that disagree, a table sent as rows of a dense array);
the aggregation pre-check then judges the values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import tomli_w

from enclaverec.arrays import ModelLayout
from enclaverec.errors import AggregationRefusedError, MalformedInputError
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


def max_evaluation_bytes(max_rows: int) -> int:
    """The exact largest ``EvaluationPayload`` of a party bounded by ``max_rows``: that many
    validation rows (score, label) and test rows (score, label, row id), its integers at
    their largest and the incarnation at ``MAX_INCARNATION_BYTES``."""
    if max_rows < 1:
        return 0
    float_bytes = max_rows * FLOAT_DTYPE.itemsize
    return (
        tensors.max_varint_field(32)  # round
        + tensors.max_varint_field(64)  # model_version
        + tensors.field_size(tensors.MAX_INCARNATION_BYTES)
        + 4 * tensors.field_size(float_bytes)
        + tensors.field_size(max_rows * ROW_DTYPE.itemsize)
    )


def decode_evaluation(
    payload: federated_pb2.EvaluationPayload, *, max_rows: int | None = None
) -> Evaluation:
    """A party's scores; refuses lengths that disagree, scores that are not probabilities
    (NaN included), labels that are not 0/1, and more than ``max_rows`` rows per split."""
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
    if max_rows is not None and max(len(validation_scores), len(test_scores)) > max_rows:
        raise AggregationRefusedError(
            f"the evaluation scores {len(validation_scores)} validation and "
            f"{len(test_scores)} test rows; this party's bound is {max_rows}"
        )
    for name, values in (("validation", validation_scores), ("test", test_scores)):
        if not np.all(np.isfinite(values)) or np.any((values < 0) | (values > 1)):
            raise MalformedInputError(f"{name} scores must be probabilities")
    for name, labels in (("validation", validation_labels), ("test", test_labels)):
        if not np.all(np.isin(labels, (0.0, 1.0))):
            raise MalformedInputError(f"{name} labels must be 0 or 1")
    return Evaluation(validation_scores, validation_labels, test_scores, test_labels, test_row_ids)
