"""``enclaverec federated``: horizontal federated learning with an attested aggregator.

``init`` writes a federation's files; ``aggregator`` and ``party`` run one role each (for
real multi-machine runs); ``simulate`` runs them all on this machine as separate processes
over loopback and writes ``metrics.json``. TensorFlow is imported only by a party that
trains the DLRM, inside its handler.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from enclaverec.cli.options import parse_integer, parse_path, parse_positive_float
from enclaverec.cli.output import stderr_console, stdout_console
from enclaverec.cli.registry import add_command
from enclaverec.errors import ConfigError, TrainingError, UsageError

log = logging.getLogger(__name__)

MODELS = ("small", "kaggle", "logreg")
STRATEGY_NAMES = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad")
TEE_CHOICES = ("simulated", "none", "gramine")
DEFAULT_ROUNDS = 10
DEFAULT_LOCAL_EPOCHS = 1
# Each party sees 1/N of the rows per round; with the preset's batch its local steps per
# round shrink N-fold. A local batch of at most 128 gives FedAvg the steps it needs
# (McMahan et al. 2017 find small local batches best): on MovieLens-100K, 4 IID parties,
# it raised the test AUC from 0.7781 (batch 256) to 0.7823, the centralized result.
MAX_DEFAULT_LOCAL_BATCH = 128
CURVES_FILE = "curves.png"


# --- shared flags -----------------------------------------------------------------------


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--dataset", choices=("synthetic", "movielens-100k"), help="a built-in data set"
    )
    source.add_argument(
        "--data", nargs="+", metavar="PATH", help="Criteo-format files (plain or gzip)"
    )
    parser.add_argument("--table-size", metavar="ROWS", help="rows per embedding table for --data")
    parser.add_argument(
        "--on-bad-line",
        choices=("fail", "skip"),
        default="fail",
        help="malformed lines (default: fail)",
    )
    parser.add_argument(
        "--seed", default="0", help="split, partition and initial weights (default: 0)"
    )


def _add_plan_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parties", required=True, metavar="N", help="number of parties")
    parser.add_argument("--rounds", metavar="R", help=f"rounds (default: {DEFAULT_ROUNDS})")
    parser.add_argument(
        "--local-epochs",
        metavar="E",
        help=f"local epochs per round (default: {DEFAULT_LOCAL_EPOCHS})",
    )
    parser.add_argument(
        "--partition",
        default="iid",
        metavar="MODE",
        help="iid | by-user | dirichlet:ALPHA (default: iid)",
    )
    parser.add_argument(
        "--model",
        choices=MODELS,
        help="DLRM preset (default as for train: small under 1M training rows), or logreg: "
        "the numpy logistic regression, a quick protocol check",
    )
    parser.add_argument(
        "--batch-size", metavar="B", help="local batch size (default: the preset's)"
    )
    parser.add_argument("--lr", metavar="RATE", help="local learning rate (default: the preset's)")
    parser.add_argument(
        "--strategy", choices=STRATEGY_NAMES, default="fedavg", help="(default: fedavg)"
    )
    parser.add_argument(
        "--proximal-mu", metavar="MU", help="FedProx's proximal term (with --strategy fedprox)"
    )
    parser.add_argument(
        "--server-lr", metavar="ETA", help="server learning rate of FedAdam/FedYogi/FedAdagrad"
    )
    parser.add_argument(
        "--fraction", metavar="F", help="fraction of parties selected per round (default: 1)"
    )
    parser.add_argument(
        "--min-parties",
        metavar="N",
        help="at least this many per round (default: all; 1 with --fraction)",
    )
    parser.add_argument(
        "--quorum",
        metavar="Q",
        help="fraction of the selected whose updates suffice at the deadline (default: 1)",
    )
    parser.add_argument("--deadline", metavar="SECONDS", help="round deadline (default: 600)")
    parser.add_argument(
        "--norm-bound", metavar="L2", help="refuse updates whose L2 norm exceeds this"
    )
    parser.add_argument(
        "--dense-updates",
        action="store_true",
        help="send whole embedding tables instead of the touched rows (a measurement baseline)",
    )
    parser.add_argument(
        "--no-party-attestation",
        action="store_true",
        help="parties prove membership only, without enclave evidence (default: they attest)",
    )


def _data_selection(args: argparse.Namespace):  # -> DataSelection
    from enclaverec.data.sources import DataSelection

    if args.data:
        return DataSelection(paths=tuple(parse_path("data", p) for p in args.data))
    return DataSelection(dataset=args.dataset)


def _load_parties(args: argparse.Namespace, parties: int, seed: int):
    from enclaverec.data.partition import partition_dataset
    from enclaverec.data.sources import load_dataset

    table_size = (
        parse_integer("table-size", args.table_size, minimum=2) if args.table_size else None
    )
    dataset = load_dataset(
        _data_selection(args),
        seed=seed,
        table_size=table_size,
        on_bad_line=args.on_bad_line,
        progress=True,
    )
    return dataset, partition_dataset(dataset, parties=parties, mode=args.partition, seed=seed)


def _plan(args: argparse.Namespace, dataset: Any, parties: int, seed: int):  # -> FederatedPlan
    from enclaverec.dlrm.config import PRESETS, Preset, choose_preset
    from enclaverec.federated.config import FederatedPlan, ModelKind, UpdateEncoding
    from enclaverec.federated.rounds import SelectionConfig
    from enclaverec.federated.strategies import LocalTraining, StrategyConfig
    from enclaverec.paramservice.combine import RowNormalisation

    if args.model == "logreg":
        model, preset, optimizer, batch, lr = ModelKind.LOGREG, "logreg", "sgd", 256, 0.5
    else:
        chosen = Preset(args.model) if args.model else choose_preset(len(dataset.train))
        defaults = PRESETS[chosen]
        if args.model is None:
            stderr_console().print(
                f"preset: {chosen.value} ({len(dataset.train):,} training rows)", markup=False
            )
        model, preset = ModelKind.DLRM, chosen.value
        optimizer, lr = defaults.optimizer.value, defaults.learning_rate
        batch = min(defaults.batch_size, MAX_DEFAULT_LOCAL_BATCH)
    if args.strategy != "fedprox" and args.proximal_mu is not None:
        raise ConfigError("--proximal-mu needs --strategy fedprox")
    mu = parse_positive_float("proximal-mu", args.proximal_mu) if args.proximal_mu else 0.0
    if args.strategy == "fedprox" and not mu:
        mu = 0.01
    return FederatedPlan(
        model=model,
        preset=preset,
        optimizer=optimizer,
        dataset=dataset.name,
        features=dataset.spec,
        hashing=dataset.info.get("hashing"),
        seed=seed,
        rounds=parse_integer("rounds", args.rounds or DEFAULT_ROUNDS, minimum=1),
        local=LocalTraining(
            epochs=parse_integer(
                "local-epochs", args.local_epochs or DEFAULT_LOCAL_EPOCHS, minimum=1
            ),
            batch_size=parse_integer("batch-size", args.batch_size or batch, minimum=1),
            learning_rate=parse_positive_float("lr", args.lr or lr),
            seed=seed,
        ),
        strategy=StrategyConfig(
            name=args.strategy,
            proximal_mu=mu,
            server_learning_rate=parse_positive_float("server-lr", args.server_lr or 1e-2),
            row_normalisation=RowNormalisation.ALL_CONTRIBUTORS,
        ),
        selection=SelectionConfig(
            fraction=parse_positive_float("fraction", args.fraction or 1.0),
            # Every party by default; with --fraction, at least one unless --min-parties says.
            min_parties=parse_integer(
                "min-parties", args.min_parties or (1 if args.fraction else parties), minimum=1
            ),
            quorum=parse_positive_float("quorum", args.quorum or 1.0),
            deadline_seconds=parse_positive_float("deadline", args.deadline or 600.0),
        ),
        norm_bound=parse_positive_float("norm-bound", args.norm_bound) if args.norm_bound else None,
        update_encoding=UpdateEncoding.DENSE if args.dense_updates else UpdateEncoding.SPARSE,
    )


# --- init -----------------------------------------------------------------------------------


def _parse_members(
    values: list[str] | None,
) -> tuple[dict[str, Path] | None, dict[str, int] | None]:
    """``--member ID=FILE.pub[:ROWS]``: each member's public key and its max_rows (required
    unless init writes the parties' data, whose sizes give it)."""
    if not values:
        return None, None
    members: dict[str, Path] = {}
    max_rows: dict[str, int] = {}
    for value in values:
        party, sep, rest = value.partition("=")
        path, colon, rows = rest.rpartition(":") if ":" in rest else (rest, "", "")
        if not sep or not party or not path or (colon and not rows):
            raise UsageError(f"--member takes ID=PUBLIC_KEY_FILE:ROWS, got {value!r}")
        if party in members:
            raise UsageError(f"--member names {party} twice")
        members[party] = Path(path)
        if colon:
            max_rows[party] = parse_integer(f"member {party} rows", rows, minimum=1)
    if max_rows and set(max_rows) != set(members):
        raise UsageError("--member: give ROWS for every member or for none")
    return members, max_rows or None


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


