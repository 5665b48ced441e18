"""``enclaverec data prepare | partition | inspect``: plaintext data sets, on the owner's side."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enclaverec.cli.output import stderr_console, stdout_console
from enclaverec.cli.registry import add_command
from enclaverec.errors import UsageError

if TYPE_CHECKING:
    from enclaverec.data.schema import DataSet
    from enclaverec.data.sources import DataSelection

from enclaverec.data.hashing import DEFAULT_TABLE_SIZE
from enclaverec.data.registry import dataset_help, dataset_names

_PLAINTEXT_NOTE = """\
The files written hold plaintext training data: keep them on the data owner's own
premises. To send data to untrusted storage or a cluster, use `enclaverec data encrypt`."""

_PREPARE_DESCRIPTION = f"""\
Load a data set, split it into train/validation/test (80/10/10 by a keyed hash of each
row's index and --seed) and write DIR/spec.json plus DIR/train.npz, validation.npz and
test.npz (arrays dense, categorical, labels, row_ids). The folder appears complete or not
at all; an existing DIR is refused. docs/data.md describes the format.

{_PLAINTEXT_NOTE}"""

_PARTITION_DESCRIPTION = f"""\
Split a data set as `prepare` does (or take a prepared folder), then assign its rows to
--parties parties: iid, by-user (all rows of a user at one party; needs a user column:
movielens-100k and synthetic have one, Criteo files do not), or dirichlet:ALPHA (label
skew; small ALPHA, strong skew). Each party gets its share of train and validation, and
its share of the one global test split, so every mode is scored on the same test rows.
Writes DIR/party-0, DIR/party-1, ... (each a prepared folder) and DIR/partition.json.

{_PLAINTEXT_NOTE}"""

_INSPECT_DESCRIPTION = f"""\
Print a summary (rows per split, label rate, categorical cardinality seen, missing rate,
test_split_sha256) of a built-in data set ({", ".join(dataset_names())}), of Criteo files, of
a prepared or partitioned folder, or of an encrypted data file (its header only: no key
needed, nothing decrypted). A built-in name wins over a file of the same name; write
./NAME for the file. The summary holds counts and digests only, never data values."""


_SEED_HELP = "seed of the split (default: 0)"
_PARTITION_SEED_HELP = (
    "seed of the split and of the partition (default: 0); with --prepared the split is the "
    "folder's, and --seed (default: the folder's seed) seeds the partition only"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``prepare``, ``partition`` and ``inspect`` to the ``data`` group."""
    prepare = add_command(
        subparsers,
        "prepare",
        help="split a data set and write it in the prepared form (plaintext)",
        description=_PREPARE_DESCRIPTION,
        handler=_prepare,
    )
    _add_selection(prepare)
    _add_loading(prepare)
    prepare.add_argument("--output", required=True, type=Path, metavar="DIR", help="new folder")

    partition = add_command(
        subparsers,
        "partition",
        help="split a data set and partition it across parties (plaintext)",
        description=_PARTITION_DESCRIPTION,
        handler=_partition,
    )
    _add_selection(partition, prepared=True)
    _add_loading(partition, seed_help=_PARTITION_SEED_HELP)
    partition.add_argument(
        "--parties", required=True, type=int, metavar="N", help="number of parties"
    )
    partition.add_argument(
        "--partition",
        required=True,
        metavar="MODE",
        help="iid, by-user or dirichlet:ALPHA (e.g. dirichlet:0.5)",
    )
    partition.add_argument("--output", required=True, type=Path, metavar="DIR", help="new folder")

    inspect = add_command(
        subparsers,
        "inspect",
        help="summarise a data set, Criteo files, a prepared folder or an encrypted file",
        description=_INSPECT_DESCRIPTION,
        handler=_inspect,
    )
    inspect.add_argument(
        "targets",
        nargs="+",
        metavar="TARGET",
        help=f"{', '.join(dataset_names())}, Criteo file(s), a prepared folder or a .enc file",
    )
    _add_loading(inspect)
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")


def _add_selection(parser: argparse.ArgumentParser, *, prepared: bool = False) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--dataset", metavar="NAME", help=f"a built-in data set ({dataset_help()})")
    group.add_argument(
        "--data", nargs="+", type=Path, metavar="PATH", help="Criteo TSV file(s), plain or gzip"
    )
    if prepared:
        group.add_argument(
            "--prepared", type=Path, metavar="DIR", help="a folder written by `data prepare`"
        )


def _add_loading(parser: argparse.ArgumentParser, *, seed_help: str = _SEED_HELP) -> None:
    parser.add_argument("--seed", type=int, metavar="S", help=seed_help)
    parser.add_argument(
        "--table-size",
        type=int,
        metavar="N",
        help=f"rows per categorical feature for --data (default: {DEFAULT_TABLE_SIZE:,})",
    )
    parser.add_argument(
        "--on-bad-line",
        choices=("fail", "skip"),
        default="fail",
        help="a malformed line stops the command (fail, the default) or is skipped and "
        "counted (skip)",
    )


def _selection(args: argparse.Namespace) -> DataSelection:
    from enclaverec.data.sources import DataSelection

    if args.dataset is not None:
        return DataSelection(dataset=args.dataset)
    return DataSelection(paths=tuple(args.data))


def _seed(args: argparse.Namespace, default: int = 0) -> int:
    seed = default if args.seed is None else args.seed
    if seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, got {seed}")
    return seed


def _load(args: argparse.Namespace, selection: DataSelection) -> DataSet:
    from enclaverec.data.sources import load_dataset

    dataset = load_dataset(
        selection,
        seed=_seed(args),
        table_size=args.table_size,
        on_bad_line=args.on_bad_line,
        progress=True,
    )
    skipped = int(dataset.info.get("bad_lines_skipped", 0))
    if skipped:
        _warn(f"warning: skipped {skipped:,} malformed line(s); first:")
        for message in dataset.info.get("bad_line_examples", []):
            _warn(f"  {message}")
    return dataset


def _prepare(args: argparse.Namespace) -> int:
    from enclaverec.data.prepared import save_prepared
    from enclaverec.data.schema import split_sha256

    dataset = _load(args, _selection(args))
    folder = save_prepared(dataset, args.output)
    _say(f"prepared {dataset.name} (seed {dataset.info['seed']}) in {folder}")
    _say(
        f"rows: train {len(dataset.train):,}, validation {len(dataset.validation):,}, "
        f"test {len(dataset.test):,}"
    )
    _say(f"test_split_sha256: {split_sha256(dataset.test.row_ids)}")
    _say("plaintext data: keep this folder on your own premises")
    return 0


def _partition(args: argparse.Namespace) -> int:
    from enclaverec.data.partition import parse_partition_mode, partition_dataset
    from enclaverec.data.prepared import load_prepared, save_partitioned

    mode = parse_partition_mode(args.partition)  # before loading: fail fast on a typo
    if args.prepared is not None:
        if args.table_size is not None:
            raise UsageError("--table-size does not apply to --prepared (already hashed)")
        dataset = load_prepared(args.prepared)
        seed = _seed(args, default=int(dataset.info.get("seed", 0)))
    else:
        dataset = _load(args, _selection(args))
        seed = _seed(args)
    parties = partition_dataset(dataset, parties=args.parties, mode=mode, seed=seed)
    folder = save_partitioned(parties, args.output)
    _say(
        f"partitioned {dataset.name} into {len(parties)} parties ({mode}, seed {seed}) in {folder}"
    )
    for p, party in enumerate(parties):
        _say(
            f"party-{p}: train {len(party.train):,}, validation {len(party.validation):,}, "
            f"test {len(party.test):,}"
        )
    _say(f"global test_split_sha256: {parties[0].info['global_test_split_sha256']}")
    _say("plaintext data: keep these folders on your own premises")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    summary = _summarise(args)
    if args.json:
        # Plain print: rich would wrap long lines and break the JSON.
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        _print_summary(summary)
    return 0


def _summarise(args: argparse.Namespace) -> dict[str, Any]:
    from enclaverec.data import prepared
    from enclaverec.data.sources import DataSelection
    from enclaverec.data.summary import describe_dataset, describe_parties

    targets = [str(t) for t in args.targets]
    if len(targets) == 1 and targets[0] in dataset_names():
        return describe_dataset(_load(args, DataSelection(dataset=targets[0])))
    paths = [Path(t) for t in targets]
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        _refuse_loading_flags(args, "a prepared folder")
        if prepared.is_partitioned(folder):
            partition = prepared.read_partition(folder)
            parties = [
                prepared.load_prepared(folder / name) for name in partition.get("folders", [])
            ]
            return describe_parties(parties, partition)
        return describe_dataset(prepared.load_prepared(folder))
    if len(paths) == 1 and _is_encrypted(paths[0]):
        from enclaverec.data.encrypted import describe_encrypted_file

        _refuse_loading_flags(args, "an encrypted file")
        return describe_encrypted_file(paths[0])
    for path in paths:
        if path.is_dir():
            raise UsageError(f"{path} is a folder: give one prepared folder, or Criteo files")
    return describe_dataset(_load(args, DataSelection(paths=tuple(paths))))


def _refuse_loading_flags(args: argparse.Namespace, what: str) -> None:
    if args.seed is not None or args.table_size is not None:
        raise UsageError(f"--seed and --table-size do not apply to {what}")


def _is_encrypted(path: Path) -> bool:
    from enclaverec.data.encrypted import MAGIC

    try:
        with path.open("rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False  # the Criteo reader reports missing or unreadable files


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.table import Table

    out = stdout_console()
    if "party" in summary:
        _say(f"{summary['dataset']}: {summary['parties']} parties, {summary['mode']}")
        table = Table("party", "train", "validation", "test", "test positive rate")
        for party in summary["party"]:
            rows = party["rows"]
            table.add_row(
                str(party["party"]),
                f"{rows['train']:,}",
                f"{rows['validation']:,}",
                f"{rows['test']:,}",
                _fmt(party["positive_rate"]["test"]),
            )
        out.print(table)
        _say(
            f"global test_split_sha256: {summary['global_test_split_sha256']}\n"
            f"union of parties' test rows is the global test split: "
            f"{summary['union_is_global_test_split']}"
        )
        return
    if "rows" not in summary:  # an encrypted file's header
        for key, value in summary.items():
            _say(f"{key}: {value}")
        return
    _say(f"data set: {summary['dataset']} (seed {summary.get('seed')})")
    table = Table("split", "rows", "positive rate")
    for name in ("train", "validation", "test"):
        table.add_row(name, f"{summary['rows'][name]:,}", _fmt(summary["positive_rate"][name]))
    out.print(table)
    features = Table("categorical feature", "table size", "distinct rows seen", "row 0 rate")
    for feature in summary["categorical_features"]:
        features.add_row(
            feature["name"],
            f"{feature['table_size']:,}",
            f"{feature['distinct_rows_seen']:,}",
            _fmt(feature["row0_rate"]),
        )
    out.print(features)
    _say(f"dense features: {', '.join(summary['dense_features'])}")
    for key in ("oracle_auc", "bad_lines_skipped", "global_test_split_sha256"):
        if key in summary:
            _say(f"{key}: {summary[key]}")
    _say(f"test_split_sha256: {summary['test_split_sha256']}")


def _say(text: str) -> None:
    # soft_wrap: a digest or a path must stay on one line, whatever the terminal width.
    stdout_console().print(text, markup=False, soft_wrap=True)


def _warn(text: str) -> None:
    stderr_console().print(text, markup=False, soft_wrap=True)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
