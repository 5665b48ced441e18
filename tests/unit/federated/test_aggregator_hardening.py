"""What one enrolled member can no longer do to the aggregator: overflow the model with
finite updates, choose the best round with made-up scores, send an oversized evaluation,
or keep the federation from finishing; and a restart that fails on a tampered key file
does not announce "resumed"."""

from __future__ import annotations

import json
import threading

import grpc
import numpy as np
import pytest

from enclaverec.arrays import ModelUpdate
from enclaverec.data.schema import FeatureSpec
from enclaverec.errors import (
    AggregationRefusedError,
    IntegrityError,
    MalformedInputError,
    MessageTooLargeError,
)
from enclaverec.federated.aggregator import SUMMARY_FILE, AggregatorServicer, FederatedAggregator
from enclaverec.federated.best_round import robust_auc, score_round
from enclaverec.federated.config import FederatedPlan, FederationConfig, ModelKind
from enclaverec.federated.rounds import Phase, SelectionConfig, TaskKind
from enclaverec.federated.setup import init_federation
from enclaverec.federated.strategies import LocalTraining, StrategyConfig
from enclaverec.federated.wire import Evaluation, decode_evaluation, encode_evaluation
from enclaverec.paramservice.service import PushedUpdate
from enclaverec.roles.aggregator import make_aggregator
from enclaverec.tee.kinds import TEEKind
from enclaverec.transport import tensors
from enclaverec.transport.server import PARTY_ID_METADATA, ListenConfig

SPEC = FeatureSpec(dense_names=("d0", "d1"), categorical_names=("c0",), table_sizes=(5,))
MAX_ROWS = 50


