"""The aggregator's round bookkeeping, without I/O: who is selected, what each party should
do next, which replies are accepted, and when a round is ready to aggregate.

A round has two phases. FIT: the selected parties train from the broadcast model and send
updates; the phase closes when every selected party replied, or at the deadline if the
quorum replied (a straggler or a dropped party never stalls the federation; if even the
quorum is missing at the deadline the phase restarts with a fresh selection among the
parties seen alive). EVALUATE: every live party scores the new global model on its
validation and test rows; it closes when all replied or at the deadline. Replies for
another round or phase are refused, never merged into the wrong model.

A phase's deadline runs from the moment it hands out its first task (or accepts its first
reply), not from when it began: an aggregator that starts, or restarts, before its parties
connect does not spend the round's deadline waiting for them. A phase that no party takes
up still expires a deadline after it began, and counts against the aggregator's attempts.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from enclaverec.errors import AggregationRefusedError, ConfigError

Clock = Callable[[], float]
Reply = TypeVar("Reply")


class Phase(enum.Enum):
    FIT = "fit"
    EVALUATE = "evaluate"
    DONE = "done"


class TaskKind(enum.Enum):
    FIT = "fit"
    EVALUATE = "evaluate"
    WAIT = "wait"
    FINISHED = "finished"


@dataclass(frozen=True)
class Task:
    kind: TaskKind
    round: int
    attempt: int = 0


@dataclass(frozen=True)
class SelectionConfig:
    """Party selection per round (a fraction of the parties, at least ``min_parties``),
    the round deadline, and the quorum: the fraction of the selected parties whose
    updates suffice once the deadline has passed."""

    fraction: float = 1.0
    min_parties: int = 1
    quorum: float = 1.0
    deadline_seconds: float = 600.0

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"selection fraction must be in (0, 1], got {self.fraction}")
        if self.min_parties < 1:
            raise ConfigError(f"min_parties must be at least 1, got {self.min_parties}")
        if not 0.0 < self.quorum <= 1.0:
            raise ConfigError(f"quorum must be in (0, 1], got {self.quorum}")
        if self.deadline_seconds <= 0:
            raise ConfigError(f"the round deadline must be positive, got {self.deadline_seconds}")


@dataclass
class _PhaseState(Generic[Reply]):
    expected: frozenset[str]
    began: float
    taken_up: float | None = None  # its first task handed out, or first reply
    replies: dict[str, Reply] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)  # sent a reply the pre-check refused

    @property
    def answered(self) -> int:
        return len(self.replies) + len(self.refused)


class RoundCoordinator(Generic[Reply]):
    """Rounds 1..``rounds``; ``Reply`` is whatever the caller stores per party (updates in
    FIT, evaluations in EVALUATE)."""

    def __init__(
        self,
        parties: Sequence[str],
        rounds: int,
        selection: SelectionConfig,
        *,
        seed: int = 0,
        start_round: int = 1,
        clock: Clock = time.monotonic,
    ) -> None:
        if not parties:
            raise ConfigError("a federation needs at least one party")
        if selection.min_parties > len(parties):
            raise ConfigError(
                f"min_parties is {selection.min_parties} but the federation has {len(parties)}"
            )
        if rounds < 1:
            raise ConfigError(f"rounds must be at least 1, got {rounds}")
        self.parties = tuple(parties)
        self.rounds = rounds
        self.selection = selection
        self.seed = seed
        self.clock = clock
        self.round = start_round
        self.attempt = 0
        self.last_seen: dict[str, float] = {}
        self.phase = Phase.DONE if start_round > rounds else Phase.FIT
        self._state: _PhaseState[Reply] = _PhaseState(frozenset(), math.inf)  # no deadline
        if self.phase is Phase.FIT:
            self._begin_fit()

    # --- selection ---------------------------------------------------------------------

    def recently_seen(self) -> frozenset[str]:
        """Parties seen within the last deadline. One not seen for a whole deadline is
        treated as gone: selection skips it when it restarts a phase, and a finished
        federation does not wait for it to fetch the final model."""
        horizon = self.clock() - self.selection.deadline_seconds
        return frozenset(p for p, seen in self.last_seen.items() if seen >= horizon)

    def _live_parties(self) -> list[str]:
        """Parties seen within the last deadline; all parties before anyone was seen."""
        seen = self.recently_seen()
        live = [p for p in self.parties if p in seen]
        return live if len(live) >= self.selection.min_parties else list(self.parties)

    def _select(self) -> frozenset[str]:
        candidates = self._live_parties() if self.attempt else list(self.parties)
        count = max(
            self.selection.min_parties, math.ceil(self.selection.fraction * len(candidates))
        )
        count = min(count, len(candidates))
        rng = np.random.default_rng([self.seed, self.round, self.attempt])
        chosen = rng.choice(len(candidates), size=count, replace=False)
        return frozenset(candidates[i] for i in sorted(chosen))

    def _begin_fit(self) -> None:
        self.phase = Phase.FIT
        self._state = _PhaseState(self._select(), self.clock())

    def _begin_evaluate(self) -> None:
        self.phase = Phase.EVALUATE
        self._state = _PhaseState(frozenset(self._live_parties()), self.clock())

    def _taken_up(self) -> None:
        if self._state.taken_up is None:
            self._state.taken_up = self.clock()

    @property
    def deadline(self) -> float:
        """When the current phase's deadline passes (on the coordinator's clock)."""
        state = self._state
        start = state.began if state.taken_up is None else state.taken_up
        return start + self.selection.deadline_seconds

    def skip_to_evaluation(self) -> None:
        """Resume a round whose FIT phase closed before a restart: evaluate it now."""
        if self.phase is not Phase.FIT:
            raise AggregationRefusedError("only a round in its FIT phase can skip to evaluation")
        self._begin_evaluate()

    @property
    def replies(self) -> dict[str, Reply]:
        return dict(self._state.replies)

    @property
    def selected(self) -> frozenset[str]:
        return self._state.expected

    @property
    def quorum_count(self) -> int:
        return max(1, math.ceil(self.selection.quorum * len(self._state.expected)))

    # --- what a party should do --------------------------------------------------------

    def task_for(self, party: str) -> Task:
        self._known(party)
        self.last_seen[party] = self.clock()
        if self.phase is Phase.DONE:
            return Task(TaskKind.FINISHED, self.rounds)
        state = self._state
        if party in state.expected and party not in state.replies and party not in state.refused:
            self._taken_up()
            kind = TaskKind.FIT if self.phase is Phase.FIT else TaskKind.EVALUATE
            return Task(kind, self.round, self.attempt)
        return Task(TaskKind.WAIT, self.round, self.attempt)

    def _known(self, party: str) -> None:
        if party not in self.parties:
            raise AggregationRefusedError(f"{party} is not a member of this federation")

    # --- replies -----------------------------------------------------------------------

    def accept(self, party: str, phase: Phase, round_index: int, reply: Reply) -> None:
        """Store a reply, or refuse it: another round (past or future), another phase, a
        party that was not asked, or a second reply."""
        self._known(party)
        self.last_seen[party] = self.clock()
        if round_index != self.round or phase is not self.phase:
            raise AggregationRefusedError(
                f"{phase.value} reply from {party} for round {round_index} refused: "
                f"the federation is in round {self.round}, phase {self.phase.value}"
            )
        if party not in self._state.expected:
            raise AggregationRefusedError(
                f"{party} was not selected for the {phase.value} phase of round {self.round}"
            )
        if party in self._state.replies:
            raise AggregationRefusedError(f"{party} already replied in round {self.round}")

        self._taken_up()
        # A valid reply after a refused one still counts (the refusal only stopped the
        # party from being asked again).
        self._state.refused.discard(party)
        self._state.replies[party] = reply

    def mark_refused(self, party: str, phase: Phase, round_index: int) -> None:
        """A reply of ``party`` for this phase was refused (e.g. by the pre-check): its turn
        in this phase is over, so it is not asked to train (and be refused) again and
        again; the phase does not wait for it."""
        state = self._state
        if (
            round_index == self.round
            and phase is self.phase
            and party in state.expected
            and party not in state.replies
        ):
            state.refused.add(party)

    def ready(self) -> bool:
        """Whether the current phase can close now: every selected party answered (with
        the quorum among the accepted replies), or the deadline passed with the quorum."""
        if self.phase is Phase.DONE:
            return False
        state = self._state
        if len(state.replies) < self.quorum_count:
            return False
        return state.answered == len(state.expected) or self.clock() >= self.deadline

    def expired_without_quorum(self) -> bool:
        """The deadline passed without enough accepted replies. (A refused party may still
        send a valid reply before the deadline, so refusals alone never end a phase.)"""
        if self.phase is Phase.DONE or len(self._state.replies) >= self.quorum_count:
            return False
        return self.clock() >= self.deadline

    def restart_phase(self) -> None:
        """The deadline passed without a quorum: select again among the live parties.
        An evaluation phase with no reply at all is closed with none."""
        self.attempt += 1
        if self.phase is Phase.FIT:
            self._begin_fit()
        else:
            self._begin_evaluate()

    def close_phase(self) -> dict[str, Reply]:
        """Take the replies of the phase that is ready and move on."""
        if not self.ready():
            raise AggregationRefusedError("the phase is not ready to close")
        replies = dict(sorted(self._state.replies.items()))
        if self.phase is Phase.FIT:
            self._begin_evaluate()
        else:
            self.round += 1
            self.attempt = 0
            if self.round > self.rounds:
                self.phase = Phase.DONE
                self._state = _PhaseState(frozenset(), math.inf)
            else:
                self._begin_fit()
        return replies

    def seconds_to_deadline(self) -> float:
        return max(0.0, self.deadline - self.clock())
