"""More parties than the old server had threads (issue 12): twelve attested parties on one
aggregator finish two rounds, and every task request is answered with a task, none by
running out its poll. After its first task request a party makes two calls a round: its
update and its evaluation, each answered with its next task.

The thread-pool server this replaced had 8 threads; parties waiting for the next phase
held all of them, the others' pushes queued behind, and the round went on only when the
waiting polls timed out (10 s each; here a 30 s poll, the longest the aggregator grants,
would have returned WAIT). The assertion is on the protocol (no poll expired), not on
wall-clock time.
"""

from __future__ import annotations

from collections import Counter

import pytest
from federation_helpers import (
    AggregatorThread,
    PartyThread,
    audit_events,
    logreg_plan,
    new_federation,
)

from enclaverec.federated import party as party_module
from enclaverec.federated.aggregator import MAX_WAIT_SECONDS
from enclaverec.federated.party import PartyOptions
from enclaverec.paramservice.service import ParameterClient
from enclaverec.roles.party import make_party_session
from enclaverec.transport.proto import federated_pb2_grpc

pytestmark = pytest.mark.multiprocess

PARTIES = 12  # more than the 8 threads of the old application server
ROUNDS = 2
JOIN_SECONDS = 300.0


class CountingStub:
    """The party's Aggregator stub, counting the calls it makes by method."""

    def __init__(self, channel, calls: Counter) -> None:
        self._stub = federated_pb2_grpc.AggregatorStub(channel)
        self._calls = calls

    def __getattr__(self, method: str):
        call = getattr(self._stub, method)

        def counted(*args, **kwargs):
            self._calls[method] += 1
            return call(*args, **kwargs)

        return counted


def test_twelve_parties_finish_rounds_without_a_poll_running_out(tmp_path, monkeypatch):
    # The model rides in the tasks and the next task in each reply (two calls per party
    # and round): count the pulls that a party would otherwise make, and the calls.
    pulls: list[int] = []
    pull = ParameterClient.pull
    monkeypatch.setattr(ParameterClient, "pull", lambda self: pulls.append(1) or pull(self))
    calls: Counter = Counter()
    monkeypatch.setattr(party_module, "_stub", lambda channel: CountingStub(channel, calls))
    federation = new_federation(
        tmp_path / "federation", plan=logreg_plan(rounds=ROUNDS, parties=PARTIES), parties=PARTIES
    )
    aggregator = AggregatorThread(federation).start()
    setups = [make_party_session(federation.party(i)) for i in range(PARTIES)]
    # Every party verifies the aggregator and enrolls first, so that no phase waits on
    # another party's enrollment: after this, a poll can only expire if the server makes
    # a ready party wait.
    for setup in setups:
        setup.session.open()
    options = PartyOptions(reconnect_seconds=60.0, poll_seconds=MAX_WAIT_SECONDS)
    parties = [PartyThread(setup=setup, options=options).start() for setup in setups]
    results = [party.join(JOIN_SECONDS) for party in parties]
    summary = aggregator.join(JOIN_SECONDS)

    assert summary["rounds_completed"] == ROUNDS
    assert sorted(summary["contributions"]) == sorted(r.party_id for r in results)
    rounds = list(range(1, ROUNDS + 1))
    assert all(r.rounds_trained == rounds and r.rounds_evaluated == rounds for r in results)
    assert all(r.best_round in rounds and r.best_model is not None for r in results)
    # The protocol: every task request got a task (FIT, EVALUATE, FINISHED) while it
    # waited; not one ran out its 30 s poll.
    assert {r.party_id: r.polls_expired for r in results} == {r.party_id: 0 for r in results}
    events = [e["event"] for e in audit_events(federation.audit)]
    assert events.count("enrolled") == PARTIES
    assert "overloaded" not in events and "refused" not in events
    assert pulls == []  # every party got the model (whole, then changes) with its tasks
    # One task request per party (the first); every later task came back with a reply.
    assert calls == {
        "GetPlan": PARTIES,
        "GetTask": PARTIES,
        "PushThenTask": PARTIES * ROUNDS,
        "SubmitEvaluationThenTask": PARTIES * ROUNDS,
    }
