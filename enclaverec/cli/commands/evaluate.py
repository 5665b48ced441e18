"""``enclaverec evaluate``: the test metrics of a saved model on a data set's test split.

The split is the pure function of (data set, seed) that training used, so with the same
data and seed this reproduces the training run's test metrics; the model's metadata
supplies the seed and table size unless given, and must match the data's features and
category hashing.
"""

from __future__ import annotations

import argparse
from typing import Any

from enclaverec.app.centralized import plain_hashing, start_tensorflow_threads
from enclaverec.cli.commands.train import add_data_options, data_selection
from enclaverec.cli.options import parse_choice, parse_integer, parse_path
from enclaverec.cli.output import stderr_console, stdout_console
from enclaverec.cli.registry import add_command
from enclaverec.errors import ConfigError

EVALUATION_FILE = "evaluation.json"


def _evaluate(args: argparse.Namespace) -> int:
    from enclaverec.data.schema import split_sha256
    from enclaverec.data.sources import load_dataset
    from enclaverec.evaluation import binary_metrics
    from enclaverec.model.metadata import read_metadata
    from enclaverec.report import write_json

    # Everything that can be refused is checked before TensorFlow starts.
    model_dir = parse_path("model", args.model)
    metadata = read_metadata(model_dir)
    selection = data_selection(args.dataset, args.data)
    seed = metadata.seed if args.seed is None else parse_integer("seed", args.seed, minimum=0)
    if seed != metadata.seed:
        # Another seed splits the rows differently: the "test" rows would include rows the
        # model was trained on, and the AUC would be inflated.
        raise ConfigError(
            f"the model was trained with seed {metadata.seed}; its test split is that seed's "
            f"(got --seed {seed})"
        )
    table_size = (
        metadata.table_size
        if args.table_size is None
        else parse_integer("table-size", args.table_size, minimum=2)
    )
    on_bad_line = parse_choice("on-bad-line", args.on_bad_line or "fail", ("fail", "skip"))
    dataset = load_dataset(
        selection, seed=seed, table_size=table_size, on_bad_line=on_bad_line, progress=True
    )
    if dataset.spec != metadata.spec:
        raise ConfigError(
            f"the model was trained on other features than {dataset.name} has "
            f"(model: {metadata.spec.num_dense} dense, categorical "
            f"{list(metadata.spec.table_sizes)} rows; data: {dataset.spec.num_dense} dense, "
            f"categorical {list(dataset.spec.table_sizes)} rows)"
        )
    data_hashing = plain_hashing(dataset.info.get("hashing"))
    if metadata.hashing is not None and data_hashing is not None:
        if dict(metadata.hashing) != data_hashing:
            raise ConfigError(
                "the data's categories are hashed differently from the model's training "
                "data (salt, function or table sizes differ)"
            )
    if dataset.name != metadata.dataset:
        stderr_console().print(
            f"note: the model was trained on {metadata.dataset}, scoring it on {dataset.name}",
            markup=False,
        )
    start_tensorflow_threads()
    from enclaverec.model.export import SavedDLRM

    model = SavedDLRM(model_dir)
    scores = binary_metrics(dataset.test.labels, model.predict(dataset.test))
    result: dict[str, Any] = {
        "model": str(model.directory),
        "dataset": dataset.name,
        "trained_on": metadata.dataset,
        "preset": metadata.preset,
        "seed": seed,
        "test_auc": scores.auc,
        "test_logloss": scores.logloss,
        "test_accuracy": scores.accuracy,
        "test_rows": scores.rows,
        "test_split_sha256": split_sha256(dataset.test.row_ids),
    }
    _print(result)
    if args.output is not None:
        path = write_json(parse_path("output", args.output) / EVALUATION_FILE, result)
        stdout_console().print(f"evaluation: {path}", markup=False)
    return 0


def _print(result: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{result['model']} on {result['dataset']}", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("seed", str(result["seed"]))
    table.add_row("test AUC", f"{result['test_auc']:.4f}")
    table.add_row("test log loss", f"{result['test_logloss']:.4f}")
    table.add_row("test accuracy", f"{result['test_accuracy']:.4f}")
    table.add_row("test rows", f"{result['test_rows']:,}")
    table.add_row("test split SHA-256", result["test_split_sha256"][:16] + "...")
    stdout_console().print(table)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "evaluate",
        help="test metrics of a saved model (from train --export) on a data set",
        description=(
            "Score a model exported by `enclaverec train --export DIR` on the test split\n"
            "of a data set. The split depends only on the data set and the seed, so the\n"
            "same data and seed give the training run's test metrics. Seed and table size\n"
            "default to the model's; its features and category hashing must match the\n"
            "data's."
        ),
        handler=_evaluate,
    )
    parser.add_argument(
        "--model", required=True, metavar="DIR", help="a model folder from train --export"
    )
    add_data_options(parser, defaults_from="the model's")
    parser.add_argument(
        "--output", metavar="DIR", help=f"also write the metrics to DIR/{EVALUATION_FILE}"
    )
