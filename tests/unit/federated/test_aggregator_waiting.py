"""Task requests that wait: woken the moment the driver makes a task (not at a recheck or a
poll's end), and bounded per party, with a refusal that is audited and leaks nothing."""

from __future__ import annotations

import asyncio
import json

import pytest
from test_aggregator_hardening import baseline_aggregator

from enclaverec.arrays import ModelUpdate
from enclaverec.errors import ServerBusyError
from enclaverec.federated import aggregator as aggregator_module
from enclaverec.federated.aggregator import AUDIT_FILE, MAX_WAITING_PER_PARTY, FederatedAggregator
from enclaverec.federated.rounds import Phase, TaskKind

LONG = 60.0  # longer than the test may take: reaching it would be the failure


@pytest.fixture
def waiting_aggregator(tmp_path, monkeypatch):
    """A plaintext-baseline aggregator in round 1's FIT phase where party-0 has replied
    (so it must wait) and party-1 has not. The periodic recheck is pushed out of reach, so
    only the driver's notification can wake a waiting request."""
    monkeypatch.setattr(aggregator_module, "RECHECK_SECONDS", LONG)
    aggregator, _ = baseline_aggregator(tmp_path, 2, rounds=1)
    aggregator.coordinator.task_for("party-0")
    aggregator.coordinator.accept("party-0", Phase.FIT, 1, ModelUpdate(dense={}))
    return aggregator


def audit(aggregator: FederatedAggregator) -> list[dict]:
    path = aggregator.state_dir / AUDIT_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def until_waiting(aggregator: FederatedAggregator, count: int) -> None:
    while aggregator._waiting.get("party-0", 0) != count:
        await asyncio.sleep(0.001)


def test_a_waiting_request_gets_the_task_the_moment_it_exists(waiting_aggregator):
    aggregator = waiting_aggregator

    async def scenario():
        waiting = asyncio.create_task(aggregator.next_task("party-0", LONG))
        await asyncio.wait_for(until_waiting(aggregator, 1), LONG)
        assert not waiting.done()
        with aggregator._cond:  # what the driver does when the last update arrives
            aggregator.coordinator.accept("party-1", Phase.FIT, 1, ModelUpdate(dense={}))
            aggregator.coordinator.close_phase()
            aggregator._notify()
        return await asyncio.wait_for(waiting, LONG / 2)

    task, _ = asyncio.run(scenario())
    assert (task.kind, task.round) == (TaskKind.EVALUATE, 1)
    assert aggregator._waiting == {}


def test_a_party_past_its_waiting_bound_is_refused_and_audited(waiting_aggregator):
    aggregator = waiting_aggregator

    async def scenario():
        waiting = [
            asyncio.create_task(aggregator.next_task("party-0", LONG))
            for _ in range(MAX_WAITING_PER_PARTY)
        ]
        await asyncio.wait_for(until_waiting(aggregator, MAX_WAITING_PER_PARTY), LONG)
        with pytest.raises(ServerBusyError, match="already has 2 task requests waiting"):
            await aggregator.next_task("party-0", LONG)
        # The other party is not affected by party-0's bound.
        other, _ = await aggregator.next_task("party-1", LONG)
        for request in waiting:
            request.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        return other

    other = asyncio.run(scenario())
    assert other.kind is TaskKind.FIT
    # The cancelled requests gave their places back.
    assert aggregator._waiting == {}
    refusals = [e for e in audit(aggregator) if e["event"] == "refused"]
    assert [(e["party_id"], e["reason"]) for e in refusals] == [
        ("party-0", "2 task requests already waiting")
    ]


@pytest.mark.parametrize(("deadline", "recheck"), [(600.0, 150.0), (8.0, 2.0), (0.5, 1.0)])
def test_a_waiting_request_looks_again_well_within_the_liveness_horizon(deadline, recheck):
    # A party counts as live when seen within one deadline: four looks per deadline keep
    # a waiting party live, and the default deadline costs no look within a poll. Short
    # (test) deadlines keep the one-second floor.
    assert aggregator_module.recheck_seconds(deadline) == recheck
