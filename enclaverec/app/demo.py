"""The demo: every mode that exists trains on one data set with one seed and is scored on
the same test split; :func:`run_demo` returns each mode's report and writes ``report.md``,
``report.json`` and each mode's own folder.

A mode is one :class:`DemoMode` in :data:`MODES`: a folder name and a runner that gets the
shared :class:`DemoContext` and the mode's folder and returns its validated metrics
report. Adding a row to the demo is adding one entry (the distributed mode joins here,
calling its own library function as the federated rows call :func:`simulate_federation`).

Each mode's folder is marked as the demo's own (:data:`enclaverec.app.outputs.DEMO_MARK`);
a rerun replaces only marked folders and stops, before any training, at a folder it did
not make.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enclaverec.app.centralized import CentralizedJob, run_centralized
from enclaverec.app.data import DataConfig, load_data
from enclaverec.app.events import JobEvents, QuietEvents
from enclaverec.app.federation import (
    FederationSetup,
    SimulationConfig,
    simulate_federation,
)
from enclaverec.app.outputs import check_demo_folder, claim_demo_folder
from enclaverec.tee.kinds import TEEKind

if TYPE_CHECKING:
    from enclaverec.data.schema import DataSet

DEMO_DATASET = "movielens-100k"
DEMO_SEED = 0
DEMO_PARTIES = 4
DEMO_PARTITION = "iid"
DEMO_WORKERS = 2
DEFAULT_OUTPUT = Path("runs") / "demo"


@dataclass(frozen=True)
class DemoConfig:
    """Where the demo writes; the data set, seed and federation are the demo's own."""

    output: Path = DEFAULT_OUTPUT
    dataset: str = DEMO_DATASET
    seed: int = DEMO_SEED
    parties: int = DEMO_PARTIES


@dataclass(frozen=True)
class DemoContext:
    """What every mode of the demo shares: the loaded data set, the seed, the number of
    parties (or workers), and how to report progress."""

    dataset: DataSet
    seed: int
    parties: int
    events: JobEvents

    @property
    def data(self) -> DataConfig:
        return DataConfig.builtin(self.dataset.name, seed=self.seed)


ModeRunner = Callable[[DemoContext, Path], dict[str, Any]]


@dataclass(frozen=True)
class DemoMode:
    """One row of the demo: its folder under the output, and its runner."""

    folder: str
    runner: ModeRunner


def centralized_mode(context: DemoContext, folder: Path) -> dict[str, Any]:
    """The plaintext baseline: the DLRM trained on one machine, no TEE."""
    job = CentralizedJob(data=context.data, output=folder, overwrite=True)
    return run_centralized(job, dataset=context.dataset, events=context.events).metrics()


def _federated(context: DemoContext, folder: Path, tee: TEEKind) -> dict[str, Any]:
    config = SimulationConfig(
        setup=FederationSetup(data=context.data, parties=context.parties, partition=DEMO_PARTITION),
        output=folder,
        tee=tee,
        # The folder is the demo's own (marked): its previous run's files are replaced.
        overwrite=True,
    )
    return simulate_federation(config, dataset=context.dataset, events=context.events).metrics()


def federated_mode(context: DemoContext, folder: Path) -> dict[str, Any]:
    """Horizontal federated learning: parties (IID) and an aggregator, each its own
    process, the aggregator and parties in simulated enclaves with attested channels."""
    return _federated(context, folder, TEEKind.SIMULATED)


def federated_baseline_mode(context: DemoContext, folder: Path) -> dict[str, Any]:
    """The same federation over plaintext loopback, no TEE: the price of security is the
    difference to the row above."""
    return _federated(context, folder, TEEKind.NONE)


def _distributed(context: DemoContext, folder: Path, tee: TEEKind) -> dict[str, Any]:
    from enclaverec.app.distributed import (
        DistributedSimulationConfig,
        PlanOptions,
        simulate_distributed,
    )

    config = DistributedSimulationConfig(
        data=context.data,
        plan=PlanOptions(workers=DEMO_WORKERS),
        output=folder,
        tee=tee,
        overwrite=True,  # the folder is the demo's own (marked)
    )
    result = simulate_distributed(config, dataset=context.dataset, events=context.events)
    return dict(result.metrics)


