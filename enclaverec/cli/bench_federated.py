"""``enclaverec bench federated``: update bytes and the cost of security, on real federations.

Every figure comes from real ``federated simulate`` runs (the aggregator and each party a
separate process on loopback), taken in one invocation so that they are compared as
ratios within the run:

- update bytes: the ``kaggle`` preset with 26 embedding tables of 100,000 rows, once with
  sparse updates (the touched rows only) and once with ``--dense-updates`` (whole tables).
  The rows are the first rows of the built-in ``synthetic`` data set, written as a Criteo
  TSV file and loaded with ``--data FILE --table-size 100000`` (the built-in set has its
  own, smaller tables). Bytes come from each run's metrics.json and the aggregator's
  summary; the touched-row fraction from the rows each party trained on.
- security overhead: MovieLens-100K with 4 parties and the default DLRM preset, with
  ``--tee none`` and with the simulated TEE, runs interleaved; round times exclude round 1
  (start-up and enrollment), which is reported apart with the total wall time.
- attestation cost: the simulated federation's own files, roles and sessions, in this
  process: the aggregator's start (sealed keys, quote, RA-TLS certificate), a certificate
  renewal, and for each party verifying and pinning the aggregator, enrolling, and the
  first call over mutual TLS.

Figures taken while other work runs on the machine are provisional.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from enclaverec.arrays import ModelLayout
from enclaverec.cli.options import parse_integer, parse_path
from enclaverec.cli.output import stderr_console, stdout_console
from enclaverec.cli.registry import add_command
from enclaverec.errors import ConfigError, MetricsReportError, TrainingError, UsageError

PARTS = ("bytes", "overhead")
MODELS = ("dlrm", "logreg")
OVERHEAD_DATASETS = ("movielens-100k", "synthetic")
# The shape: the kaggle preset on 100,000-row tables, a couple of parties, 1-2
# rounds; 40,000 rows keep both runs within about 3 minutes on 2 cores.
DEFAULT_ROWS = 40_000
DEFAULT_TABLE_SIZE = 100_000
DEFAULT_BYTES_PARTIES = 2
DEFAULT_BYTES_ROUNDS = 2
DEFAULT_DATASET = "movielens-100k"
DEFAULT_PARTIES = 4
# Rounds after the first take well under a second on MovieLens-100K: ten rounds give nine
# timed rounds per run for the cost of a few seconds.
DEFAULT_ROUNDS = 10
# Runs per TEE mode, interleaved (none, simulated, none, ...), so that a neighbour's burst
# of work does not fall on one mode only.
DEFAULT_REPEATS = 3
DEFAULT_ENROLLMENTS = 3
MIN_ROWS = 100


@dataclass(frozen=True)
class BenchFederatedConfig:
    """What one ``bench federated`` invocation runs."""

    parts: tuple[str, ...]
    model: str
    rows: int
    table_size: int
    bytes_parties: int
    bytes_rounds: int
    dataset: str
    parties: int
    rounds: int
    repeats: int
    enrollments: int
    seed: int

    @property
    def bytes_model_flag(self) -> str:
        """The ``--model`` of the update-bytes runs."""
        return "logreg" if self.model == "logreg" else "kaggle"


def parse_config(args: argparse.Namespace) -> BenchFederatedConfig:
    """Check every flag before anything runs; a bad value is a ``ConfigError`` (exit 2)."""
    from enclaverec.data.synthetic import SyntheticConfig

    parts = tuple(dict.fromkeys(args.only)) if args.only else PARTS
    if args.model not in MODELS:
        raise ConfigError(f"--model must be one of {', '.join(MODELS)}, got {args.model!r}")
    if args.dataset not in OVERHEAD_DATASETS:
        raise ConfigError(
            f"--dataset must be one of {', '.join(OVERHEAD_DATASETS)}, got {args.dataset!r}"
        )
    rows = parse_integer("rows", args.rows, minimum=MIN_ROWS)
    available = SyntheticConfig().num_rows
    if rows > available:
        raise ConfigError(
            f"--rows must be at most {available:,} (the synthetic data set), got {rows}"
        )
    bytes_parties = parse_integer("bytes-parties", args.bytes_parties, minimum=1)
    if rows < MIN_ROWS * bytes_parties:
        raise ConfigError(
            f"--rows {rows} leaves under {MIN_ROWS} rows per party for {bytes_parties} parties"
        )
    return BenchFederatedConfig(
        parts=parts,
        model=args.model,
        rows=rows,
        table_size=parse_integer("table-size", args.table_size, minimum=2),
        bytes_parties=bytes_parties,
        bytes_rounds=parse_integer("bytes-rounds", args.bytes_rounds, minimum=1),
        dataset=args.dataset,
        parties=parse_integer("parties", args.parties, minimum=1),
        # Round 1 includes start-up and enrollment and is excluded: at least one more.
        rounds=parse_integer("rounds", args.rounds, minimum=2),
        repeats=parse_integer("repeats", args.repeats, minimum=1),
        enrollments=parse_integer("enrollments", args.enrollments, minimum=1),
        seed=parse_integer("seed", args.seed, minimum=0),
    )


# --- the data of the update-bytes runs --------------------------------------------------


def write_synthetic_criteo(path: Path, rows: int) -> Path:
    """The first ``rows`` rows of the built-in ``synthetic`` data set as a Criteo TSV file.

    Integers are written as the counts they came from (the reader's log(1 + x) gives the
    same dense values back); category id k > 0 of a feature becomes the hex value k, and
    id 0 (missing) an empty field. Read with ``--table-size``, each category hashes into a
    table of that size, as a real Criteo file does.
    """
    from enclaverec.data.synthetic import NUM_CATEGORICAL, NUM_DENSE, generate

    examples = generate().examples
    if not 1 <= rows <= len(examples):
        raise UsageError(f"the synthetic data set has {len(examples):,} rows, not {rows:,}")
    labels = examples.labels[:rows]
    # dense = log1p(count) with whole counts >= 0: rounding expm1 recovers the count.
    counts = np.rint(np.expm1(examples.dense[:rows].astype(np.float64))).astype(np.int64)
    columns = [labels.astype(np.int64).astype(str).tolist()]
    columns += [counts[:, i].astype(str).tolist() for i in range(NUM_DENSE)]
    for feature in range(NUM_CATEGORICAL):
        ids = examples.categorical[:rows, feature]
        used, inverse = np.unique(ids, return_inverse=True)
        names = np.array(["" if value == 0 else f"{value:08x}" for value in used.tolist()])
        columns.append(names[inverse].tolist())
    try:
        with path.open("w", encoding="ascii") as handle:
            handle.writelines("\t".join(fields) + "\n" for fields in zip(*columns, strict=True))
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc}") from exc
    return path


# --- result assembly (pure functions) ---------------------------------------------------


def round_time_figures(round_seconds: Sequence[float]) -> dict[str, Any]:
    """Round 1 apart (it includes start-up and enrollment), the later rounds' mean and
    median."""
    if len(round_seconds) < 2:
        raise TrainingError(
            f"the federation completed {len(round_seconds)} round(s); timing needs at least 2"
        )
    later = [float(value) for value in round_seconds[1:]]
    return {
        "round_1_seconds": float(round_seconds[0]),
        "later_rounds": len(later),
        "later_mean_seconds": statistics.fmean(later),
        "later_median_seconds": statistics.median(later),
    }


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def overhead_figures(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per TEE mode, the later rounds of all its runs pooled (mean, median), round 1 and
    wall time averaged over its runs; then simulated / none for each."""
    modes: dict[str, dict[str, Any]] = {}
    for tee in ("none", "simulated"):
        mine = [run for run in runs if run["tee"] == tee]
        if not mine:
            raise TrainingError(f"no run with --tee {tee} to compare")
        later = [float(s) for run in mine for s in run["round_seconds"][1:]]
        if not later:
            raise TrainingError(f"the --tee {tee} runs completed no round after round 1")
        modes[tee] = {
            "runs": len(mine),
            "later_rounds": len(later),
            "later_mean_seconds": statistics.fmean(later),
            "later_median_seconds": statistics.median(later),
            "round_1_seconds": statistics.fmean(float(run["round_seconds"][0]) for run in mine),
            "wall_seconds": statistics.fmean(float(run["wall_seconds"]) for run in mine),
        }
    none, simulated = modes["none"], modes["simulated"]
    return {
        "by_tee": modes,
        "round_time_ratio_mean": _ratio(
            simulated["later_mean_seconds"], none["later_mean_seconds"]
        ),
        "round_time_ratio_median": _ratio(
            simulated["later_median_seconds"], none["later_median_seconds"]
        ),
        "round_1_ratio": _ratio(simulated["round_1_seconds"], none["round_1_seconds"]),
        "round_1_extra_seconds": simulated["round_1_seconds"] - none["round_1_seconds"],
        "wall_ratio": _ratio(simulated["wall_seconds"], none["wall_seconds"]),
    }


