from __future__ import annotations

import pytest

from enclaverec.errors import AggregationRefusedError, ConfigError
from enclaverec.federated.rounds import Phase, RoundCoordinator, SelectionConfig, TaskKind

PARTIES = ["party-0", "party-1", "party-2", "party-3"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def coordinator(**selection) -> tuple[RoundCoordinator[str], FakeClock]:
    clock = FakeClock()
    config = SelectionConfig(deadline_seconds=10.0, **selection)
    return RoundCoordinator(PARTIES, 2, config, seed=1, clock=clock), clock


def fit_all(c: RoundCoordinator[str], parties=None) -> None:
    for party in parties or sorted(c.selected):
        assert c.task_for(party).kind is TaskKind.FIT
        c.accept(party, Phase.FIT, c.round, f"update-{party}")


def test_every_party_every_round_by_default():
    c, _ = coordinator()
    assert c.selected == frozenset(PARTIES)
    fit_all(c)
    assert c.ready()
    replies = c.close_phase()
    assert list(replies) == PARTIES
    assert c.phase is Phase.EVALUATE
    for party in PARTIES:
        assert c.task_for(party).kind is TaskKind.EVALUATE
        c.accept(party, Phase.EVALUATE, 1, "scores")
    c.close_phase()
    assert (c.round, c.phase) == (2, Phase.FIT)


def test_finishes_after_the_last_round():
    c, _ = coordinator()
    for _ in range(2):
        fit_all(c)
        c.close_phase()
        for party in PARTIES:
            c.accept(party, Phase.EVALUATE, c.round, "scores")
        c.close_phase()
    assert c.phase is Phase.DONE
    assert c.task_for("party-0").kind is TaskKind.FINISHED


def test_fraction_selects_a_seeded_subset_with_a_minimum():
    c, _ = coordinator(fraction=0.25, min_parties=2)
    assert len(c.selected) == 2
    again, _ = coordinator(fraction=0.25, min_parties=2)
    assert again.selected == c.selected
    unselected = next(p for p in PARTIES if p not in c.selected)
    assert c.task_for(unselected).kind is TaskKind.WAIT
    with pytest.raises(AggregationRefusedError, match="not selected"):
        c.accept(unselected, Phase.FIT, 1, "update")


def test_a_dropped_party_does_not_stall_the_round_when_the_quorum_replied():
    c, clock = coordinator(quorum=0.75)
    fit_all(c, PARTIES[:3])
    assert not c.ready()  # before the deadline, it waits for the straggler
    clock.now = 10.0
    assert c.ready()
    assert list(c.close_phase()) == PARTIES[:3]


def test_without_quorum_at_the_deadline_the_round_restarts_among_live_parties():
    c, clock = coordinator(quorum=1.0)
    fit_all(c, PARTIES[:2])
    clock.now = 10.0
    assert not c.ready() and c.expired_without_quorum()
    c.restart_phase()
    # Only the parties seen in the last deadline are selected now.
    assert c.selected == frozenset(PARTIES[:2])
    assert c.attempt == 1
    fit_all(c, PARTIES[:2])
    assert c.ready()


def test_refuses_an_update_for_a_past_round():
    c, _ = coordinator()
    fit_all(c)
    c.close_phase()
    with pytest.raises(
        AggregationRefusedError,
        match="round 1 refused: the federation is in round 1, phase evaluate",
    ):
        c.accept("party-0", Phase.FIT, 1, "late update")
    for party in PARTIES:
        c.accept(party, Phase.EVALUATE, 1, "scores")
    c.close_phase()
    with pytest.raises(
        AggregationRefusedError, match="for round 1 refused: the federation is in round 2"
    ):
        c.accept("party-0", Phase.FIT, 1, "stale update")


def test_refuses_a_future_round_a_second_reply_and_a_stranger():
    c, _ = coordinator()
    with pytest.raises(AggregationRefusedError, match="round 2 refused"):
        c.accept("party-0", Phase.FIT, 2, "early")
    c.accept("party-0", Phase.FIT, 1, "first")
    with pytest.raises(AggregationRefusedError, match="already replied"):
        c.accept("party-0", Phase.FIT, 1, "second")
    with pytest.raises(AggregationRefusedError, match="not a member"):
        c.accept("mallory", Phase.FIT, 1, "update")
    with pytest.raises(AggregationRefusedError, match="not a member"):
        c.task_for("mallory")


def test_resumes_at_a_later_round():
    clock = FakeClock()
    c = RoundCoordinator(PARTIES, 5, SelectionConfig(), start_round=4, clock=clock)
    assert (c.round, c.phase) == (4, Phase.FIT)
    done = RoundCoordinator(PARTIES, 5, SelectionConfig(), start_round=6, clock=clock)
    assert done.phase is Phase.DONE


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fraction": 0.0},
        {"fraction": 1.5},
        {"min_parties": 0},
        {"quorum": 0.0},
        {"deadline_seconds": 0},
    ],
)
def test_refuses_bad_selection_config(kwargs):
    with pytest.raises(ConfigError):
        SelectionConfig(**kwargs)


def test_refuses_min_parties_above_membership():
    with pytest.raises(ConfigError, match="min_parties is 5"):
        RoundCoordinator(PARTIES, 1, SelectionConfig(min_parties=5))


def test_a_refused_reply_ends_the_party_s_turn_without_stalling_the_round():
    c, _ = coordinator(quorum=0.5)
    c.task_for("party-0")
    c.mark_refused("party-0", Phase.FIT, 1)
    # It is not asked to train again in this phase (it would only be refused again) ...
    assert c.task_for("party-0").kind is TaskKind.WAIT
    # ... and the phase closes as soon as everyone else answered, with the quorum.
    fit_all(c, PARTIES[1:])
    assert c.ready()
    assert list(c.close_phase()) == PARTIES[1:]


def test_everyone_refused_restarts_the_phase_at_the_deadline():
    c, clock = coordinator()
    for party in PARTIES:
        c.task_for(party)
        c.mark_refused(party, Phase.FIT, 1)
    assert not c.ready() and not c.expired_without_quorum()
    clock.now = 10.0
    assert c.expired_without_quorum()


def test_a_refusal_for_another_round_is_ignored():
    c, _ = coordinator()
    c.mark_refused("party-0", Phase.FIT, 7)
    assert c.task_for("party-0").kind is TaskKind.FIT
