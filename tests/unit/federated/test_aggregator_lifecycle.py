"""The aggregator's durability and its end: what the audit log announces is already in the
sealed checkpoint (so a crash right after loses nothing announced), and a finished
federation waits for the parties still around, not for one gone for a whole deadline."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from enclaverec.arrays import ModelUpdate, sparsify
from enclaverec.data.schema import FeatureSpec
from enclaverec.federated.aggregator import AuditLog, FederatedAggregator
from enclaverec.federated.checkpoint import SEALING_LABEL, load_checkpoint
from enclaverec.federated.config import FederatedPlan, FederationConfig, ModelKind
from enclaverec.federated.rounds import Phase, SelectionConfig, TaskKind
from enclaverec.federated.setup import init_federation
from enclaverec.federated.strategies import LocalTraining, StrategyConfig
from enclaverec.federated.wire import Evaluation
from enclaverec.paramservice.service import PushedUpdate
from enclaverec.roles.aggregator import make_aggregator
from enclaverec.tee.kinds import TEEKind
from enclaverec.tee.role_setup import role_backend
from enclaverec.transport.server import ListenConfig

PARTIES = ["party-0", "party-1"]
DEADLINE = 10.0
SPEC = FeatureSpec(dense_names=("d0", "d1"), categorical_names=("c0",), table_sizes=(5,))


def plan(rounds: int = 1) -> FederatedPlan:
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
        selection=SelectionConfig(deadline_seconds=DEADLINE),
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_audit_log_announces_only_what_is_sealed(tmp_path):
    files = init_federation(
        tmp_path / "federation",
        parties=1,
        plan=plan(),
        tee=TEEKind.SIMULATED,
        parties_attest=True,
        max_rows={"party-0": 100},
    )
    aggregator = make_aggregator(
        files.federation_toml, state_dir=files.aggregator_dir, listen=ListenConfig()
    )
    config = FederationConfig.load(files.federation_toml)
    sealing_key = role_backend(
        "aggregator", config.tee, config.raw, config.simulation_dir
    ).sealing_key(SEALING_LABEL)
    sealed_at_announcement: dict[str, tuple[int, int]] = {}

    class CheckingAudit(AuditLog):
        def write(self, event, **fields):
            if event in ("aggregated", "round_completed"):
                state = load_checkpoint(files.aggregator_dir, sealing_key, aggregator.layout)
                assert state is not None, f"{event} announced before any checkpoint"
                sealed_at_announcement[event] = (state.aggregated_round, state.completed_round)
            super().write(event, **fields)

    aggregator.audit = CheckingAudit(aggregator.audit.path)
    zeros = {
        name: np.zeros(spec.shape, spec.dtype) for name, spec in aggregator.layout.specs.items()
    }
    update = sparsify(zeros, aggregator.layout, 8)
    aggregator._aggregate(1, {"party-0": PushedUpdate("party-0", 1, update, 0.6, 0.1, 100)})
    scores = np.array([0.2, 0.7, 0.4, 0.9], np.float32)
    labels = np.array([0.0, 1.0, 0.0, 1.0], np.float32)
    aggregator._evaluate(
        1, {"party-0": Evaluation(scores, labels, scores, labels, np.arange(4, dtype=np.int64))}
    )

    assert sealed_at_announcement == {"aggregated": (1, 0), "round_completed": (1, 1)}


@pytest.fixture
def done_aggregator(tmp_path):
    """A plaintext-baseline aggregator whose one round is over (replies handed to the
    coordinator directly: only the end of the federation is under test)."""
    files = init_federation(
        tmp_path / "federation",
        parties=2,
        plan=plan(),
        tee=TEEKind.NONE,
        parties_attest=False,
        max_rows=dict.fromkeys(PARTIES, 100),
    )
    clock = FakeClock()
    aggregator = FederatedAggregator(
        FederationConfig.load(files.federation_toml),
        backend=None,
        state_dir=files.aggregator_dir,
        listen=ListenConfig(),
        clock=clock,
    )
    coordinator = aggregator.coordinator
    for phase in (Phase.FIT, Phase.EVALUATE):
        for party in PARTIES:
            coordinator.task_for(party)
            coordinator.accept(party, phase, 1, ModelUpdate(dense={}))
        coordinator.close_phase()
    assert coordinator.phase is Phase.DONE
    return aggregator, clock


def run_in_thread(aggregator: FederatedAggregator) -> threading.Thread:
    thread = threading.Thread(target=aggregator.run, daemon=True)
    thread.start()
    return thread


def test_a_finished_federation_does_not_wait_for_a_party_gone_for_a_deadline(done_aggregator):
    aggregator, clock = done_aggregator
    clock.now = 3 * DEADLINE  # party-1 was last seen at 0: it crashed
    assert aggregator.task_now("party-0")[0].kind is TaskKind.FINISHED
    aggregator.mark_finished("party-0")

    thread = run_in_thread(aggregator)
    thread.join(10)
    assert not thread.is_alive()


def test_a_finished_federation_waits_for_a_party_still_around(done_aggregator):
    aggregator, clock = done_aggregator
    clock.now = DEADLINE / 2
    assert aggregator.task_now("party-0")[0].kind is TaskKind.FINISHED
    aggregator.mark_finished("party-0")

    thread = run_in_thread(aggregator)
    thread.join(1.0)
    assert thread.is_alive()  # party-1 was seen recently: it may still fetch the model
    aggregator.mark_finished("party-1")
    thread.join(10)
    assert not thread.is_alive()