def layout_figures(layout: ModelLayout, table_names: Mapping[str, str]) -> dict[str, Any]:
    """Bytes of the model and of its parts; ``table_names`` maps each embedding table's
    array name to its feature. Returns the bytes of one row of each table too."""
    model = embedding = 0
    row_bytes: dict[str, int] = {}
    for name, spec in layout.specs.items():
        itemsize = np.dtype(spec.dtype).itemsize
        size = int(np.prod(spec.shape, dtype=np.int64)) * itemsize
        model += size
        if spec.table:
            embedding += size
            feature = table_names.get(name)
            if feature is None:
                raise MetricsReportError(f"embedding table {name} matches no categorical feature")
            row_bytes[feature] = int(np.prod(spec.shape[1:], dtype=np.int64)) * itemsize
    return {
        "model_bytes": model,
        "embedding_bytes": embedding,
        "dense_layer_bytes": model - embedding,
        "row_bytes": row_bytes,
    }


def touched_row_figures(
    party_rows: Mapping[str, np.ndarray],
    feature_names: Sequence[str],
    table_sizes: Sequence[int],
) -> dict[str, Any]:
    """Per party, the embedding rows its training rows use (what one local epoch touches,
    hence what a sparse update carries), per feature and as a fraction of all rows."""
    total_rows = int(sum(table_sizes))
    parties: dict[str, Any] = {}
    for party, categorical in party_rows.items():
        per_feature = {
            name: int(np.unique(categorical[:, column]).size)
            for column, name in enumerate(feature_names)
        }
        touched = sum(per_feature.values())
        parties[party] = {
            "touched_rows": touched,
            "fraction": touched / total_rows,
            "per_feature": per_feature,
        }
    fractions = [entry["fraction"] for entry in parties.values()]
    return {
        "embedding_rows": total_rows,
        "mean_fraction": statistics.fmean(fractions) if fractions else 0.0,
        "parties": parties,
    }