def plan(rounds: int = 2, deadline: float = 10.0) -> FederatedPlan:
    return FederatedPlan(
        model=ModelKind.LOGREG,
        preset="logreg",
        optimizer="sgd",
        dataset="synthetic",
        features=SPEC,
        hashing=None,
        seed=0,
        rounds=rounds,
        local=LocalTraining(epochs=1, batch_size=4, learning_rate=0.1),
        strategy=StrategyConfig(),
        selection=SelectionConfig(deadline_seconds=deadline),
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def baseline_aggregator(tmp_path, parties: int, *, rounds: int = 2, deadline: float = 10.0):
    files = init_federation(
        tmp_path / "federation",
        parties=parties,
        plan=plan(rounds, deadline),
        tee=TEEKind.NONE,
        parties_attest=False,
        max_rows={f"party-{i}": MAX_ROWS for i in range(parties)},
    )
    clock = FakeClock()
    aggregator = FederatedAggregator(
        FederationConfig.load(files.federation_toml),
        backend=None,
        state_dir=files.aggregator_dir,
        listen=ListenConfig(),
        clock=clock,
    )
    return aggregator, clock


def audit(aggregator: FederatedAggregator) -> list[dict]:
    return [json.loads(line) for line in aggregator.audit.path.read_text().splitlines()]


def constant_update(aggregator, value: float, samples: int = 10) -> ModelUpdate:
    dense = {
        name: np.full(spec.shape, value, spec.dtype)
        for name, spec in aggregator.layout.specs.items()
    }
    return ModelUpdate(dense=dense, num_samples=samples)


def evaluation(labels, scores) -> Evaluation:
    labels = np.asarray(labels, np.float32)
    scores = np.asarray(scores, np.float32)
    return Evaluation(scores, labels, scores, labels, np.arange(len(labels), dtype=np.int64))


def scored(auc_good: bool, rows: int = 8) -> Evaluation:
    """Scores with AUC 1.0 (``auc_good``) or 0.0 on ``rows`` alternating labels."""
    labels = np.tile([0.0, 1.0], rows // 2)
    scores = labels * 0.8 + 0.1 if auc_good else (1 - labels) * 0.8 + 0.1
    return evaluation(labels, scores)


def test_two_huge_finite_updates_leave_the_model_as_it_was(tmp_path):
    aggregator, _ = baseline_aggregator(tmp_path, 2)
    replies = {
        party: PushedUpdate(party, 1, constant_update(aggregator, 3e38), 0.5, 0.1, 100)
        for party in ("party-0", "party-1")
    }
    # FedAvg of two 3e38 updates is 3e38, finite; the model plus it overflows float32.
    aggregator.state.store.apply(constant_update(aggregator, 3e38))
    before = aggregator.state.store.snapshot()
    aggregator._aggregate(1, replies)
    after = aggregator.state.store.snapshot()
    for name in before:
        assert np.all(np.isfinite(after[name]))
        assert np.array_equal(after[name], before[name])
    refused = [e for e in audit(aggregator) if e["event"] == "refused"]
    assert refused and "would not be finite" in refused[0]["reason"]
    assert aggregator.state.aggregated_round == 1  # the round goes on with the last model


def test_a_lying_party_cannot_choose_the_best_round(tmp_path):
    aggregator, _ = baseline_aggregator(tmp_path, 3)
    # Round 1: every party's own AUC is 2/3.
    moderate = evaluation([0, 1, 0, 1, 0, 1], [0.2, 0.7, 0.6, 0.4, 0.1, 0.9])
    aggregator._evaluate(1, {p: moderate for p in ("party-0", "party-1", "party-2")})
    # Round 2 (the liar's poisoned model): the honest parties see no signal (AUC 0.5), the
    # liar sends perfect scores for as many rows as it may, which wins the pooled AUC.
    flat = evaluation([0, 1] * 4, [0.5] * 8)
    poisoned = {"party-0": flat, "party-1": flat, "party-2": scored(True, rows=MAX_ROWS)}
    aggregator._evaluate(2, poisoned)
    history = aggregator.state.history
    assert history[1]["val_auc"] > history[0]["val_auc"]  # pooled, it would have won
    assert history[1]["selection_auc"] == 0.5 < history[0]["selection_auc"]
    assert aggregator.state.best_round == 1
    evaluated = [e for e in audit(aggregator) if e["event"] == "evaluated"]
    assert [e["round"] for e in evaluated] == [1, 2]
    assert evaluated[1]["per_party"]["party-2"]["val_auc"] == 1.0
    assert evaluated[1]["statistic"] == "median"


def test_the_selection_statistic():
    assert robust_auc([0.9]) == (0.9, "single")
    assert robust_auc([0.7, 1.0]) == (0.7, "min")
    assert robust_auc([0.6, 0.7, 1.0]) == (0.7, "median")
    one_class = evaluation([1, 1], [0.4, 0.6])
    scores = score_round({"a": one_class, "b": scored(True), "c": scored(False)})
    assert scores.per_party["a"] is None and scores.statistic == "min"


def test_an_evaluation_above_the_members_bound_is_refused_while_it_streams(tmp_path):
    aggregator, _ = baseline_aggregator(tmp_path, 2)
    limit = aggregator.max_evaluation_bytes("party-0")
    sent = []

    def junk():
        for index in range(10_000):
            sent.append(index)
            yield tensors.tensors_pb2.Chunk(index=index, data=b"\0" * 4096)

    with pytest.raises(MessageTooLargeError):
        aggregator.receive_evaluation("party-0", junk())
    assert len(sent) <= limit // 4096 + 2
    # The largest legitimate evaluation (max_rows rows per split) fits.
    rows = MAX_ROWS
    payload = encode_evaluation(
        round_index=2**32 - 1,
        model_version=2**64 - 1,
        incarnation="f" * tensors.MAX_INCARNATION_BYTES,
        validation_scores=np.full(rows, 0.5),
        validation_labels=np.ones(rows),
        test_scores=np.full(rows, 0.5),
        test_labels=np.ones(rows),
        test_row_ids=np.arange(rows),
    )
    assert payload.ByteSize() == limit
    assert aggregator.receive_evaluation("party-0", tensors.to_chunks(payload)) == payload
    # More rows than the bound, in a message that is small enough: refused by count.
    aggregator.coordinator.skip_to_evaluation()
    payload = encode_evaluation(
        round_index=1,
        model_version=aggregator.state.store.version,
        incarnation=aggregator.incarnation,
        validation_scores=np.full(rows + 1, 0.5),
        validation_labels=np.ones(rows + 1),
        test_scores=np.zeros(0),
        test_labels=np.zeros(0),
        test_row_ids=np.zeros(0),
    )
    with pytest.raises(AggregationRefusedError, match="bound is 50"):
        aggregator.submit_evaluation("party-0", payload)


def test_a_party_that_never_confirms_ends_the_wait_after_the_grace(tmp_path):
    aggregator, clock = baseline_aggregator(tmp_path, 2, rounds=1, deadline=10_000.0)
    coordinator = aggregator.coordinator
    for phase in (Phase.FIT, Phase.EVALUATE):
        for party in ("party-0", "party-1"):
            coordinator.task_for(party)
            coordinator.accept(party, phase, 1, ModelUpdate(dense={}))
        coordinator.close_phase()
    assert aggregator.task_now("party-0")[0].kind is TaskKind.FINISHED
    aggregator.mark_finished("party-0")  # party-1 got FINISHED but never confirms
    aggregator.task_now("party-1")
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(aggregator.run()), daemon=True)
    thread.start()
    thread.join(1.5)
    assert thread.is_alive()  # party-1 is still around: waiting for it
    clock.now = aggregator.finish_grace + 1
    thread.join(30)
    assert not thread.is_alive()
    assert result["rounds_completed"] == 0
    assert (aggregator.state_dir / SUMMARY_FILE).exists()
    assert any(
        e["event"] == "finish_unconfirmed" and e["parties"] == ["party-1"]
        for e in audit(aggregator)
    )


def test_resumed_is_announced_only_after_every_sealed_file_is_open(tmp_path):
    files = init_federation(
        tmp_path / "federation",
        parties=1,
        plan=plan(),
        tee=TEEKind.SIMULATED,
        parties_attest=True,
        max_rows={"party-0": MAX_ROWS},
    )
    first = make_aggregator(
        files.federation_toml, state_dir=files.aggregator_dir, listen=ListenConfig()
    )
    first._aggregate(
        1, {"party-0": PushedUpdate("party-0", 1, constant_update(first, 0.0), 0.1, 0.1, 10)}
    )
    tls = files.aggregator_dir / "tls.sealed"
    data = bytearray(tls.read_bytes())
    data[-5] ^= 0xFF
    tls.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        make_aggregator(
            files.federation_toml, state_dir=files.aggregator_dir, listen=ListenConfig()
        )
    events = [
        json.loads(line)["event"]
        for line in (files.aggregator_dir / "audit.jsonl").read_text().splitlines()
    ]
    assert "resumed" not in events


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"validation_scores": [np.nan, 0.5]}, "validation scores must be probabilities"),
        ({"test_scores": [np.inf, 0.5]}, "test scores must be probabilities"),
        ({"validation_scores": [1.5, 0.5]}, "validation scores must be probabilities"),
        ({"test_labels": [2.0, 1.0]}, "test labels must be 0 or 1"),
        ({"test_row_ids": [0]}, "test scores, labels and row ids differ in length"),
    ],
)
def test_an_evaluation_with_scores_that_are_not_probabilities_is_refused(change, message):
    fields = {
        "validation_scores": [0.2, 0.5],
        "validation_labels": [0.0, 1.0],
        "test_scores": [0.2, 0.5],
        "test_labels": [0.0, 1.0],
        "test_row_ids": [0, 1],
    }
    fields.update(change)
    payload = encode_evaluation(round_index=1, model_version=1, incarnation="x", **fields)
    with pytest.raises(MalformedInputError, match=message):
        decode_evaluation(payload, max_rows=MAX_ROWS)


