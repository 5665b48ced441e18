"""``enclaverec bench robustness``: what one malicious member does to the model honest
parties export, for each defence (issue 9).

Every cell is a real federation: ``init`` writes it (simulated TEE, parties attest), the
aggregator and every party run in threads of this process and talk over loopback gRPC with
mutual TLS, each party trains the DLRM on its own IID share. The last party is malicious;
its behaviour lives here only (a wrapper around its trainer), never in the production
party:

- ``scaled``: its update is the honest one times ``scale`` (explicit boosting, Bhagoji et
  al. 2019), and it claims 2**62 training rows;
- ``sign-flip``: its update is minus the honest one, with the same claim;
- ``lying-evaluation``: it trains honestly but scores the round-1 model perfectly and every
  later model as badly as it can (AUC 0), to make the worst model "best".

The figure is the test AUC of the best model an honest party (party-0) received and
exported as a SavedModel, scored by the library functions ``enclaverec evaluate`` calls
(``SavedDLRM.predict`` and ``binary_metrics``) on the data set's whole test split. Beside
each defence: the federation of its honest parties alone (the same shares, the malicious
one left out).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from enclaverec.app.data import DataConfig, load_data
from enclaverec.app.events import JobEvents, QuietEvents, quiet_loggers
from enclaverec.app.federation import FederationPlanConfig, FederationSetup, build_plan
from enclaverec.errors import ConfigError, TrainingError
from enclaverec.federated.strategies import DEFAULT_STRATEGY

DEFAULT_DATASETS = ("movielens-100k", "synthetic")
DEFAULT_ROUNDS = 5
DEFAULT_SCALE = 100.0
CLAIMED_ROWS = 2**62
HONEST_ONLY = "honest-only"
WAIT_SECONDS = 1800.0


class Attack(enum.Enum):
    SCALED = "scaled"
    SIGN_FLIP = "sign-flip"
    LYING_EVALUATION = "lying-evaluation"


@dataclass(frozen=True)
class Defence:
    """A strategy as the plan names it, with the parties its row of the table uses."""

    label: str
    strategy: str
    parties: int


DEFENCES = (
    Defence("defaults (fedavg, median-norm clipping)", DEFAULT_STRATEGY, 4),
    Defence("median", "median", 4),
    Defence("trimmed mean (beta 0.25)", "trimmed-mean:0.25", 4),
    Defence("krum (f = 1)", "krum:1", 6),
)
COLUMNS = (HONEST_ONLY, *(attack.value for attack in Attack))


@dataclass(frozen=True)
class RobustnessConfig:
    datasets: tuple[str, ...] = DEFAULT_DATASETS
    defences: tuple[Defence, ...] = DEFENCES
    attacks: tuple[Attack, ...] = tuple(Attack)
    rounds: int = DEFAULT_ROUNDS
    scale: float = DEFAULT_SCALE
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.datasets or not self.defences:
            raise ConfigError("the benchmark needs at least one data set and one defence")
        if not 1 <= self.rounds <= 100:
            raise ConfigError(f"--rounds must be between 1 and 100, got {self.rounds}")
        if not (np.isfinite(self.scale) and self.scale > 1):
            raise ConfigError(f"--scale must be a finite number above 1, got {self.scale}")
        for defence in self.defences:
            if defence.parties < 2:
                raise ConfigError(f"{defence.label}: needs at least 2 parties")
            # The honest-only federation has one party fewer: it must still be valid.
            FederationPlanConfig(strategy=defence.strategy).strategy_config().check_parties(
                defence.parties - 1
            )


# --- the malicious member (benchmark harness only) ---------------------------------------


class MaliciousTrainer:
    """Wraps a party's real trainer and turns what it sends into an attack."""

    def __init__(self, inner: Any, attack: Attack, scale: float) -> None:
        self.inner, self.attack, self.scale = inner, attack, scale
        self.round = 0

    def initial_arrays(self) -> Any:
        return self.inner.initial_arrays()

    def fit(self, arrays: Mapping[str, np.ndarray], config: Any, *, on_steps: Any = None):
        trained, metrics = self.inner.fit(arrays, config, on_steps=on_steps)
        self.round = config.round_index
        if self.attack is Attack.LYING_EVALUATION:
            return trained, metrics
        factor = self.scale if self.attack is Attack.SCALED else -1.0
        poisoned = {
            name: (arrays[name] + factor * (trained[name] - arrays[name])).astype(
                arrays[name].dtype
            )
            for name in trained
        }
        claimed = CLAIMED_ROWS * max(1, config.epochs)  # the party divides by its epochs
        return poisoned, dataclasses.replace(metrics, samples=claimed)

    def predict(self, arrays: Mapping[str, np.ndarray], examples: Any) -> np.ndarray:
        if self.attack is not Attack.LYING_EVALUATION:
            return self.inner.predict(arrays, examples)
        labels = np.asarray(examples.labels, np.float32)
        if self.round <= 1:
            return labels * 0.98 + 0.01  # the round-1 model: "perfect"
        return (1.0 - labels) * 0.98 + 0.01  # every later one: "worthless"


# --- one federation ------------------------------------------------------------------------


@dataclass(frozen=True)
class CellResult:
    dataset: str
    defence: str
    column: str
    parties: int
    test_auc: float
    best_round: int
    federation_test_auc: float
    wall_seconds: float