def predicted_sparse_bytes(
    layout_info: Mapping[str, Any], per_feature_touched: Mapping[str, int]
) -> int:
    """Payload bytes a sparse update needs for its numbers alone: every dense layer, and
    per touched row its values plus an 8-byte row id (protobuf framing not counted)."""
    from enclaverec.arrays import ROW_ID_DTYPE

    rows = sum(
        count * (layout_info["row_bytes"][feature] + ROW_ID_DTYPE.itemsize)
        for feature, count in per_feature_touched.items()
    )
    return int(layout_info["dense_layer_bytes"] + rows)


def bytes_run_figures(metrics: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, Any]:
    """One update-bytes run: the mean from metrics.json and each round's bytes per party
    from the aggregator's summary."""
    per_round = [
        {"round": int(entry["round"]), "bytes_received": dict(entry["bytes_received"])}
        for entry in summary["history"]
    ]
    sizes = [size for entry in per_round for size in entry["bytes_received"].values()]
    if not sizes:
        raise TrainingError("the aggregator recorded no update")
    return {
        "update_encoding": metrics["update_encoding"],
        "update_bytes_per_party_per_round": float(metrics["update_bytes_per_party_per_round"]),
        "min_bytes": min(sizes),
        "max_bytes": max(sizes),
        "per_round": per_round,
        "rounds_completed": int(metrics["rounds_completed"]),
        "round_seconds": list(metrics["round_seconds"]),
        "wall_seconds": float(metrics["wall_seconds"]),
        "test_auc": float(metrics["test_auc"]),
    }