def test_an_update_against_the_others_is_left_out_and_audited(tmp_path):
    aggregator, _ = baseline_aggregator(tmp_path, 4)
    before = aggregator.state.store.snapshot()
    values = {"party-0": 0.1, "party-1": 0.1, "party-2": 0.1, "party-3": -0.1}
    replies = {
        party: PushedUpdate(party, 1, constant_update(aggregator, value), 0.5, 0.1, 100)
        for party, value in values.items()
    }
    aggregator._aggregate(1, replies)
    after = aggregator.state.store.snapshot()
    for name in before:  # the agreeing updates' mean, the flipped one left out
        np.testing.assert_allclose(after[name] - before[name], 0.1, rtol=1e-5)
    excluded = [e for e in audit(aggregator) if e["event"] == "excluded"]
    assert [(e["round"], e["party"]) for e in excluded] == [(1, "party-3")]
    assert excluded[0]["cosine_with_others"] < 0


class _Refused(Exception):
    pass


class _Context:
    """A blocking servicer context of the plaintext baseline: the caller declares its id;
    ``abort`` raises as gRPC's does."""

    def __init__(self, party: str) -> None:
        self.party = party
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def invocation_metadata(self):
        return ((PARTY_ID_METADATA, self.party),)

    def abort(self, code, details):
        self.aborted = (code, details)
        raise _Refused(details)


def test_an_evaluation_sent_as_one_message_has_the_streams_bound_and_checks(tmp_path):
    aggregator, _ = baseline_aggregator(tmp_path, 2)
    servicer = AggregatorServicer(aggregator)
    aggregator.coordinator.skip_to_evaluation()
    aggregator.coordinator.task_for("party-0")

    def payload(rows: int, *, score: float = 0.5, incarnation: str = aggregator.incarnation):
        return encode_evaluation(
            round_index=1,
            model_version=aggregator.state.store.version,
            incarnation=incarnation,
            validation_scores=np.full(rows, score),
            validation_labels=np.ones(rows),
            test_scores=np.full(rows, score),
            test_labels=np.ones(rows),
            test_row_ids=np.arange(rows),
        )

    # Larger than the member's bound (padding in the incarnation): refused before decoding.
    oversized = payload(MAX_ROWS, incarnation="f" * 4096)
    assert oversized.ByteSize() > aggregator.max_evaluation_bytes("party-0")
    context = _Context("party-0")
    with pytest.raises(_Refused):
        servicer.SubmitEvaluationUnary(oversized, context)
    assert context.aborted[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Scores that are not probabilities: the same refusal as a stream's.
    context = _Context("party-0")
    with pytest.raises(_Refused):
        servicer.SubmitEvaluationUnary(payload(4, score=float("nan")), context)
    assert context.aborted[0] == grpc.StatusCode.INVALID_ARGUMENT
    refusals = [e for e in audit(aggregator) if e["event"] == "refused"]
    assert [e["party_id"] for e in refusals] == ["party-0", "party-0"]
    assert "bound" in refusals[0]["reason"] and "probabilities" in refusals[1]["reason"]
    assert aggregator.coordinator.replies == {}
    # A legitimate one is accepted as the evaluation of the round.
    reply = servicer.SubmitEvaluationUnary(payload(4), _Context("party-0"))
    assert reply.accepted and list(aggregator.coordinator.replies) == ["party-0"]
