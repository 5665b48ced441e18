"""``enclaverec distributed``: secure distributed training of one owner's encrypted data on
an untrusted cluster.

``init`` writes a job's files from the shards ``data encrypt --shards`` made;
``keybroker``, ``paramserver`` and ``worker`` run one enclave role each (for real
multi-machine runs); the owner's ``submit``, ``status`` and ``fetch-model`` attest the
key broker, hand it the data key, follow the job and decrypt the result; ``simulate``
runs every role on this machine as separate processes over loopback. TensorFlow is
imported only by a worker that trains the DLRM and by ``fetch-model``'s export.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from enclaverec.cli.options import parse_integer, parse_path, parse_positive_float
from enclaverec.cli.output import stdout_console
from enclaverec.cli.registry import add_command
from enclaverec.cli.roles import add_role_command
from enclaverec.errors import UsageError
from enclaverec.roles import keybroker as keybroker_role
from enclaverec.roles import paramserver as paramserver_role
from enclaverec.roles import worker as worker_role
from enclaverec.tee.kinds import TEEKind, parse_tee, tee_choices, tee_help
from enclaverec.transport.endpoints import require_loopback_for_plaintext

log = logging.getLogger(__name__)

MODELS = ("small", "kaggle", "logreg")
DEFAULT_BASE_PORT = 50061


# --- the plan -----------------------------------------------------------------------------


def plan_options(args: argparse.Namespace, workers: int) -> Any:
    """The operator's plan choices from the flags (None: ``train``'s preset default)."""
    from enclaverec.app.distributed import PlanOptions
    from enclaverec.distributed.config import TrainingMode

    def optional(parse, name: str, value: Any, **kwargs: Any) -> Any:
        return parse(name, value, **kwargs) if value else None

    return PlanOptions(
        workers=workers,
        paramservers=parse_integer("ps", args.ps or 1, minimum=1),
        mode=TrainingMode(args.mode),
        staleness=optional(parse_integer, "staleness", args.staleness, minimum=0),
        model=args.model,
        epochs=optional(parse_integer, "epochs", args.epochs, minimum=1),
        batch_size=optional(parse_integer, "batch-size", args.batch_size, minimum=1),
        learning_rate=optional(parse_positive_float, "lr", args.lr),
        patience=optional(parse_integer, "patience", args.patience, minimum=1),
        checkpoint_every=optional(
            parse_integer, "checkpoint-every", args.checkpoint_every, minimum=1
        ),
        worker_deadline_seconds=optional(
            parse_positive_float, "worker-deadline", args.worker_deadline
        ),
    )


def _add_plan_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ps", metavar="P", help="parameter servers (default: 1)")
    parser.add_argument("--mode", choices=("sync", "async"), default="sync", help="(default: sync)")
    parser.add_argument(
        "--staleness", metavar="S", help="(async) steps a worker may run ahead (default: 2)"
    )
    parser.add_argument(
        "--model",
        choices=MODELS,
        help="DLRM preset (default as for train: small under 1M training rows), or logreg: "
        "the numpy logistic regression, a quick protocol check",
    )
    parser.add_argument("--epochs", metavar="E", help="at most E epochs (default: the preset's)")
    parser.add_argument(
        "--batch-size", metavar="B", help="global batch, all workers (default: the preset's)"
    )
    parser.add_argument("--lr", metavar="RATE", help="learning rate (default: the preset's)")
    parser.add_argument("--patience", metavar="N", help="early stopping (default: the preset's)")
    parser.add_argument(
        "--checkpoint-every", metavar="STEPS", help="sealed server checkpoints (default: 50)"
    )
    parser.add_argument(
        "--worker-deadline",
        metavar="SECONDS",
        help="how long the barrier waits for a missing worker before the job fails (default: 120)",
    )


def _measurement(value: str | None, name: str) -> bytes | None:
    if value is None:
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise UsageError(f"--{name} must be 64 hex digits") from exc
    if len(raw) != 32:
        raise UsageError(f"--{name} must be 64 hex digits")
    return raw


# --- init -----------------------------------------------------------------------------------


def _init(args: argparse.Namespace) -> int:
    from enclaverec.data.shards import ShardManifest
    from enclaverec.distributed.setup import default_ports, init_job

    shards = parse_path("shards", args.shards)
    manifest = ShardManifest.load(shards)
    from enclaverec.app.distributed import build_plan
    from enclaverec.cli.output import ConsoleEvents

    tee = parse_tee(args.tee, "init")
    require_loopback_for_plaintext(tee, args.host)
    options = plan_options(args, manifest.workers)
    paramservers = options.paramservers
    plan = build_plan(options, manifest, events=ConsoleEvents())
    files = init_job(
        parse_path("output", args.output),
        plan=plan,
        shards=shards,
        tee=tee,
        ports=default_ports(args.host, paramservers, parse_integer("port", args.port, minimum=1)),
        owner_public_key=parse_path("owner-key", args.owner_key),
        owner_private_key=parse_path("owner-private-key", args.owner_private_key)
        if args.owner_private_key
        else None,
        owner_passphrase_file=parse_path("passphrase-file", args.passphrase_file)
        if args.passphrase_file
        else None,
        enclave_mrsigner=_measurement(args.mrsigner, "mrsigner"),
        keybroker_mrenclave=_measurement(args.keybroker_mrenclave, "keybroker-mrenclave"),
        name=args.name,
        pccs_url=args.pccs,
    )
    console = stdout_console()
    console.print(f"job written to {files.root}", markup=False)
    console.print(f"  key broker configuration (measured): {files.job_toml}", markup=False)
    for config in (*files.worker_configs, *files.paramserver_configs):
        console.print(f"  {config.parent.name}: {config}", markup=False)
    console.print(f"  owner: {files.owner_config}", markup=False)
    if files.keybroker_mrenclave is not None:
        kind = "SIMULATED " if tee is TEEKind.SIMULATED else ""
        console.print(
            f"key broker {kind}MRENCLAVE (pinned by the owner and the parameter servers): "
            f"{files.keybroker_mrenclave.hex()}",
            markup=False,
        )
    elif tee is TEEKind.GRAMINE:
        console.print(
            "next: build and sign the enclaves (docs/distributed.md), then run init again "
            "with --keybroker-mrenclave so the owner and the servers pin the key broker",
            markup=False,
        )
    return 0


# --- the roles ------------------------------------------------------------------------------


# --- the owner ------------------------------------------------------------------------------


def _submit(args: argparse.Namespace) -> int:
    from enclaverec.distributed.owner import OwnerClient

    client = OwnerClient.load(parse_path("config", args.config))
    try:
        again = client.submit()
    finally:
        client.close()
    stdout_console().print(
        "the key broker already held this job's key"
        if again
        else "submitted: the attested key broker holds the data key",
        markup=False,
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from enclaverec.distributed.owner import OwnerClient

    client = OwnerClient.load(parse_path("config", args.config))
    try:
        status = client.status()
    finally:
        client.close()
    stdout_console().print(json.dumps(status, indent=2, sort_keys=True), markup=False)
    return 0


def _fetch_model(args: argparse.Namespace) -> int:
    from enclaverec.distributed.owner import OwnerClient

    output = parse_path("output", args.output)
    client = OwnerClient.load(parse_path("config", args.config))
    try:
        if args.wait:
            client.wait_finished(parse_positive_float("wait", args.wait))
        result = client.fetch_result()
    finally:
        client.close()
    write_result(result, output, client.config, export=not args.no_export)
    stdout_console().print(
        f"job {client.config.job}: test AUC {result.metrics['test_auc']:.4f} (best epoch "
        f"{result.metrics['best_epoch']}); metrics and model in {output}",
        markup=False,
    )
    return 0


def write_result(result: Any, output: Path, owner_config: Any, *, export: bool) -> None:
    """On the owner's machine: metrics.json (validated against §4) and, for the DLRM, a
    SavedModel that ``evaluate`` reads."""
    from enclaverec.report import validate_metrics, write_json

    output.mkdir(parents=True, exist_ok=True)
    metrics = dict(result.metrics)
    validate_metrics(metrics)
    write_json(output / "metrics.json", metrics)
    if export and metrics.get("preset") in ("small", "kaggle"):
        export_model(result.model, metrics, output / "model", owner_config)


def export_model(model: Any, metrics: dict[str, Any], directory: Path, owner_config: Any) -> None:
    from enclaverec.data.schema import Examples
    from enclaverec.data.shards import ShardManifest
    from enclaverec.dlrm.config import PRESETS, Preset
    from enclaverec.model.dlrm_trainer import DLRMTrainer, DLRMTrainerConfig
    from enclaverec.model.export import ModelMetadata, export_saved_model

    manifest = ShardManifest.load(owner_config.shards)
    defaults = PRESETS[Preset(metrics["preset"])]
    spec = manifest.spec
    import numpy as np

    empty = Examples(
        np.zeros((0, spec.num_dense), np.float32),
        np.zeros((0, spec.num_categorical), np.int32),
        np.zeros(0, np.float32),
        np.zeros(0, np.int64),
    )
    trainer = DLRMTrainer(
        spec,
        DLRMTrainerConfig(
            model=defaults.model,
            optimizer=defaults.optimizer,
            init_seed=manifest.seed,
            jit_compile=False,
        ),
        empty,
    )
    metadata = ModelMetadata(
        spec=spec,
        model=defaults.model,
        preset=metrics["preset"],
        optimizer=metrics["optimizer"],
        dataset=manifest.dataset,
        seed=manifest.seed,
        hashing=manifest.hashing,
    )
    export_saved_model(trainer, model, directory, metadata)


# --- simulate -------------------------------------------------------------------------------


def _simulate(args: argparse.Namespace) -> int:
    from enclaverec.app.distributed import DistributedSimulationConfig, simulate_distributed
    from enclaverec.cli.data_flags import data_config
    from enclaverec.cli.output import ConsoleEvents
    from enclaverec.report import METRICS_FILE

    config = DistributedSimulationConfig(
        data=data_config(args),
        plan=plan_options(args, parse_integer("workers", args.workers, minimum=1)),
        output=parse_path("output", args.output),
        tee=parse_tee(args.tee, "simulate"),
        overwrite=args.overwrite,
        log_level=args.log_level,
    )
    result = simulate_distributed(config, events=ConsoleEvents())
    metrics = result.metrics
    stdout_console().print(
        f"distributed {metrics['training_mode']} ({metrics['tee']}): test AUC "
        f"{metrics['test_auc']:.4f} (best epoch {metrics['best_epoch']} of "
        f"{metrics['epochs_completed']}), {metrics['steps_completed']} steps, "
        f"{metrics['bytes_per_step_per_worker']:,.0f} B per step per worker, "
        f"{result.wall_seconds:.0f} s; metrics in {result.output / METRICS_FILE}",
        markup=False,
    )
    return 0


# --- registration ---------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    group = add_command(
        subparsers,
        "distributed",
        help="secure distributed training: key broker, parameter servers, workers",
    )
    sub = group.add_subparsers(dest="distributed_command", metavar="SUBCOMMAND")

    init = add_command(
        sub,
        "init",
        help="write a job's files from encrypted shards: plan, pins, one folder per role",
        handler=_init,
    )
    init.add_argument(
        "--shards", required=True, metavar="DIR", help="the output of data encrypt --shards W"
    )
    init.add_argument(
        "--owner-key", required=True, metavar="OWNER.pub", help="the owner's public key"
    )
    init.add_argument(
        "--owner-private-key",
        metavar="OWNER.key",
        help="where the owner's private key is, for owner.toml (default: beside the .pub)",
    )
    init.add_argument(
        "--passphrase-file", metavar="FILE", help="the owner key's passphrase file, for owner.toml"
    )
    _add_plan_flags(init)
    init.add_argument("--output", required=True, metavar="DIR", help="where to write (new)")
    init.add_argument(
        "--tee", choices=tee_choices("init"), default=tee_choices("init")[0], help=tee_help("init")
    )
    init.add_argument("--name", default="job", help="the job's name")
    init.add_argument("--host", default="127.0.0.1", help="the servers' address")
    init.add_argument(
        "--port",
        default=str(DEFAULT_BASE_PORT),
        help=f"first port: key broker, then two per server (default: {DEFAULT_BASE_PORT})",
    )
    init.add_argument("--pccs", metavar="URL", help="(gramine) the PCCS for SGX collateral")
    init.add_argument("--mrsigner", metavar="HEX", help="(gramine) the enclaves' MRSIGNER")
    init.add_argument(
        "--keybroker-mrenclave", metavar="HEX", help="(gramine) the key broker's MRENCLAVE"
    )

    add_role_command(
        sub,
        "keybroker",
        keybroker_role,
        help="run the key broker (measured configuration: job.toml)",
    )

    add_role_command(
        sub,
        "paramserver",
        paramserver_role,
        help="run a parameter server (measured configuration: paramserver.toml)",
    )
    add_role_command(
        sub,
        "worker",
        worker_role,
        help="run a worker (measured configuration: worker.toml); its shard is decrypted in "
        "memory only",
    )

    simulate = add_command(
        sub,
        "simulate",
        help="the whole job on this machine: owner, key broker, parameter servers and "
        "workers as separate processes over loopback (simulated TEE by default)",
        handler=_simulate,
    )
    from enclaverec.cli.data_flags import add_data_flags

    add_data_flags(simulate)
    simulate.add_argument("--workers", default="2", metavar="W", help="workers (default: 2)")
    _add_plan_flags(simulate)
    simulate.add_argument(
        "--output", required=True, metavar="DIR", help="results (new or empty folder)"
    )
    simulate.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous run's job, shards, owner-key, logs, metrics.json and "
        "curves.png in --output (nothing else there is touched)",
    )
    simulate.add_argument(
        "--tee",
        choices=tee_choices("simulate"),
        default=tee_choices("simulate")[0],
        help=tee_help("simulate"),
    )

    for name, handler, text in (
        ("submit", _submit, "attest the key broker and send it the job's data key (owner)"),
        ("status", _status, "the job's progress, from the attested key broker (owner)"),
    ):
        command = add_command(sub, name, help=text, handler=handler)
        command.add_argument("--config", required=True, metavar="FILE", help="owner.toml")

    fetch = add_command(
        sub,
        "fetch-model",
        help="fetch the result encrypted to the owner's key, decrypt it here, write "
        "metrics.json and a SavedModel that evaluate reads (owner)",
        handler=_fetch_model,
    )
    fetch.add_argument("--config", required=True, metavar="FILE", help="owner.toml")
    fetch.add_argument("--output", required=True, metavar="DIR", help="where to write")
    fetch.add_argument("--wait", metavar="SECONDS", help="wait for the job to finish first")
    fetch.add_argument("--no-export", action="store_true", help="metrics only, no SavedModel")
