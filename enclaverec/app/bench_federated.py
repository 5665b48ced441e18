"""The federated benchmark: update bytes and the cost of security, on real federations
(``enclaverec bench federated`` is its command line).

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

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from enclaverec.app.data import DataConfig, load_data
from enclaverec.app.events import JobEvents, QuietEvents, quiet_loggers
from enclaverec.app.federation import (
    FederationPlanConfig,
    FederationSetup,
    SimulationConfig,
    simulate_federation,
)
from enclaverec.arrays import ModelLayout
from enclaverec.data.registry import dataset_names
from enclaverec.errors import ConfigError, MetricsReportError, TrainingError, UsageError
from enclaverec.tee.kinds import TEEKind

PARTS = ("bytes", "overhead")
MODELS = ("dlrm", "logreg")
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
    """What one ``bench federated`` invocation runs (the defaults are the documented shape)."""

    parts: tuple[str, ...] = PARTS
    model: str = "dlrm"
    rows: int = DEFAULT_ROWS
    table_size: int = DEFAULT_TABLE_SIZE
    bytes_parties: int = DEFAULT_BYTES_PARTIES
    bytes_rounds: int = DEFAULT_BYTES_ROUNDS
    dataset: str = DEFAULT_DATASET
    parties: int = DEFAULT_PARTIES
    rounds: int = DEFAULT_ROUNDS
    repeats: int = DEFAULT_REPEATS
    enrollments: int = DEFAULT_ENROLLMENTS
    seed: int = 0

    @property
    def bytes_model_flag(self) -> str:
        """The ``--model`` of the update-bytes runs."""
        return "logreg" if self.model == "logreg" else "kaggle"

    def __post_init__(self) -> None:
        """Check every value before anything runs; a bad one is a ``ConfigError`` (exit 2)."""
        from enclaverec.data.synthetic import SyntheticConfig

        unknown = [part for part in self.parts if part not in PARTS]
        if unknown or not self.parts:
            raise ConfigError(f"--only must be among {', '.join(PARTS)}, got {unknown}")
        if self.model not in MODELS:
            raise ConfigError(f"--model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.dataset not in dataset_names():
            raise ConfigError(
                f"--dataset must be one of {', '.join(dataset_names())}, got {self.dataset!r}"
            )
        available = SyntheticConfig().num_rows
        if self.rows < MIN_ROWS:
            raise ConfigError(f"--rows must be at least {MIN_ROWS}, got {self.rows}")
        if self.rows > available:
            raise ConfigError(
                f"--rows must be at most {available:,} (the synthetic data set), got {self.rows}"
            )
        if self.rows < MIN_ROWS * self.bytes_parties:
            raise ConfigError(
                f"--rows {self.rows} leaves under {MIN_ROWS} rows per party for "
                f"{self.bytes_parties} parties"
            )
        for name, value, minimum in (
            ("table-size", self.table_size, 2),
            ("bytes-parties", self.bytes_parties, 1),
            ("bytes-rounds", self.bytes_rounds, 1),
            ("parties", self.parties, 1),
            # Round 1 includes start-up and enrollment and is excluded: at least one more.
            ("rounds", self.rounds, 2),
            ("repeats", self.repeats, 1),
            ("enrollments", self.enrollments, 1),
            ("seed", self.seed, 0),
        ):
            if value < minimum:
                raise ConfigError(f"--{name} must be at least {minimum}, got {value}")


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


def run_federation(
    setup: FederationSetup,
    output: Path,
    dataset: Any,
    *,
    tee: TEEKind,
    events: JobEvents,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One ``federated simulate`` run (the library function the command runs, with the
    data set loaded once by the caller); returns its metrics report and the aggregator's
    summary."""
    result = simulate_federation(
        SimulationConfig(setup=setup, output=output, tee=tee), dataset=dataset, events=events
    )
    return result.metrics(), dict(result.summary)


