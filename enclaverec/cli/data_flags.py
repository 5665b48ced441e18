"""The data flags that a training command shares (``--dataset`` or ``--data``, the seed,
the table size, bad lines), and the :class:`~enclaverec.app.data.DataConfig` they make."""

from __future__ import annotations

import argparse

from enclaverec.app.data import DEFAULT_SEED, DataConfig
from enclaverec.cli.options import parse_integer, parse_path
from enclaverec.data.criteo import OnBadLine
from enclaverec.data.registry import dataset_help, dataset_names
from enclaverec.data.sources import DataSelection


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--dataset", choices=dataset_names(), help=f"a built-in data set ({dataset_help()})"
    )
    source.add_argument(
        "--data", nargs="+", metavar="PATH", help="Criteo-format files (plain or gzip)"
    )
    parser.add_argument("--table-size", metavar="ROWS", help="rows per embedding table for --data")
    parser.add_argument(
        "--on-bad-line",
        choices=tuple(mode.value for mode in OnBadLine),
        default=OnBadLine.FAIL.value,
        help="malformed lines (default: fail)",
    )
    parser.add_argument(
        "--seed",
        default=str(DEFAULT_SEED),
        help=f"split, partition and initial weights (default: {DEFAULT_SEED})",
    )


def data_config(args: argparse.Namespace) -> DataConfig:
    if args.data:
        selection = DataSelection(paths=tuple(parse_path("data", p) for p in args.data))
    else:
        selection = DataSelection(dataset=args.dataset)
    return DataConfig(
        selection=selection,
        seed=parse_integer("seed", args.seed, minimum=0),
        table_size=parse_integer("table-size", args.table_size, minimum=2)
        if args.table_size
        else None,
        on_bad_line=OnBadLine.parse(args.on_bad_line),
    )