def bytes_comparison(sparse: Mapping[str, Any], dense: Mapping[str, Any]) -> dict[str, Any]:
    """Dense over sparse, and whether both runs ended at the same model quality (sparse
    updates drop only rows whose delta is exactly zero, so they should)."""
    return {
        "dense_to_sparse_ratio": _ratio(
            dense["update_bytes_per_party_per_round"], sparse["update_bytes_per_party_per_round"]
        ),
        "test_auc_difference": dense["test_auc"] - sparse["test_auc"],
    }


# --- running federations ----------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainingError(f"cannot read {path}: {exc}") from exc


def run_federation(flags: Sequence[str], output: Path, dataset: Any) -> tuple[dict, dict]:
    """``enclaverec federated simulate FLAGS --output OUTPUT`` (exactly what the command
    runs, with the data set loaded once by the caller); returns metrics.json and the
    aggregator's summary as written."""
    from enclaverec.cli.commands.federated import simulate_federation
    from enclaverec.cli.main import build_parser
    from enclaverec.federated.aggregator import SUMMARY_FILE
    from enclaverec.federated.setup import AGGREGATOR_DIR
    from enclaverec.federated.simulate import FEDERATION_DIR
    from enclaverec.report import METRICS_FILE

    args = build_parser().parse_args(["federated", "simulate", *flags, "--output", str(output)])
    simulate_federation(args=args, output=output, dataset=dataset)
    metrics = _read_json(output / METRICS_FILE)
    summary = _read_json(output / FEDERATION_DIR / AGGREGATOR_DIR / SUMMARY_FILE)
    return metrics, summary


def _announce(text: str) -> None:
    stderr_console().rule(text)


def measure_update_bytes(config: BenchFederatedConfig, work: Path) -> dict[str, Any]:
    """Part (a): sparse and dense updates of the same federation."""
    from enclaverec.data.prepared import load_prepared
    from enclaverec.data.sources import DataSelection, load_dataset
    from enclaverec.dlrm.weights import EMBEDDING_PREFIX
    from enclaverec.federated.config import FEDERATION_FILE, FederationConfig
    from enclaverec.federated.setup import party_id
    from enclaverec.federated.simulate import FEDERATION_DIR

    data_file = work / f"synthetic-{config.rows}.tsv"
    stderr_console().print(
        f"writing {config.rows:,} rows of the synthetic data set as a Criteo file", markup=False
    )
    write_synthetic_criteo(data_file, config.rows)
    dataset = load_dataset(
        DataSelection(paths=(data_file,)),
        seed=config.seed,
        table_size=config.table_size,
        progress=True,
    )
    flags = [
        "--data", str(data_file),
        "--table-size", str(config.table_size),
        "--model", config.bytes_model_flag,
        "--parties", str(config.bytes_parties),
        "--rounds", str(config.bytes_rounds),
        "--seed", str(config.seed),
        "--tee", "simulated",
    ]  # fmt: skip
    runs: dict[str, dict[str, Any]] = {}
    for encoding in ("sparse", "dense"):
        _announce(f"update bytes: {encoding} updates")
        output = work / f"bytes-{encoding}"
        extra = ["--dense-updates"] if encoding == "dense" else []
        metrics, summary = run_federation([*flags, *extra], output, dataset)
        runs[encoding] = bytes_run_figures(metrics, summary)
    federation = work / "bytes-sparse" / FEDERATION_DIR
    plan = FederationConfig.load(federation / FEDERATION_FILE).plan
    _, layout = plan.initial_model()
    features = plan.features
    layout_info = layout_figures(
        layout, {EMBEDDING_PREFIX + name: name for name in features.categorical_names}
    )
    party_rows = {
        party_id(i): load_prepared(federation / party_id(i) / "data").train.categorical
        for i in range(config.bytes_parties)
    }
    touched = touched_row_figures(party_rows, features.categorical_names, features.table_sizes)
    for party, entry in touched["parties"].items():
        entry["predicted_sparse_payload_bytes"] = predicted_sparse_bytes(
            layout_info, entry["per_feature"]
        )
        measured = [r["bytes_received"].get(party) for r in runs["sparse"]["per_round"]]
        entry["measured_sparse_bytes"] = measured
    return {
        "data": {
            "source": "the first rows of the built-in synthetic data set, written as a Criteo "
            "TSV file and loaded with --data FILE --table-size",
            "dataset": dataset.name,
            "rows": config.rows,
            "train_rows": len(dataset.train),
            "table_size": config.table_size,
            "tables": features.num_categorical,
        },
        "model": plan.preset,
        "parties": config.bytes_parties,
        "rounds": config.bytes_rounds,
        "tee": "simulated",
        **{key: value for key, value in layout_info.items() if key != "row_bytes"},
        "embedding_row_bytes": sorted(set(layout_info["row_bytes"].values())),
        "touched_rows": touched,
        "sparse": runs["sparse"],
        "dense": runs["dense"],
        **bytes_comparison(runs["sparse"], runs["dense"]),
    }