def _run_federation(
    root: Path,
    plan: Any,
    shares: Sequence[Any],
    dataset: Any,
    attack: Attack | None,
    scale: float,
) -> tuple[float, int, float]:
    """One federation of ``shares`` (the last one malicious with ``attack``); the test AUC
    of party-0's exported best model, its round, and the aggregator's best test AUC."""
    from enclaverec.evaluation import binary_metrics
    from enclaverec.federated.party import PartyOptions
    from enclaverec.federated.setup import init_federation
    from enclaverec.federated.simulate import free_ports
    from enclaverec.roles.aggregator import make_aggregator
    from enclaverec.roles.party import (
        default_trainer_factory,
        export_best_model,
        make_party_session,
        run_party,
    )
    from enclaverec.tee.kinds import TEEKind
    from enclaverec.transport.server import ListenConfig

    port, enrollment_port = free_ports(2)
    files = init_federation(
        root / "federation",
        parties=len(shares),
        plan=plan,
        tee=TEEKind.SIMULATED,
        parties_attest=True,
        party_data=shares,
        port=port,
        enrollment_port=enrollment_port,
    )
    aggregator = make_aggregator(
        files.federation_toml,
        state_dir=files.aggregator_dir,
        listen=ListenConfig(application_port=port, enrollment_port=enrollment_port),
    )
    honest = default_trainer_factory()

    def malicious(plan_: Any, data: Any) -> MaliciousTrainer:
        assert attack is not None
        return MaliciousTrainer(honest(plan_, data), attack, scale)

    outcomes: dict[str, Any] = {}

    def role(name: str, action: Any) -> threading.Thread:
        def body() -> None:
            try:
                outcomes[name] = action()
            except BaseException as exc:  # noqa: BLE001 - reported after join
                outcomes[name] = exc

        thread = threading.Thread(target=body, name=name, daemon=True)
        thread.start()
        return thread

    threads = [role("aggregator", aggregator.run)]
    options = PartyOptions(reconnect_seconds=120.0, poll_seconds=5.0)
    for index, config in enumerate(files.party_configs):
        factory = malicious if attack is not None and index == len(shares) - 1 else honest
        setup = make_party_session(config, aggregator_port=port)
        threads.append(role(f"party-{index}", lambda s=setup, f=factory: run_party(s, f, options)))
    for thread in threads:
        thread.join(WAIT_SECONDS)
        if thread.is_alive():
            raise TrainingError(f"{thread.name} did not finish within {WAIT_SECONDS:.0f} s")
    for name, outcome in outcomes.items():
        if isinstance(outcome, BaseException):
            raise TrainingError(f"{name} failed: {outcome}") from outcome
    summary, party = outcomes["aggregator"], outcomes["party-0"]
    exported = export_best_model(party, root / "party-0-model")
    from enclaverec.model.export import SavedDLRM

    scores = binary_metrics(dataset.test.labels, SavedDLRM(exported).predict(dataset.test))
    return scores.auc, int(party.best_round), float(summary["best_test"]["test_auc"])


def run_robustness(
    config: RobustnessConfig, work: Path, *, events: JobEvents | None = None
) -> dict[str, Any]:
    """Every (data set, defence, column) federation of ``config``, run in ``work``."""
    from enclaverec.data.partition import partition_dataset

    events = events or QuietEvents()
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    cells: list[CellResult] = []
    # The roles' per-round info lines stay out of the table's way (warnings still show).
    with quiet_loggers(("enclaverec", "grpc")):
        for name in config.datasets:
            data_config = DataConfig.builtin(name, seed=config.seed)
            dataset = load_data(data_config, progress=False)
            for defence in config.defences:
                shares = partition_dataset(
                    dataset, parties=defence.parties, mode="iid", seed=config.seed
                )
                columns: list[tuple[str, Attack | None]] = [(HONEST_ONLY, None)]
                columns += [(attack.value, attack) for attack in config.attacks]
                for column, attack in columns:
                    members = shares if attack is not None else shares[:-1]
                    setup = FederationSetup(
                        data=data_config,
                        parties=len(members),
                        plan=FederationPlanConfig(rounds=config.rounds, strategy=defence.strategy),
                    )
                    plan = build_plan(setup, dataset, members)
                    root = work / name / defence.strategy.replace(":", "-") / column
                    begin = time.perf_counter()
                    auc, best, federation_auc = _run_federation(
                        root, plan, members, dataset, attack, config.scale
                    )
                    cell = CellResult(
                        name,
                        defence.label,
                        column,
                        len(members),
                        auc,
                        best,
                        federation_auc,
                        time.perf_counter() - begin,
                    )
                    cells.append(cell)
                    events.note(
                        f"{name} / {defence.label} / {column}: test AUC {auc:.4f} "
                        f"(best round {best}, {cell.wall_seconds:.0f} s)"
                    )
    return {
        "benchmark": "robustness",
        "rounds": config.rounds,
        "scale": config.scale,
        "claimed_rows": CLAIMED_ROWS,
        "seed": config.seed,
        "cells": [dataclasses.asdict(cell) for cell in cells],
        "gaps": gaps(cells),
        "wall_seconds": time.perf_counter() - started,
        "environment": {
            "cpu_count": os.cpu_count(),
            "load_average_1min_before": load_before,
            "load_average_1min_after": os.getloadavg()[0],
        },
    }


def gaps(cells: Sequence[CellResult]) -> list[dict[str, Any]]:
    """Each attacked cell's AUC minus its honest-only AUC (same data set and defence)."""
    honest = {(c.dataset, c.defence): c.test_auc for c in cells if c.column == HONEST_ONLY}
    return [
        {
            "dataset": c.dataset,
            "defence": c.defence,
            "attack": c.column,
            "auc_minus_honest_only": c.test_auc - honest[(c.dataset, c.defence)],
        }
        for c in cells
        if c.column != HONEST_ONLY and (c.dataset, c.defence) in honest
    ]