def _init(args: argparse.Namespace) -> int:
    from enclaverec.federated.setup import init_federation
    from enclaverec.report import TEEKind

    parties = parse_integer("parties", args.parties, minimum=1)
    seed = parse_integer("seed", args.seed, minimum=0)
    tee = TEEKind(args.tee)
    output = parse_path("output", args.output)
    from enclaverec.transport.endpoints import is_loopback

    if tee is TEEKind.NONE and not is_loopback(args.host):
        raise UsageError(f"--tee none is a measurement baseline on loopback only, not {args.host}")
    members, max_rows = _parse_members(args.member)
    # What the aggregator would refuse, refused before any data is loaded, by the same
    # checks (the whole configuration is checked again before init writes it).
    from enclaverec.federated.config import check_address, check_member_keys, check_min_parties

    port = parse_integer("port", args.port, minimum=1)
    enrollment_port = parse_integer("enrollment-port", args.enrollment_port, minimum=1)
    check_address(args.host, port, "--host/--port")
    check_address(args.host, enrollment_port, "--host/--enrollment-port")
    if args.min_parties:
        check_min_parties(
            parse_integer("min-parties", args.min_parties, minimum=1), parties, "--min-parties"
        )
    if members is not None:
        from enclaverec.crypto.keys import load_public_key, public_key_pem

        check_member_keys(
            {
                party: public_key_pem(load_public_key(path)).decode()
                for party, path in members.items()
            },
            "--member",
        )
    if args.no_party_data and members is not None and max_rows is None:
        raise UsageError(
            "--no-party-data: give each member's training rows, --member ID=FILE.pub:ROWS "
            "(the bound on its weight)"
        )
    dataset, shares = _load_parties(args, parties, seed)
    plan = _plan(args, dataset, parties, seed)
    if max_rows is None and args.no_party_data:
        max_rows = {f"party-{i}": len(share.train) for i, share in enumerate(shares)}
    files = init_federation(
        output,
        parties=parties,
        plan=plan,
        tee=tee,
        parties_attest=not args.no_party_attestation,
        party_data=None if args.no_party_data else shares,
        members=members,
        max_rows=max_rows,
        host=args.host,
        port=port,
        enrollment_port=enrollment_port,
        aggregator_mrenclave=_measurement(args.aggregator_mrenclave, "aggregator-mrenclave"),
        party_mrsigner=_measurement(args.party_mrsigner, "party-mrsigner"),
        name=args.name,
        pccs_url=args.pccs,
    )
    console = stdout_console()
    console.print(f"federation written to {files.root}", markup=False)
    console.print(f"  aggregator configuration (measured): {files.federation_toml}", markup=False)
    for config in files.party_configs:
        console.print(f"  {config.parent.name}: {config}", markup=False)
    if files.aggregator_mrenclave is not None:
        kind = "SIMULATED " if tee is TEEKind.SIMULATED else ""
        console.print(
            f"aggregator {kind}MRENCLAVE (written into every party's [aggregator_policy]): "
            f"{files.aggregator_mrenclave.hex()}",
            markup=False,
        )
    elif tee is TEEKind.GRAMINE:
        console.print(
            "next: sign the aggregator's enclave (docs/gramine.md), read its MRENCLAVE with "
            "gramine-sgx-sigstruct-view, and put it into each party's [aggregator_policy] "
            "mrenclave list; parties refuse to start without it",
            markup=False,
        )
    return 0