@contextlib.contextmanager
def _quiet(names: Sequence[str]) -> Iterator[None]:
    """Keep the per-connection info lines of these loggers (a dozen sessions) out of the
    benchmark's output; warnings (the SIMULATED notices) still show, and ``--log-level
    debug`` shows everything."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _spread(samples: Sequence[float]) -> dict[str, Any]:
    return {
        "median_seconds": statistics.median(samples),
        "min_seconds": min(samples),
        "max_seconds": max(samples),
        "samples": len(samples),
    }


def measure_attestation(federation: Path, state_dir: Path, enrollments: int) -> dict[str, Any]:
    """The attested start and joins of a simulated federation, with its own files: the
    aggregator role as ``federated aggregator`` builds it (fresh sealed state), each
    party's session as ``federated party`` builds it, in this process over loopback."""
    from enclaverec.federated.config import FEDERATION_FILE, PARTY_FILE
    from enclaverec.federated.roles import make_aggregator, make_party_session
    from enclaverec.transport.proto import federated_pb2, federated_pb2_grpc
    from enclaverec.transport.server import ListenConfig

    party_configs = sorted(federation.glob(f"party-*/{PARTY_FILE}"))
    if not party_configs:
        raise TrainingError(f"no party configuration under {federation}")
    started = time.perf_counter()
    aggregator = make_aggregator(
        federation / FEDERATION_FILE, state_dir=state_dir, listen=ListenConfig()
    )
    identity = aggregator.server.identity
    if identity is None:
        raise UsageError("attestation cost needs a federation with a TEE (not --tee none)")
    endpoints = aggregator.server.start()
    startup = time.perf_counter() - started
    verify: list[float] = []
    enroll: list[float] = []
    first_call: list[float] = []
    try:
        renewals = [_timed(identity.rotate) for _ in range(enrollments)]
        for config_path in party_configs:
            for _ in range(enrollments):
                setup = make_party_session(
                    config_path,
                    aggregator_port=endpoints.application_port,
                    aggregator_enrollment_port=endpoints.enrollment_port,
                )
                session: Any = setup.session
                try:
                    # 1. Fetch the aggregator's RA-TLS certificate, verify its quote and
                    #    policy, pin it. 2. Enroll: nonce, own quote, membership signature,
                    #    the aggregator's checks, a client certificate. 3. The first RPC
                    #    over mutual TLS.
                    verify.append(_timed(lambda s=session: s.server))
                    enroll.append(_timed(session.open))
                    first_call.append(
                        _timed(
                            lambda s=session: s.call(
                                lambda channel: federated_pb2_grpc.AggregatorStub(channel).GetPlan(
                                    federated_pb2.PlanRequest(), timeout=60
                                )
                            )
                        )
                    )
                finally:
                    session.close()
    finally:
        aggregator.server.stop(grace=0)
    return {
        "aggregator_start_seconds": startup,
        "certificate_renewal": _spread(renewals),
        "verify_and_pin_aggregator": _spread(verify),
        "enroll": _spread(enroll),
        "first_call_mutual_tls": _spread(first_call),
        "party_join_median_seconds": statistics.median(
            v + e + c for v, e, c in zip(verify, enroll, first_call, strict=True)
        ),
        "note": "aggregator and parties in one process over loopback; in a federation each "
        "party joins in parallel with the others",
    }