def measure_update_bytes(
    config: BenchFederatedConfig, work: Path, events: JobEvents
) -> dict[str, Any]:
    """Part (a): sparse and dense updates of the same federation."""
    from enclaverec.data.prepared import load_prepared
    from enclaverec.data.sources import DataSelection
    from enclaverec.dlrm.weights import EMBEDDING_PREFIX
    from enclaverec.federated.config import FEDERATION_FILE, FederationConfig
    from enclaverec.federated.setup import party_id
    from enclaverec.federated.simulate import FEDERATION_DIR

    data_file = work / f"synthetic-{config.rows}.tsv"
    events.note(f"writing {config.rows:,} rows of the synthetic data set as a Criteo file")
    write_synthetic_criteo(data_file, config.rows)
    data = DataConfig(
        DataSelection(paths=(data_file,)), seed=config.seed, table_size=config.table_size
    )
    dataset = load_data(data)
    runs: dict[str, dict[str, Any]] = {}
    for encoding in ("sparse", "dense"):
        events.section(f"update bytes: {encoding} updates")
        setup = FederationSetup(
            data=data,
            parties=config.bytes_parties,
            plan=FederationPlanConfig(
                model=config.bytes_model_flag,
                rounds=config.bytes_rounds,
                dense_updates=encoding == "dense",
            ),
        )
        metrics, summary = run_federation(
            setup, work / f"bytes-{encoding}", dataset, tee=TEEKind.SIMULATED, events=events
        )
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
    from enclaverec.roles.aggregator import make_aggregator
    from enclaverec.roles.party import make_party_session
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


def measure_overhead(config: BenchFederatedConfig, work: Path, events: JobEvents) -> dict[str, Any]:
    """Part (b): the same federation with ``--tee none`` and with the simulated TEE."""
    from enclaverec.federated.simulate import FEDERATION_DIR

    data = DataConfig.builtin(config.dataset, seed=config.seed)
    dataset = load_data(data)
    setup = FederationSetup(
        data=data,
        parties=config.parties,
        plan=FederationPlanConfig(
            model="logreg" if config.model == "logreg" else None, rounds=config.rounds
        ),
    )
    runs = []
    preset = None
    last_simulated: Path | None = None
    for repeat in range(1, config.repeats + 1):
        for tee in (TEEKind.NONE, TEEKind.SIMULATED):
            events.section(
                f"security overhead: --tee {tee.value} (run {repeat} of {config.repeats})"
            )
            output = work / f"overhead-{tee.value}-{repeat}"
            metrics, _ = run_federation(setup, output, dataset, tee=tee, events=events)
            preset = metrics["preset"]
            runs.append(
                {
                    "tee": tee.value,
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
            if tee is TEEKind.SIMULATED:
                last_simulated = output / FEDERATION_DIR
    if last_simulated is None:  # repeats >= 1 makes this unreachable; never time nothing
        raise TrainingError("no simulated federation ran")
    events.section("attestation and enrollment cost")
    with quiet_loggers(
        ("enclaverec.transport", "enclaverec.tee.sealed_keys", "enclaverec.federated")
    ):
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


# --- the whole benchmark ---------------------------------------------------------------


def _environment(load_before: float) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_before": load_before,
        "load_average_1min_after": os.getloadavg()[0],
    }


def run_benchmark(
    config: BenchFederatedConfig, work: Path, *, events: JobEvents | None = None
) -> dict[str, Any]:
    """Every part ``config`` asks for, run in ``work`` (which must exist)."""
    events = events or QuietEvents()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    report: dict[str, Any] = {"benchmark": "federated", "model": config.model}
    if "bytes" in config.parts:
        report["update_bytes"] = measure_update_bytes(config, work, events)
    if "overhead" in config.parts:
        report["security_overhead"] = measure_overhead(config, work, events)
    report["wall_seconds"] = time.perf_counter() - started
    report["environment"] = _environment(load_before)
    report["note"] = "provisional unless the machine was otherwise idle"
    return report