# --- aggregator and party ---------------------------------------------------------------


def _aggregator(args: argparse.Namespace) -> int:
    from enclaverec.federated.config import FederationConfig
    from enclaverec.federated.roles import make_aggregator
    from enclaverec.transport.server import ListenConfig

    config_path = parse_path("config", args.config)
    config = FederationConfig.load(config_path)
    state_dir = Path(args.state_dir) if args.state_dir else config_path.parent / "aggregator"
    listen = ListenConfig(
        host=args.listen or config.listen_host,
        application_port=parse_integer("port", args.port, minimum=0)
        if args.port
        else config.listen_port,
        enrollment_port=parse_integer("enrollment-port", args.enrollment_port, minimum=0)
        if args.enrollment_port
        else config.enrollment_port,
    )
    aggregator = make_aggregator(config_path, state_dir=state_dir, listen=listen)
    summary = aggregator.run()
    stdout_console().print(
        f"federation finished: {summary['rounds_completed']} round(s), best round "
        f"{summary['best_round']}, summary in {state_dir}",
        markup=False,
    )
    return 0


def _party(args: argparse.Namespace) -> int:
    from enclaverec.federated.party import PartyOptions, PartyResult
    from enclaverec.federated.roles import default_trainer_factory, make_party_session, run_party

    threads = parse_integer("threads", args.threads, minimum=1) if args.threads else None
    setup = make_party_session(parse_path("config", args.config))
    export_dir = parse_path("export", args.export) if args.export else setup.config.export

    def export(result: PartyResult) -> None:
        if export_dir is None or result.best_model is None:
            return
        _export_best(result, export_dir, setup.data)

    result = run_party(setup, default_trainer_factory(threads), PartyOptions(), export)
    stdout_console().print(
        f"{result.party_id}: trained in rounds {result.rounds_trained}; best global model from "
        f"round {result.best_round}" + (f", exported to {export_dir}" if export_dir else ""),
        markup=False,
    )
    return 0