def measure_overhead(config: BenchFederatedConfig, work: Path) -> dict[str, Any]:
    """Part (b): the same federation with ``--tee none`` and with the simulated TEE."""
    from enclaverec.data.sources import DataSelection, load_dataset
    from enclaverec.federated.simulate import FEDERATION_DIR

    dataset = load_dataset(DataSelection(dataset=config.dataset), seed=config.seed, progress=True)
    flags = [
        "--dataset", config.dataset,
        "--parties", str(config.parties),
        "--rounds", str(config.rounds),
        "--seed", str(config.seed),
    ]  # fmt: skip
    if config.model == "logreg":
        flags += ["--model", "logreg"]
    runs = []
    preset = None
    last_simulated: Path | None = None
    for repeat in range(1, config.repeats + 1):
        for tee in ("none", "simulated"):
            _announce(f"security overhead: --tee {tee} (run {repeat} of {config.repeats})")
            output = work / f"overhead-{tee}-{repeat}"
            metrics, _ = run_federation([*flags, "--tee", tee], output, dataset)
            preset = metrics["preset"]
            runs.append(
                {
                    "tee": tee,
                    "repeat": repeat,
                    "round_seconds": list(metrics["round_seconds"]),
                    **round_time_figures(metrics["round_seconds"]),
                    "wall_seconds": float(metrics["wall_seconds"]),
                    "test_auc": float(metrics["test_auc"]),
                    "update_bytes_per_party_per_round": float(
                        metrics["update_bytes_per_party_per_round"]
                    ),
                    # --tee none lists its peers too, as declared (not authenticated).
                    "authenticated_peers": sum(
                        1 for peer in metrics["attested_peers"] if peer.get("authenticated")
                    ),
                }
            )
            if tee == "simulated":
                last_simulated = output / FEDERATION_DIR
    if last_simulated is None:  # repeats >= 1 makes this unreachable; never time nothing
        raise TrainingError("no simulated federation ran")
    _announce("attestation and enrollment cost")
    with _quiet(("enclaverec.transport", "enclaverec.tee.sealed_keys", "enclaverec.federated")):
        attestation = measure_attestation(
            last_simulated, work / "attestation-state", config.enrollments
        )
    return {
        "dataset": config.dataset,
        "model": preset,
        "parties": config.parties,
        "rounds": config.rounds,
        "repeats": config.repeats,
        "runs": runs,
        **overhead_figures(runs),
        "attestation": attestation,
    }


# --- output ----------------------------------------------------------------------------


def _environment(load_before: float) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_before": load_before,
        "load_average_1min_after": os.getloadavg()[0],
    }


def _mb(value: float) -> str:
    return f"{value / 1e6:,.2f} MB"


def _seconds(value: float) -> str:
    return f"{value:.3f} s" if value < 10 else f"{value:,.1f} s"


