"""Secure distributed training as an application: the job's plan from ``train``'s
presets (:func:`build_plan`), and ``distributed simulate`` (:func:`simulate_distributed`):
the owner (this process), the key broker, P parameter servers and W workers, each role its
own ``enclaverec distributed ...`` process on loopback.

The simulation does what an owner and a cluster operator would do, in order: make the
owner's key, encrypt the data set into W shards after ``train``'s split (so the test rows
are ``train``'s), write the job (``distributed init``), start the key broker, submit the
data key to it over RA-TLS, start the servers and the workers, follow the key broker's
audit log, fetch the result encrypted to the owner's key and decrypt it here. Nothing in
this module trains or aggregates.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enclaverec.app.centralized import CURVES_FILE
from enclaverec.app.data import DataConfig, load_data, synthetic_references
from enclaverec.app.events import JobEvents, QuietEvents
from enclaverec.app.outputs import check_output_folder, prepare_output_folder
from enclaverec.data.schema import DataSet
from enclaverec.distributed.config import (
    DistributedPlan,
    ShardMap,
    TrainingMode,
    paramserver_id,
    worker_id,
)
from enclaverec.errors import ConfigError, EnclaveRecError, TrainingError, UsageError
from enclaverec.report import METRICS_FILE
from enclaverec.roles import worker as worker_role
from enclaverec.tee.kinds import TEEKind, check_tee_for

JOB_DIR = "job"
SHARDS_DIR = "shards"
OWNER_KEY_DIR = "owner-key"
LOGS_DIR = "logs"
MODEL_CHOICES = ("small", "kaggle", "logreg")
WORKER_RESULT_PREFIX = worker_role.RESULT_PREFIX


# --- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanOptions:
    """What the operator chose; every None is ``train``'s preset default for the data."""

    workers: int = 2
    paramservers: int = 1
    mode: TrainingMode = TrainingMode.SYNC
    staleness: int | None = None
    model: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    patience: int | None = None
    checkpoint_every: int | None = None
    worker_deadline_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.model is not None and self.model not in MODEL_CHOICES:
            raise ConfigError(f"--model must be one of {', '.join(MODEL_CHOICES)}")
        if self.mode is TrainingMode.SYNC and self.staleness:
            raise UsageError("--staleness applies to --mode async")
        for name in ("workers", "paramservers"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be at least 1")


def build_plan(
    options: PlanOptions, manifest: Any, *, events: JobEvents | None = None
) -> DistributedPlan:
    """The job's plan: ``train``'s preset defaults (global batch, optimizer, learning
    rate, epochs, early stopping, seed) for the shards' data set, overridden by
    ``options``. ``manifest`` is the shards' :class:`~enclaverec.data.shards.ShardManifest`."""
    from enclaverec.dlrm.config import PRESETS, Preset, choose_preset
    from enclaverec.training import ModelKind

    train_rows = manifest.split_rows["train"]
    if options.model == "logreg":
        model, preset, optimizer, batch, lr, epochs, patience = (
            ModelKind.LOGREG, "logreg", "sgd", 256, 0.5, 10, 2,
        )  # fmt: skip
    else:
        chosen = Preset(options.model) if options.model else choose_preset(train_rows)
        defaults = PRESETS[chosen]
        if options.model is None and events is not None:
            events.note(f"preset: {chosen.value} ({train_rows:,} training rows)")
        model, preset = ModelKind.DLRM, chosen.value
        optimizer, batch, lr = defaults.optimizer.value, defaults.batch_size, defaults.learning_rate
        epochs, patience = defaults.epochs, defaults.patience
    staleness = options.staleness or 0
    if options.mode is TrainingMode.ASYNC and options.staleness is None:
        staleness = 2
    return DistributedPlan(
        model=model,
        preset=preset,
        optimizer=optimizer,
        dataset=manifest.dataset,
        features=manifest.spec,
        seed=manifest.seed,
        train_rows=train_rows,
        epochs=options.epochs or epochs,
        batch_size=options.batch_size or batch,
        learning_rate=options.learning_rate or lr,
        patience=options.patience or patience,
        mode=options.mode,
        max_staleness=staleness,
        checkpoint_every=options.checkpoint_every or 50,
        worker_deadline_seconds=options.worker_deadline_seconds or 120.0,
        workers=tuple(worker_id(i) for i in range(options.workers)),
        shard_map=ShardMap(tuple(paramserver_id(i) for i in range(options.paramservers)), "ps-0"),
        hashing=manifest.hashing,
    )


# --- simulate ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistributedSimulationConfig:
    """``distributed simulate``: the whole job as processes on this machine."""

    data: DataConfig
    plan: PlanOptions
    output: Path
    tee: TEEKind = TEEKind.SIMULATED
    overwrite: bool = False
    log_level: str = "info"
    timeout_seconds: float = 3600.0
    threads_per_worker: int | None = None

    def __post_init__(self) -> None:
        check_tee_for("simulate", self.tee)
        if not self.timeout_seconds > 0:
            raise UsageError("the timeout must be positive")


@dataclass(frozen=True)
class DistributedResult:
    """What a simulated job measured (the key broker's metrics, decrypted by the owner,
    plus what the owner saw from outside: wall time, the workers' step timings)."""

    metrics: Mapping[str, Any]
    output: Path
    job: Path
    logs: Path
    wall_seconds: float
    workers: Sequence[Mapping[str, Any]]
    process_seconds: Mapping[str, float]
    model: Mapping[str, Any] = field(repr=False)

    @property
    def test_auc(self) -> float:
        return float(self.metrics["test_auc"])


def _simulation_entries() -> tuple[str, ...]:
    return (JOB_DIR, SHARDS_DIR, OWNER_KEY_DIR, LOGS_DIR, METRICS_FILE, CURVES_FILE)


def _worker_results(logs: Path, names: Sequence[str]) -> list[dict[str, Any]]:
    """Each worker's machine-readable result line (timings and counts only)."""
    results = []
    for name in names:
        path = logs / f"{name}.log"
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        found = [line for line in lines if line.startswith(WORKER_RESULT_PREFIX)]
        if found:
            results.append(json.loads(found[-1][len(WORKER_RESULT_PREFIX) :]))
    return results


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def simulate_distributed(
    config: DistributedSimulationConfig,
    *,
    dataset: DataSet | None = None,
    events: JobEvents | None = None,
) -> DistributedResult:
    """Encrypt the data into shards, write the job, run every role as a process over
    loopback, fetch and decrypt the result, write ``metrics.json`` and the curves.

    Raises:
        OutputFolderError: the output folder cannot be used (before any work).
        EnclaveRecError: a role failed (the message carries its last error line).
    """
    events = events or QuietEvents()
    started = time.perf_counter()
    output = check_output_folder(config.output, overwrite=config.overwrite)
    dataset = dataset if dataset is not None else load_data(config.data)
    prepare_output_folder(output, overwrite=config.overwrite, owned=_simulation_entries())
    if config.tee is TEEKind.NONE:
        events.note(
            "WARNING: --tee none is a measurement baseline: plaintext on loopback, nothing attested"
        )
    files, plan = _write_job(config, dataset, output, events)
    run = _run_roles(config, files, plan, output, events)
    return _report(config, dataset, plan, files, run, output, started)


def _write_job(
    config: DistributedSimulationConfig, dataset: DataSet, output: Path, events: JobEvents
):
    from enclaverec.crypto import keys
    from enclaverec.data.shards import encrypt_shards
    from enclaverec.distributed.setup import JobPorts, init_job, make_owner_key
    from enclaverec.transport.endpoints import free_ports

    owner_public = make_owner_key(output / OWNER_KEY_DIR)
    manifest = encrypt_shards(
        dataset,
        workers=config.plan.workers,
        seed=config.data.seed,
        owner=keys.load_public_key(owner_public),
        output_dir=output / SHARDS_DIR,
        dataset_name=dataset.name,
    )
    plan = build_plan(config.plan, manifest, events=events)
    servers = config.plan.paramservers
    ports = free_ports(2 + 2 * servers)
    files = init_job(
        output / JOB_DIR,
        plan=plan,
        shards=output / SHARDS_DIR,
        tee=config.tee,
        ports=JobPorts(
            "127.0.0.1",
            (ports[0], ports[1]),
            tuple((ports[2 + 2 * i], ports[3 + 2 * i]) for i in range(servers)),
        ),
        owner_public_key=owner_public,
        name=f"{dataset.name}-distributed",
    )
    schedule = plan.schedule()
    events.note(
        f"distributed: {len(plan.workers)} worker(s), {len(plan.paramservers)} parameter "
        f"server(s), {plan.mode.value}, {plan.preset} ({plan.optimizer}), global batch "
        f"{plan.batch_size}, {schedule.steps_per_epoch} steps per epoch, at most {plan.epochs} "
        f"epoch(s), tee {config.tee.value}"
    )
    return files, plan


@dataclass
class _RoleRun:
    result: Any
    workers: list[dict[str, Any]]
    process_seconds: dict[str, float]
    logs: Path


def _run_roles(
    config: DistributedSimulationConfig, files: Any, plan: DistributedPlan, output: Path, events
) -> _RoleRun:
    from enclaverec.distributed.config import JobConfig, ParamServerConfig
    from enclaverec.distributed.keybroker import AUDIT_FILE
    from enclaverec.distributed.owner import OwnerClient
    from enclaverec.model.threads import ThreadSettings
    from enclaverec.processes import AuditFollower, RoleProcesses, role_command

    logs = output / LOGS_DIR
    roles = RoleProcesses(logs)
    log_level = ("--log-level", config.log_level)
    follower = AuditFollower(files.keybroker_dir / AUDIT_FILE)
    threads = config.threads_per_worker or ThreadSettings.for_processes(len(plan.workers)).intra_op
    client = None
    try:
        job = files.job_toml
        keybroker = roles.spawn(
            "keybroker",
            role_command("distributed", "keybroker", "--config", str(job), *log_level),
        )
        _wait_until_listening(JobConfig.load(job).listen, keybroker)
        _raise_if_failed(roles)
        client = OwnerClient.load(files.owner_config)
        client.submit()
        events.note("owner: key broker attested, data key submitted")
        for path in files.paramserver_configs:
            server = roles.spawn(
                path.parent.name,
                role_command("distributed", "paramserver", "--config", str(path), *log_level),
            )
            _wait_until_listening(ParamServerConfig.load(path).listen, server)
        for path in files.worker_configs:
            roles.spawn(
                path.parent.name,
                role_command(
                    "distributed",
                    "worker",
                    "--config",
                    str(path),
                    "--threads",
                    str(threads),
                    *log_level,
                ),  # fmt: skip
            )
        deadline = time.monotonic() + config.timeout_seconds
        finished = False
        while not finished:
            for event in follower.new_events():
                kind = event.get("event")
                if kind == "epoch_closed":
                    events.note(
                        f"epoch {event['epoch']} closed after step {event['steps']}"
                        + (" (best so far)" if event.get("improved") else "")
                        + (": stop" if event.get("stop") else "")
                    )
                elif kind == "failed":
                    raise TrainingError(f"the key broker failed the job: {event.get('reason')}")
                elif kind == "finished":
                    finished = True
            _raise_if_failed(roles)
            if time.monotonic() > deadline:
                raise TrainingError(f"the job did not finish within {config.timeout_seconds:.0f} s")
            if not finished:
                time.sleep(0.1)
        result = client.fetch_result()
        for name in roles.processes:
            if roles.wait(name, 60.0) is None:
                raise TrainingError(f"{name} did not exit after the job finished")
        _raise_if_failed(roles)
    finally:
        if client is not None:
            client.close()
        roles.stop_all()
    process_seconds = {
        name: roles.ended[name] - roles.started[name]
        for name in roles.processes
        if name in roles.ended
    }
    return _RoleRun(result, _worker_results(logs, plan.workers), process_seconds, logs)


def _raise_if_failed(roles) -> None:
    failed = roles.failed()
    if failed:
        raise EnclaveRecError(
            "a role failed: " + ", ".join(roles.describe(name) for name in sorted(failed))
        )


def _report(
    config: DistributedSimulationConfig,
    dataset: DataSet,
    plan: DistributedPlan,
    files: Any,
    run: _RoleRun,
    output: Path,
    started: float,
) -> DistributedResult:
    from enclaverec.plots import plot_training_curves
    from enclaverec.report import write_metrics
    from enclaverec.training import EvalRecord

    metrics = dict(run.result.metrics)
    wall = time.perf_counter() - started
    phases = ("wait", "pull", "compute", "push", "total")
    busy = [w for w in run.workers if w["steps"]]
    metrics.update(
        {
            "wall_seconds": wall,
            "step_seconds_median": {
                phase: _median([w["median_seconds"][phase] for w in busy]) for phase in phases
            },
            "worker_setup_seconds": {w["worker"]: w["setup_seconds"] for w in run.workers},
            "role_process_seconds": dict(run.process_seconds),
            "max_staleness": plan.max_staleness,
            "global_batch_size": plan.batch_size,
            **synthetic_references(dataset, config.data.seed),
        }
    )
    write_metrics(output, metrics)
    history = tuple(
        EvalRecord("epoch", h["epoch"], h["val_auc"], h["val_logloss"], h["wall_seconds"])
        for h in metrics["history"]
    )
    plot_training_curves(
        history,
        output / CURVES_FILE,
        title=f"distributed {plan.mode.value}, {len(plan.workers)} workers, "
        f"{len(plan.paramservers)} servers, tee {config.tee.value}",
        best_index=metrics["best_epoch"],
    )
    return DistributedResult(
        metrics=metrics,
        output=output,
        job=files.root,
        logs=run.logs,
        wall_seconds=wall,
        workers=run.workers,
        process_seconds=run.process_seconds,
        model=run.result.model,
    )


def remove_simulation(output: Path) -> None:
    """Remove what a simulation wrote (tests and benchmarks that only want figures)."""
    for name in _simulation_entries():
        target = output / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _wait_until_listening(address, process) -> None:
    """Until both of a role's ports accept connections: it opens its application and its
    enrollment port one after the other, and a peer may need either first (a loaded machine
    showed the gap: the owner's first call was refused on the port not yet open)."""
    from enclaverec.processes import wait_for_port

    for port in (address.port, address.enrollment_port):
        if port is not None:
            wait_for_port(port, process, timeout=120.0)