def _export_best(result: Any, directory: Path, data: Any) -> None:
    """The best global model as a SavedModel in the party's own trust domain."""
    from enclaverec.federated.config import ModelKind

    plan = result.plan
    if plan.model is not ModelKind.DLRM:
        raise UsageError("--export writes a SavedModel of the DLRM; this federation trains logreg")
    from enclaverec.dlrm.config import PRESETS, Preset
    from enclaverec.model.export import ModelMetadata, export_saved_model

    metadata = ModelMetadata(
        spec=plan.features,
        model=PRESETS[Preset(plan.preset)].model,
        preset=plan.preset,
        optimizer=plan.optimizer,
        dataset=plan.dataset,
        seed=plan.seed,
        hashing=plan.hashing,
    )
    export_saved_model(result.trainer, result.best_model, directory, metadata)


# --- simulate -----------------------------------------------------------------------------


def simulate_federation(
    *,
    args: argparse.Namespace,
    output: Path,
    dataset: Any = None,
) -> dict[str, Any]:
    """Run ``simulate`` and return its validated metrics (shared with ``demo``)."""
    import time

    from enclaverec.evaluation import BinaryMetrics
    from enclaverec.federated.simulate import (
        SimulationOptions,
        check_parties,
        run_simulation,
        union_test_sha256,
    )
    from enclaverec.model.threads import ThreadSettings
    from enclaverec.plots import plot_training_curves
    from enclaverec.report import Mode, TEEKind, build_metrics, write_metrics
    from enclaverec.trainer import EvalRecord

    started = time.perf_counter()
    parties = parse_integer("parties", args.parties, minimum=1)
    seed = parse_integer("seed", args.seed, minimum=0)
    tee = TEEKind(args.tee)
    if tee is TEEKind.GRAMINE:
        raise UsageError("simulate runs every role on this machine: --tee simulated or none")
    if output.exists() and any(output.iterdir()):
        raise UsageError(f"refusing to write into the non-empty folder {output}")
    if dataset is None:
        dataset, shares = _load_parties(args, parties, seed)
    else:
        from enclaverec.data.partition import partition_dataset

        shares = partition_dataset(dataset, parties=parties, mode=args.partition, seed=seed)
    plan = _plan(args, dataset, parties, seed)
    console = stderr_console()
    console.print(
        f"federated: {parties} parties ({args.partition}), {plan.rounds} rounds of "
        f"{plan.local.epochs} local epoch(s), {plan.strategy.name}, tee {tee.value}"
        + (", parties attest" if not args.no_party_attestation and tee is not TEEKind.NONE else ""),
        markup=False,
    )
    if tee is TEEKind.NONE:
        console.print(
            "WARNING: --tee none is a measurement baseline: plaintext on loopback, "
            "nothing attested",
            markup=False,
        )

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "round_completed":
            console.print(
                f"round {event['round']}/{plan.rounds}: validation AUC {event['val_auc']:.4f}, "
                f"test AUC {event['test_auc']:.4f}",
                markup=False,
            )
        elif event.get("event") == "phase_restarted":
            console.print(
                f"round {event['round']}: deadline passed without quorum; selecting again",
                markup=False,
            )

    result = run_simulation(
        SimulationOptions(
            parties=parties,
            plan=plan,
            tee=tee,
            parties_attest=not args.no_party_attestation,
            output=output,
            # DESIGN.md §6: each TensorFlow process gets max(1, cores // processes).
            threads_per_party=ThreadSettings.for_processes(parties).intra_op,
            log_level="info",
        ),
        shares,
        on_event=on_event,
    )
    summary = result.summary
    if not summary["history"] or summary["best_test"] is None:
        raise TrainingError("the federation completed no round")
    history = [
        EvalRecord("round", h["round"], h["val_auc"], h["val_logloss"], h["wall_seconds"])
        for h in summary["history"]
    ]
    best = summary["best_test"]
    global_sha = union_test_sha256(shares)
    wall = time.perf_counter() - started
    # Bytes of each party's update message, averaged over parties and rounds.
    sizes = [size for h in summary["history"] for size in h["bytes_received"].values()]
    metrics = build_metrics(
        mode=Mode.FEDERATED,
        tee=tee,
        dataset=dataset.name,
        preset=plan.preset,
        optimizer=plan.optimizer,
        seed=seed,
        test=BinaryMetrics(
            best["test_auc"], best["test_logloss"], best["test_accuracy"], best["test_rows"]
        ),
        test_split_sha256=best["test_split_sha256"],
        history=history,
        best_index=summary["best_round"],
        train_samples_per_second=summary["train_samples"] / summary["train_seconds"]
        if summary["train_seconds"] > 0
        else 0.0,
        wall_seconds=wall,
        extra={
            "parties": parties,
            "rounds_completed": summary["rounds_completed"],
            "attested_peers": summary["attested_peers"],
            "partition": args.partition,
            "strategy": plan.strategy.name,
            "local_epochs": plan.local.epochs,
            "parties_attest": summary["parties_attest"],
            "update_encoding": summary["update_encoding"],
            "update_bytes_per_party_per_round": sum(sizes) / len(sizes) if sizes else 0,
            "round_seconds": [h["round_seconds"] for h in summary["history"]],
            "aggregator_mrenclave": summary["mrenclave"],
            "global_test_split_sha256": global_sha,
            # False when the best round was scored without some party's test rows (a party
            # dropped out): then test_split_sha256 differs from the global split's.
            "test_covers_all_parties": best["test_split_sha256"] == global_sha,
            "party_exit_codes": result.party_exit_codes,
            "restarts": summary["restarts"],
            **_synthetic_references(dataset, seed),
        },
    )
    write_metrics(output, metrics)
    plot_training_curves(
        history,
        output / CURVES_FILE,
        title=f"federated {plan.strategy.name}, {parties} parties ({args.partition}), "
        f"tee {tee.value}",
        best_index=summary["best_round"],
    )
    # A party that crashed did not stop the federation (the quorum carried on), but the
    # run is not what was asked for: say so, after writing what was achieved.
    check_parties(result)
    return metrics


