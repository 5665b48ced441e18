"""What a worker's evaluation may carry: the key broker refuses scores that are not
probabilities, labels that are not 0/1, arrays of different lengths, non-finite seconds and
step or row counts beyond the plan, each with a typed error and a `refused` audit event,
and keeps nothing of the refused evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from distributed_helpers import make_job, running_keybroker

from enclaverec.distributed.keybroker import AUDIT_FILE
from enclaverec.errors import MalformedInputError
from enclaverec.transport.proto import keybroker_pb2


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    return make_job(tmp_path_factory.mktemp("evaluations"))


def _payload(**overrides):
    rows = 4
    fields = {
        "epoch": 1,
        "steps": 1,
        "train_seconds": 1.0,
        "train_samples": 10,
        "validation_scores": np.full(rows, 0.5, "<f4").tobytes(),
        "validation_labels": np.array([0, 1, 0, 1], "<f4").tobytes(),
        "test_scores": np.full(rows, 0.5, "<f4").tobytes(),
        "test_labels": np.array([0, 1, 0, 1], "<f4").tobytes(),
        "test_row_ids": np.arange(rows, dtype="<i8").tobytes(),
    }
    fields.update(overrides)
    return keybroker_pb2.EvaluationPayload(**fields)


BAD = {
    "scores above 1": ({"test_scores": np.full(4, 1.5, "<f4").tobytes()}, "probabilities"),
    "NaN scores": ({"validation_scores": np.full(4, np.nan, "<f4").tobytes()}, "probabilities"),
    "labels not 0/1": ({"test_labels": np.full(4, 2.0, "<f4").tobytes()}, "labels must be 0 or 1"),
    "lengths differ": ({"test_row_ids": np.arange(3, dtype="<i8").tobytes()}, "differ in length"),
    "ragged bytes": ({"validation_scores": b"\x00" * 7}, "whole number"),
    "infinite seconds": ({"train_seconds": float("inf")}, "train_seconds"),
    "steps beyond the plan": ({"steps": 2**40}, "beyond epoch 1's last step"),
    "rows beyond the plan": ({"train_samples": 2**40}, "training rows"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_evaluation_is_refused_and_audited(job, tmp_path, case):
    overrides, message = BAD[case]
    with running_keybroker(job, state_dir=tmp_path / "kb") as broker:
        with pytest.raises(MalformedInputError, match=message):
            broker.submit_evaluation("worker-0", _payload(**overrides))
        assert broker.state.epochs == [] and not broker._evaluations  # nothing kept
    events = [json.loads(line) for line in (tmp_path / "kb" / AUDIT_FILE).read_text().splitlines()]
    refused = [e for e in events if e.get("event") == "refused"]
    assert refused and refused[-1]["member"] == "worker-0"
    assert refused[-1]["check"] == "evaluation"


def test_a_well_formed_evaluation_is_kept_until_the_epoch_closes(job, tmp_path):
    with running_keybroker(job, state_dir=tmp_path / "kb") as broker:
        broker.submit_evaluation("worker-0", _payload())
        assert set(broker._evaluations[1]) == {"worker-0"}