def _print(report: Mapping[str, Any]) -> None:
    from rich.table import Table

    console = stdout_console()
    part = report.get("update_bytes")
    if part is not None:
        table = Table(
            title=(
                f"update bytes per party per round: {part['model']} preset, "
                f"{part['data']['tables']} tables x {part['data']['table_size']:,} rows, "
                f"{part['data']['rows']:,} synthetic rows, {part['parties']} parties, "
                f"{part['rounds']} round(s)"
            )
        )
        for header in ("updates", "bytes / party / round", "min - max", "test AUC", "wall"):
            table.add_column(header, justify="left" if header == "updates" else "right")
        for encoding in ("sparse", "dense"):
            run = part[encoding]
            table.add_row(
                encoding,
                _mb(run["update_bytes_per_party_per_round"]),
                f"{_mb(run['min_bytes'])} - {_mb(run['max_bytes'])}",
                f"{run['test_auc']:.4f}",
                _seconds(run["wall_seconds"]),
            )
        console.print(table)
        ratio = part["dense_to_sparse_ratio"]
        console.print(
            f"model {_mb(part['model_bytes'])} (embeddings {_mb(part['embedding_bytes'])}, "
            f"dense layers {_mb(part['dense_layer_bytes'])}); a party's epoch touches "
            f"{part['touched_rows']['mean_fraction']:.2%} of the embedding rows; dense / sparse "
            + (f"= {ratio:,.1f}x" if ratio is not None else "undefined (no sparse bytes)"),
            markup=False,
            soft_wrap=True,
        )
    part = report.get("security_overhead")
    if part is not None:
        table = Table(
            title=(
                f"security overhead: {part['dataset']}, {part['parties']} parties, "
                f"{part['model']}, {part['rounds']} rounds x {part['repeats']} run(s) per mode"
            )
        )
        for header in ("tee", "rounds 2..N mean", "median", "round 1", "wall"):
            table.add_column(header, justify="left" if header == "tee" else "right")
        for tee, figures in part["by_tee"].items():
            table.add_row(
                tee,
                _seconds(figures["later_mean_seconds"]),
                _seconds(figures["later_median_seconds"]),
                _seconds(figures["round_1_seconds"]),
                _seconds(figures["wall_seconds"]),
            )

        def ratio(value: float | None) -> str:
            return f"{value:.2f}x" if value is not None else "-"

        table.add_row(
            "simulated / none",
            ratio(part["round_time_ratio_mean"]),
            ratio(part["round_time_ratio_median"]),
            ratio(part["round_1_ratio"]),
            ratio(part["wall_ratio"]),
        )
        console.print(table)
        attestation = part["attestation"]
        table = Table(title="attestation and enrollment (simulated TEE, this process, loopback)")
        table.add_column("step")
        table.add_column("median", justify="right")
        table.add_column("min - max", justify="right")
        table.add_row(
            "aggregator start (sealed keys, quote, RA-TLS cert)",
            f"{attestation['aggregator_start_seconds'] * 1e3:,.0f} ms",
            "1 sample",
        )
        for key, label in (
            ("certificate_renewal", "RA-TLS certificate renewal (fresh quote)"),
            ("verify_and_pin_aggregator", "party: verify and pin the aggregator"),
            ("enroll", "party: enroll (quote, signature, checks)"),
            ("first_call_mutual_tls", "party: first call over mutual TLS"),
        ):
            spread = attestation[key]
            table.add_row(
                label,
                f"{spread['median_seconds'] * 1e3:,.1f} ms",
                f"{spread['min_seconds'] * 1e3:,.1f} - {spread['max_seconds'] * 1e3:,.1f} ms",
            )
        console.print(table)
    environment = report["environment"]
    console.print(
        f"load average {environment['load_average_1min_before']:.2f} before, "
        f"{environment['load_average_1min_after']:.2f} after, on {environment['cpu_count']} "
        "cores: figures taken while other processes run are provisional",
        markup=False,
        soft_wrap=True,
    )


def run_benchmark(config: BenchFederatedConfig, work: Path) -> dict[str, Any]:
    """Every part ``config`` asks for, run in ``work`` (which must exist)."""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    report: dict[str, Any] = {"benchmark": "federated", "model": config.model}
    if "bytes" in config.parts:
        report["update_bytes"] = measure_update_bytes(config, work)
    if "overhead" in config.parts:
        report["security_overhead"] = measure_overhead(config, work)
    report["wall_seconds"] = time.perf_counter() - started
    report["environment"] = _environment(load_before)
    report["note"] = "provisional unless the machine was otherwise idle"
    return report


