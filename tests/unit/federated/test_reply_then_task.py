"""A reply that brings the next task back (issue 12): ``PushThenTask`` and
``SubmitEvaluationThenTask`` over the aggregator's real server (plaintext baseline, the
caller declares its id).

The push half is ParameterService's ``PushUnary`` itself: every refusal (non-finite
values, a stale base, a non-member) ends the call with the same status and audit event
and no task; an accepted reply waits for the phase to close and returns the next task,
with the model it is about.
"""

from __future__ import annotations

import json
import math
import threading
import time
from concurrent import futures

import grpc
import numpy as np
import pytest
from test_aggregator_hardening import baseline_aggregator, constant_update

from enclaverec.errors import TrainingError
from enclaverec.federated.aggregator import AUDIT_FILE, MAX_WAITING_PER_PARTY
from enclaverec.federated.wire import encode_evaluation
from enclaverec.paramservice.codec import encode_update
from enclaverec.paramservice.service import ParameterClient
from enclaverec.transport.proto import federated_pb2, federated_pb2_grpc
from enclaverec.transport.server import PARTY_ID_METADATA

WAIT = 30.0  # longer than the test may take: a WAIT answer would be the failure


@pytest.fixture
def served(tmp_path):
    """A running one-round aggregator with two members, its driver in a thread."""
    aggregator, clock = baseline_aggregator(tmp_path, 2, rounds=1)

    def drive() -> None:
        try:
            aggregator.run()
        except TrainingError:
            pass  # the end of the test (below): no quorum after the last deadline

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    wait_until_started(aggregator)
    channel = grpc.insecure_channel(f"127.0.0.1:{aggregator.server.endpoints.application_port}")
    yield aggregator, federated_pb2_grpc.AggregatorStub(channel)
    channel.close()
    for party in ("party-0", "party-1"):
        aggregator.mark_finished(party)
    # Whatever phase the test left it in, deadlines pass until the driver gives up.
    give_up = time.monotonic() + 10
    while driver.is_alive() and time.monotonic() < give_up:
        with aggregator._cond:
            clock.now += 1000
            aggregator._cond.notify_all()
        driver.join(0.05)
    assert not driver.is_alive()


def wait_until_started(aggregator) -> None:
    give_up = time.monotonic() + 10
    while time.monotonic() < give_up:
        path = aggregator.state_dir / AUDIT_FILE
        if path.exists() and any(e["event"] == "started" for e in audit(aggregator)):
            return
        time.sleep(0.01)
    raise AssertionError("the aggregator did not start")


def as_party(party: str):
    return ((PARTY_ID_METADATA, party),)


def next_request(version: int, incarnation: str) -> federated_pb2.TaskRequest:
    return federated_pb2.TaskRequest(
        wait_seconds=WAIT, carry_model=True, held_version=version, held_incarnation=incarnation
    )


def push_request(aggregator, value: float, *, base_version: int | None = None, loss=0.5):
    version = aggregator.state.store.version if base_version is None else base_version
    payload = encode_update(
        constant_update(aggregator, value),
        aggregator.layout,
        step=1,
        base_version=version,
        incarnation=aggregator.incarnation,
        train_loss=loss,
        train_seconds=0.1,
    )
    return federated_pb2.PushThenTaskRequest(
        update=payload, next=next_request(version, aggregator.incarnation)
    )


def evaluation_request(aggregator, party_index: int, version: int):
    rows = 10
    payload = encode_evaluation(
        round_index=1,
        model_version=version,
        incarnation=aggregator.incarnation,
        validation_scores=np.linspace(0.1, 0.9, rows),
        validation_labels=np.arange(rows) % 2,
        test_scores=np.linspace(0.1, 0.9, rows),
        test_labels=np.arange(rows) % 2,
        test_row_ids=np.arange(rows) + party_index * rows,
    )
    return federated_pb2.EvaluationThenTaskRequest(
        evaluation=payload, next=next_request(version, aggregator.incarnation)
    )


def audit(aggregator) -> list[dict]:
    path = aggregator.state_dir / AUDIT_FILE
    return [json.loads(line) for line in path.read_text().splitlines()]


def refusals(aggregator) -> list[dict]:
    return [e for e in audit(aggregator) if e["event"] in ("refused", "update_refused")]