def distributed_mode(context: DemoContext, folder: Path) -> dict[str, Any]:
    """Secure distributed training: the owner's data encrypted into worker shards, a key
    broker, a parameter server and workers in simulated enclaves, synchronous steps
    (``train``'s global batches), each role its own process."""
    return _distributed(context, folder, TEEKind.SIMULATED)


def distributed_baseline_mode(context: DemoContext, folder: Path) -> dict[str, Any]:
    """The same job over plaintext loopback, no TEE."""
    return _distributed(context, folder, TEEKind.NONE)


# The demo's rows, in order.
MODES: tuple[DemoMode, ...] = (
    DemoMode("centralized", centralized_mode),
    DemoMode("federated-simulated", federated_mode),
    DemoMode("federated-none", federated_baseline_mode),
    DemoMode("distributed-simulated", distributed_mode),
    DemoMode("distributed-none", distributed_baseline_mode),
)

NOTES = (
    "tee none is the plaintext measurement baseline, not a deployment mode.",
    "Each mode's full metrics are in its own folder's metrics.json.",
)

# What under the demo's folder must not leave this machine, by file name pattern (found by
# looking, so a mode that joins the demo is covered by what it writes).
SECRET_PATTERNS = (
    ("simulation/keys/*", "keys of the simulated TEE deployment (they make SIMULATED quotes, "
     "certificates and sealing keys: whoever holds them can impersonate the enclaves)"),
    ("*.key", "private keys (party identities, encrypted under the passphrase beside them)"),
    ("*.pass", "passphrases of those keys"),
    ("*.sealed", "sealed enclave state (keys, checkpoints), open to whoever holds the "
     "simulated deployment's keys"),
    ("*/data/*.npz", "each party's plaintext share of the data set"),
)  # fmt: skip
MAX_LISTED = 6


def secrets_section(output: Path) -> list[str]:
    """The report's list of secret files under ``output`` (relative paths), and why the
    demo's folder is for this machine only."""
    lines = [
        "The demo's folder is for this machine only: it holds the simulated deployment's "
        "keys and the parties' identities and data shares, in plain files. Do not copy it, "
        "commit it or share it; a rerun replaces it. Nothing in it is hardware-backed.",
        "",
    ]
    claimed: set[Path] = set()
    for pattern, why in SECRET_PATTERNS:
        found = sorted(p for p in output.rglob(pattern) if p.is_file() and p not in claimed)
        claimed.update(found)
        if not found:
            continue
        shown = [f"`{p.relative_to(output)}`" for p in found[:MAX_LISTED]]
        more = f" and {len(found) - MAX_LISTED} more" if len(found) > MAX_LISTED else ""
        lines.append(f"- {why}: {', '.join(shown)}{more}")
    return lines


@dataclass(frozen=True)
class DemoResult:
    """Each mode's metrics report, in the order of :data:`MODES`, and the report files."""

    runs: tuple[dict[str, Any], ...]
    markdown: Path
    json: Path
    title: str


def run_demo(
    config: DemoConfig,
    *,
    modes: Sequence[DemoMode] | None = None,
    events: JobEvents | None = None,
) -> DemoResult:
    """Run every mode on the same data and seed and write the comparison report.

    Raises:
        OutputFolderError: a mode's folder holds files the demo did not make (checked for
            every mode before the first one runs).
    """
    from enclaverec.report import write_comparison_report

    events = events or QuietEvents()
    modes = MODES if modes is None else tuple(modes)
    for mode in modes:
        check_demo_folder(config.output / mode.folder)
    events.note(f"demo: {config.dataset}, seed {config.seed}, results in {config.output}")
    dataset = load_data(DataConfig.builtin(config.dataset, seed=config.seed))
    context = DemoContext(dataset=dataset, seed=config.seed, parties=config.parties, events=events)
    runs = []
    for mode in modes:
        events.section(mode.folder)
        runs.append(mode.runner(context, claim_demo_folder(config.output / mode.folder)))
    title = f"enclaverec demo: {config.dataset}"
    markdown, json_path = write_comparison_report(
        config.output,
        runs,
        title=title,
        notes=NOTES,
        folders=[mode.folder for mode in modes],
        sections=[("Secrets under this folder", secrets_section(config.output))],
    )
    return DemoResult(runs=tuple(runs), markdown=markdown, json=json_path, title=title)
