"""When a phase's deadline runs, and who counts as still around: a phase's clock starts
with its first task (an aggregator started before its parties does not spend their
deadline), an idle phase still expires, and a party unseen for a deadline is gone."""

from __future__ import annotations

from enclaverec.federated.rounds import Phase, RoundCoordinator, SelectionConfig, TaskKind

PARTIES = ["party-0", "party-1", "party-2", "party-3"]
DEADLINE = 10.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def coordinator(**selection) -> tuple[RoundCoordinator[str], FakeClock]:
    clock = FakeClock()
    config = SelectionConfig(deadline_seconds=DEADLINE, **selection)
    return RoundCoordinator(PARTIES, 2, config, clock=clock), clock


def test_the_deadline_runs_from_the_first_task_not_from_the_start():
    c, clock = coordinator(quorum=0.5)
    clock.now = 8.0  # the parties connect late: the aggregator started first
    for party in PARTIES[:2]:
        assert c.task_for(party).kind is TaskKind.FIT
        c.accept(party, Phase.FIT, 1, "update")
    clock.now = 12.0  # a deadline after the start, but not after the first task
    assert not c.ready() and not c.expired_without_quorum()
    assert c.seconds_to_deadline() == 6.0
    clock.now = 18.0
    assert c.ready()
    assert list(c.close_phase()) == PARTIES[:2]


def test_the_evaluation_deadline_also_runs_from_its_first_task():
    c, clock = coordinator(quorum=0.5)
    for party in PARTIES:
        c.task_for(party)
        c.accept(party, Phase.FIT, 1, "update")
    c.close_phase()
    clock.now = 9.0
    assert c.task_for("party-0").kind is TaskKind.EVALUATE
    c.accept("party-0", Phase.EVALUATE, 1, "scores")
    c.accept("party-1", Phase.EVALUATE, 1, "scores")
    clock.now = 15.0
    assert not c.ready()
    clock.now = 19.0
    assert c.ready()


def test_a_phase_no_party_takes_up_still_expires():
    c, clock = coordinator()
    clock.now = DEADLINE
    assert c.expired_without_quorum()
    c.restart_phase()
    assert (c.attempt, c.expired_without_quorum()) == (1, False)
    clock.now = 2 * DEADLINE
    assert c.expired_without_quorum()


def test_a_party_unseen_for_a_deadline_is_gone():
    c, clock = coordinator()
    c.task_for("party-0")
    clock.now = 5.0
    c.task_for("party-1")
    assert c.recently_seen() == {"party-0", "party-1"}
    clock.now = 12.0
    assert c.recently_seen() == {"party-1"}
    clock.now = 15.5
    assert c.recently_seen() == frozenset()


def test_after_the_last_round_there_is_no_deadline():
    c, clock = coordinator()
    for _ in range(2):
        for party in PARTIES:
            c.task_for(party)
            c.accept(party, c.phase, c.round, "reply")
        c.close_phase()
        for party in PARTIES:
            c.task_for(party)
            c.accept(party, c.phase, c.round, "reply")
        c.close_phase()
    assert c.phase is Phase.DONE
    clock.now = 1e9
    assert not c.ready() and not c.expired_without_quorum()