def _synthetic_references(dataset: Any, seed: int) -> dict[str, float]:
    """For synthetic data, the planted model's test AUC and the logistic baseline's
    (DESIGN.md §4), so the federated AUC can be read against both."""
    if dataset.name != "synthetic":
        return {}
    from enclaverec.data.baseline import baseline_logreg_auc

    return {
        "oracle_auc": dataset.info["oracle_auc"],
        "baseline_logreg_auc": baseline_logreg_auc(dataset, seed=seed),
    }


def _simulate(args: argparse.Namespace) -> int:
    output = parse_path("output", args.output)
    metrics = simulate_federation(args=args, output=output)
    stdout_console().print(
        f"federated ({metrics['tee']}): test AUC {metrics['test_auc']:.4f} (best round "
        f"{metrics['best_round']} of {metrics['rounds_completed']}), "
        f"{metrics['wall_seconds']:.0f} s; metrics in {output / 'metrics.json'}",
        markup=False,
    )
    return 0


# --- registration -------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    group = add_command(
        subparsers, "federated", help="federated learning with an attested aggregator"
    )
    sub = group.add_subparsers(dest="federated_command", metavar="SUBCOMMAND")

    init = add_command(
        sub,
        "init",
        help="write a federation's files: plan, membership, policies, one folder per site",
        handler=_init,
    )
    _add_data_flags(init)
    _add_plan_flags(init)
    init.add_argument(
        "--output", required=True, metavar="DIR", help="where to write (new or empty)"
    )
    init.add_argument(
        "--tee", choices=TEE_CHOICES, default="simulated", help="(default: simulated)"
    )
    init.add_argument("--name", default="federation", help="the federation's name")
    init.add_argument(
        "--host", default="127.0.0.1", help="the aggregator's address, as parties reach it"
    )
    init.add_argument(
        "--port", default="50051", help="the aggregator's application port (default: 50051)"
    )
    init.add_argument(
        "--enrollment-port", default="50052", help="its enrollment port (default: 50052)"
    )
    init.add_argument(
        "--member",
        action="append",
        metavar="ID=FILE.pub:ROWS",
        help="a party's public key from `keys new` and the most rows it trains on (the bound "
        "on its weight; may be left out when init writes the parties' data); repeat for "
        "party-0..N-1. Without --member, init makes each party's key pair in its folder",
    )
    init.add_argument(
        "--pccs",
        metavar="URL",
        help="(gramine) the PCCS every role fetches SGX collateral from; written into the "
        "measured configurations, since enclave roles take no such flag",
    )
    init.add_argument(
        "--no-party-data", action="store_true", help="do not write each party's data share"
    )
    init.add_argument(
        "--aggregator-mrenclave", metavar="HEX", help="(gramine) the aggregator's MRENCLAVE"
    )
    init.add_argument(
        "--party-mrsigner", metavar="HEX", help="(gramine) the party enclaves' MRSIGNER"
    )

    aggregator = add_command(
        sub,
        "aggregator",
        help="run the aggregator role (its measured configuration is the federation file)",
        handler=_aggregator,
    )
    aggregator.add_argument("--config", required=True, metavar="FILE", help="federation.toml")
    aggregator.add_argument("--listen", metavar="HOST", help="listen address (default: the file's)")
    aggregator.add_argument("--port", metavar="PORT", help="application port (default: the file's)")
    aggregator.add_argument(
        "--enrollment-port", metavar="PORT", help="enrollment port (default: the file's)"
    )
    aggregator.add_argument(
        "--state-dir", metavar="DIR", help="sealed state (default: beside the file)"
    )

    party = add_command(sub, "party", help="run one party", handler=_party)
    party.add_argument("--config", required=True, metavar="FILE", help="party.toml")
    party.add_argument(
        "--export",
        metavar="DIR",
        help="write the best global model here (SavedModel; default: [party] export)",
    )
    party.add_argument(
        "--threads", metavar="N", help="TensorFlow intra-op threads (default: all cores)"
    )

    simulate = add_command(
        sub,
        "simulate",
        help="init, then the aggregator and every party as processes on this machine",
        handler=_simulate,
    )
    _add_data_flags(simulate)
    _add_plan_flags(simulate)
    simulate.add_argument(
        "--output", required=True, metavar="DIR", help="results (new or empty folder)"
    )
    simulate.add_argument(
        "--tee", choices=("simulated", "none"), default="simulated", help="(default: simulated)"
    )
