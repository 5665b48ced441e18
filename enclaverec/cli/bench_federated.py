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
from collections.abc import Mapping
from typing import Any

from enclaverec.app.bench_federated import (
    DEFAULT_BYTES_PARTIES,
    DEFAULT_BYTES_ROUNDS,
    DEFAULT_DATASET,
    DEFAULT_ENROLLMENTS,
    DEFAULT_PARTIES,
    DEFAULT_REPEATS,
    DEFAULT_ROUNDS,
    DEFAULT_ROWS,
    DEFAULT_TABLE_SIZE,
    MODELS,
    PARTS,
    BenchFederatedConfig,
    run_benchmark,
)
from enclaverec.cli.bench_runs import run_and_report
from enclaverec.cli.options import parse_integer
from enclaverec.cli.output import ConsoleEvents, stdout_console
from enclaverec.cli.registry import add_command
from enclaverec.data.registry import dataset_names


def parse_config(args: argparse.Namespace) -> BenchFederatedConfig:
    """The flags as the benchmark's configuration (which checks every value)."""
    return BenchFederatedConfig(
        parts=tuple(dict.fromkeys(args.only)) if args.only else PARTS,
        model=args.model,
        rows=parse_integer("rows", args.rows, minimum=1),
        table_size=parse_integer("table-size", args.table_size, minimum=2),
        bytes_parties=parse_integer("bytes-parties", args.bytes_parties, minimum=1),
        bytes_rounds=parse_integer("bytes-rounds", args.bytes_rounds, minimum=1),
        dataset=args.dataset,
        parties=parse_integer("parties", args.parties, minimum=1),
        rounds=parse_integer("rounds", args.rounds, minimum=2),
        repeats=parse_integer("repeats", args.repeats, minimum=1),
        enrollments=parse_integer("enrollments", args.enrollments, minimum=1),
        seed=parse_integer("seed", args.seed, minimum=0),
    )


# --- output ----------------------------------------------------------------------------


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


def _bench(args: argparse.Namespace) -> int:
    config = parse_config(args)
    return run_and_report(
        args,
        lambda work: run_benchmark(config, work, events=ConsoleEvents()),
        _print,
        prefix="enclaverec-bench-federated-",
    )


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
        choices=dataset_names(),
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