def test_a_round_is_two_calls_and_each_reply_brings_the_next_task(served):
    aggregator, stub = served
    tasks = {
        party: stub.GetTask(next_request(-1, ""), metadata=as_party(party), timeout=WAIT)
        for party in ("party-0", "party-1")
    }
    assert {t.kind for t in tasks.values()} == {federated_pb2.FIT}
    start = aggregator.state.store.version
    with futures.ThreadPoolExecutor(2) as pool:
        # party-0's push waits for party-1's: the phase closes, both get the evaluation.
        first = pool.submit(
            stub.PushThenTask, push_request(aggregator, 0.01), metadata=as_party("party-0")
        )
        second = pool.submit(
            stub.PushThenTask, push_request(aggregator, 0.02), metadata=as_party("party-1")
        )
        evaluate = [first.result(WAIT), second.result(WAIT)]
    version = aggregator.state.store.version
    assert version > start
    for task in evaluate:
        assert (task.kind, task.round, task.model_version) == (federated_pb2.EVALUATE, 1, version)
        # It carries the combined model's changes, checked as a pull's answer is.
        client = ParameterClient(lambda fn: None, aggregator.layout)
        client.version, client.incarnation = start, aggregator.incarnation
        client.held = aggregator.plan.initial_model()[0]
        arrays = client.accept(task.model)
        assert client.version == version
        assert all(np.all(np.isfinite(a)) for a in arrays.values())
    with futures.ThreadPoolExecutor(2) as pool:
        replies = [
            pool.submit(
                stub.SubmitEvaluationThenTask,
                evaluation_request(aggregator, i, version),
                metadata=as_party(f"party-{i}"),
            )
            for i in range(2)
        ]
        following = [reply.result(WAIT) for reply in replies]
    # The federation had one round: the evaluation's reply is the end.
    assert [t.kind for t in following] == [federated_pb2.FINISHED] * 2
    assert aggregator.state.completed_round == 1
    assert refusals(aggregator) == []


@pytest.mark.parametrize(
    "make, says",
    [
        # Non-finite values: refused before they reach the round.
        (lambda a: push_request(a, math.nan), "non-finite values"),
        # A non-finite reported number.
        (lambda a: push_request(a, 0.01, loss=math.inf), "train_loss"),
        # Computed from a model that is not the current one.
        (lambda a: push_request(a, 0.01, base_version=7), "computed from version 7"),
    ],
)
def test_a_refused_push_gets_the_push_refusal_and_no_task(served, make, says):
    aggregator, stub = served
    stub.GetTask(next_request(-1, ""), metadata=as_party("party-0"), timeout=WAIT)
    with pytest.raises(grpc.RpcError) as refused:
        stub.PushThenTask(make(aggregator), metadata=as_party("party-0"), timeout=WAIT)
    # PushUnary's refusal: a refusal status (final for the party), its reason, an audit line.
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert says in refused.value.details()
    assert [e["party_id"] for e in refusals(aggregator)] == ["party-0"]
    # Nothing of it reached the round.
    assert "party-0" not in aggregator.coordinator.replies


def test_a_non_member_is_refused_before_its_push_is_read(served):
    aggregator, stub = served
    with pytest.raises(grpc.RpcError) as refused:
        stub.PushThenTask(push_request(aggregator, 0.01), metadata=as_party("party-9"))
    assert refused.value.code() in (
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert aggregator.coordinator.replies == {}


def test_an_evaluation_that_is_not_probabilities_gets_no_task(served):
    aggregator, stub = served
    for party in ("party-0", "party-1"):
        stub.GetTask(next_request(-1, ""), metadata=as_party(party), timeout=WAIT)
    with futures.ThreadPoolExecutor(2) as pool:
        pushes = [
            pool.submit(
                stub.PushThenTask, push_request(aggregator, 0.01), metadata=as_party(f"party-{i}")
            )
            for i in range(2)
        ]
        version = pushes[0].result(WAIT).model_version
        pushes[1].result(WAIT)
    bad = evaluation_request(aggregator, 0, version)
    bad.evaluation.validation_scores = np.full(10, 1.5, np.float32).tobytes()
    with pytest.raises(grpc.RpcError) as refused:
        stub.SubmitEvaluationThenTask(bad, metadata=as_party("party-0"), timeout=WAIT)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [e["party_id"] for e in refusals(aggregator)] == ["party-0"]
    assert aggregator.coordinator.replies == {}


def test_an_accepted_push_past_the_waiting_bound_answers_wait_not_a_refusal(served):
    # The update is in; the bound on waiting requests then only sends the party to GetTask
    # (where it is a retryable RESOURCE_EXHAUSTED), never to push the same update again.
    aggregator, stub = served
    stub.GetTask(next_request(-1, ""), metadata=as_party("party-0"), timeout=WAIT)
    aggregator._waiting["party-0"] = MAX_WAITING_PER_PARTY  # two requests already waiting
    task = stub.PushThenTask(
        push_request(aggregator, 0.01), metadata=as_party("party-0"), timeout=WAIT
    )
    assert task.kind == federated_pb2.WAIT
    assert "party-0" in aggregator.coordinator.replies
    refused = refusals(aggregator)
    assert [(e["party_id"], "waiting" in e["reason"]) for e in refused] == [("party-0", True)]