def _bench(args: argparse.Namespace) -> int:
    from enclaverec.report import write_json

    config = parse_config(args)
    output = parse_path("output", args.output) if args.output is not None else None
    if output is not None and not output.parent.is_dir():
        raise UsageError(f"directory does not exist: {output.parent}")
    if args.runs is not None:
        runs = parse_path("runs", args.runs)
        if runs.exists() and any(runs.iterdir()):
            raise UsageError(f"refusing to write into the non-empty folder {runs}")
        runs.mkdir(parents=True, exist_ok=True)
        report = run_benchmark(config, runs)
    else:
        # The runs hold plaintext data shares and the simulation's keys: removed at the end.
        with tempfile.TemporaryDirectory(prefix="enclaverec-bench-federated-") as work:
            report = run_benchmark(config, Path(work))
    _print(report)
    if output is not None:
        write_json(output, report)
        stdout_console().print(f"written: {output}", markup=False)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``federated`` to the ``bench`` group."""
    parser = add_command(
        subparsers,
        "federated",
        help="federated learning: update bytes (sparse vs dense) and the cost of the TEE",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        handler=_bench,
    )
    parser.add_argument("--output", metavar="FILE.json", help="also write the figures as JSON")
    parser.add_argument(
        "--only", action="append", choices=PARTS, help="run only this part (repeatable)"
    )
    parser.add_argument(
        "--model",
        choices=MODELS,
        default="dlrm",
        help="dlrm: the kaggle preset for bytes, the data set's default preset for overhead; "
        "logreg: the numpy logistic regression for both, a quick check (default: dlrm)",
    )
    bytes_group = parser.add_argument_group("update bytes")
    bytes_group.add_argument(
        "--rows",
        default=str(DEFAULT_ROWS),
        metavar="N",
        help=f"synthetic rows written as the Criteo file (default: {DEFAULT_ROWS:,})",
    )
    bytes_group.add_argument(
        "--table-size",
        default=str(DEFAULT_TABLE_SIZE),
        metavar="ROWS",
        help=f"rows per embedding table (default: {DEFAULT_TABLE_SIZE:,})",
    )
    bytes_group.add_argument(
        "--bytes-parties",
        default=str(DEFAULT_BYTES_PARTIES),
        metavar="N",
        help=f"parties (default: {DEFAULT_BYTES_PARTIES})",
    )
    bytes_group.add_argument(
        "--bytes-rounds",
        default=str(DEFAULT_BYTES_ROUNDS),
        metavar="R",
        help=f"rounds (default: {DEFAULT_BYTES_ROUNDS})",
    )
    overhead = parser.add_argument_group("security overhead")
    overhead.add_argument(
        "--dataset",
        choices=OVERHEAD_DATASETS,
        default=DEFAULT_DATASET,
        help=f"(default: {DEFAULT_DATASET})",
    )
    overhead.add_argument(
        "--parties",
        default=str(DEFAULT_PARTIES),
        metavar="N",
        help=f"parties (default: {DEFAULT_PARTIES})",
    )
    overhead.add_argument(
        "--rounds",
        default=str(DEFAULT_ROUNDS),
        metavar="R",
        help=f"rounds, at least 2: round 1 is timed apart (default: {DEFAULT_ROUNDS})",
    )
    overhead.add_argument(
        "--repeats",
        default=str(DEFAULT_REPEATS),
        metavar="N",
        help=f"runs per TEE mode, interleaved (default: {DEFAULT_REPEATS})",
    )
    overhead.add_argument(
        "--enrollments",
        default=str(DEFAULT_ENROLLMENTS),
        metavar="N",
        help="sessions opened per party to time verification and enrollment "
        f"(default: {DEFAULT_ENROLLMENTS})",
    )
    parser.add_argument("--seed", default="0", help="split, partition and weights (default: 0)")
    parser.add_argument(
        "--runs",
        metavar="DIR",
        help="keep every federation's folder here (new or empty; it holds plaintext data "
        "shares and simulation keys); default: a temporary folder, removed",
    )
