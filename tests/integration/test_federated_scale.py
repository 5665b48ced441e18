"""More parties than the old server had threads (issue 12): twelve attested parties on one
aggregator finish a round, and every task request is answered with a task, none by
running out its poll.

The thread-pool server this replaced had 8 threads; parties waiting for the next phase
held all of them, the others' pushes queued behind, and the round went on only when the
waiting polls timed out (10 s each; here a 30 s poll, the longest the aggregator grants,
would have returned WAIT). The assertion is on the protocol (no poll expired), not on
wall-clock time.
"""

from __future__ import annotations

import pytest
from federation_helpers import (
    AggregatorThread,
    PartyThread,
    audit_events,
    logreg_plan,
    new_federation,
)

from enclaverec.federated.aggregator import MAX_WAIT_SECONDS
from enclaverec.federated.party import PartyOptions
from enclaverec.paramservice.service import ParameterClient
from enclaverec.roles.party import make_party_session

pytestmark = pytest.mark.multiprocess

PARTIES = 12  # more than the 8 threads of the old application server
JOIN_SECONDS = 300.0


def test_twelve_parties_finish_a_round_without_a_poll_running_out(tmp_path, monkeypatch):
    # The model rides in the tasks (four calls per party and round, not five): count the
    # pulls that a party would otherwise make.
    pulls: list[int] = []
    pull = ParameterClient.pull
    monkeypatch.setattr(ParameterClient, "pull", lambda self: pulls.append(1) or pull(self))
    federation = new_federation(
        tmp_path / "federation", plan=logreg_plan(rounds=1, parties=PARTIES), parties=PARTIES
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

    assert summary["rounds_completed"] == 1
    assert sorted(summary["contributions"]) == sorted(r.party_id for r in results)
    assert all(r.rounds_trained == [1] and r.rounds_evaluated == [1] for r in results)
    assert all(r.best_round == 1 and r.best_model is not None for r in results)
    # The protocol: every task request got a task (FIT, EVALUATE, FINISHED) while it
    # waited; not one ran out its 30 s poll.
    assert {r.party_id: r.polls_expired for r in results} == {r.party_id: 0 for r in results}
    events = [e["event"] for e in audit_events(federation.audit)]
    assert events.count("enrolled") == PARTIES
    assert "overloaded" not in events and "refused" not in events
    assert pulls == []  # every party got the model (whole, then changes) with its tasks
