"""``metrics.json``: the one result file every training mode writes (DESIGN.md §4), built
and checked here so that the centralized, federated and distributed modes cannot drift.

:func:`build_metrics` assembles the common keys; a mode adds its own (``parties``,
``rounds_completed``, ...) through ``extra``; :func:`validate_metrics` refuses a report
that lacks a key the contract requires for its mode or data set, or has a wrong type.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from enclaverec.errors import MetricsReportError, UsageError
from enclaverec.evaluation import BinaryMetrics
from enclaverec.files import write_atomically
from enclaverec.tee.kinds import TEEKind
from enclaverec.training import EvalRecord

METRICS_FILE = "metrics.json"


class Mode(enum.Enum):
    """The training scheme a report describes (§4 ``mode``)."""

    CENTRALIZED = "centralized"
    FEDERATED = "federated"
    DISTRIBUTED = "distributed"


_NUMBER = (int, float)

# Keys every report carries, with their JSON types (DESIGN.md §4).
COMMON_KEYS: dict[str, tuple[type, ...]] = {
    "mode": (str,),
    "tee": (str,),
    "dataset": (str,),
    "preset": (str,),
    "optimizer": (str,),
    "seed": (int,),
    "test_auc": _NUMBER,
    "test_logloss": _NUMBER,
    "test_accuracy": _NUMBER,
    "test_rows": (int,),
    "test_split_sha256": (str,),
    "history": (list,),
    "train_samples_per_second": _NUMBER,
    "wall_seconds": _NUMBER,
}
# Exactly one of these names where the best weights were found. ``best_step`` extends
# §4 compatibly for a distributed run that evaluates every k steps.
BEST_KEYS = ("best_epoch", "best_round", "best_step")
HISTORY_UNITS = ("epoch", "round", "step")
HISTORY_KEYS: dict[str, tuple[type, ...]] = {
    "val_auc": _NUMBER,
    "val_logloss": _NUMBER,
    "wall_seconds": _NUMBER,
}
SYNTHETIC_KEYS: dict[str, tuple[type, ...]] = {
    "oracle_auc": _NUMBER,
    "baseline_logreg_auc": _NUMBER,
}
MODE_KEYS: dict[Mode, dict[str, tuple[type, ...]]] = {
    Mode.CENTRALIZED: {},
    Mode.FEDERATED: {"parties": (int,), "rounds_completed": (int,), "attested_peers": (list, int)},
    Mode.DISTRIBUTED: {"workers": (int,), "steps_completed": (int,), "attested_peers": (list, int)},
}


def build_metrics(
    *,
    mode: Mode,
    tee: TEEKind,
    dataset: str,
    preset: str,
    optimizer: str,
    seed: int,
    test: BinaryMetrics,
    test_split_sha256: str,
    history: Sequence[EvalRecord],
    best_index: int,
    train_samples_per_second: float,
    wall_seconds: float,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A validated metrics report. The history's unit (epoch, round or step) names the
    ``best_*`` key; ``extra`` adds the mode's and data set's own keys."""
    if not history:
        raise MetricsReportError("a report needs at least one history entry")
    unit = history[0].unit
    metrics: dict[str, Any] = {
        "mode": mode.value,
        "tee": tee.value,
        "dataset": dataset,
        "preset": preset,
        "optimizer": optimizer,
        "seed": seed,
        "test_auc": test.auc,
        "test_logloss": test.logloss,
        "test_accuracy": test.accuracy,
        "test_rows": test.rows,
        "test_split_sha256": test_split_sha256,
        f"best_{unit}": best_index,
        "history": [record.to_dict() for record in history],
        "train_samples_per_second": train_samples_per_second,
        "wall_seconds": wall_seconds,
    }
    for key, value in (extra or {}).items():
        if key in metrics:
            raise MetricsReportError(f"extra key {key!r} would replace a common key")
        metrics[key] = value
    validate_metrics(metrics)
    return metrics


def _check_type(where: str, value: Any, types: tuple[type, ...]) -> None:
    # bool is an int in Python, never a valid number or count here.
    if isinstance(value, bool) or not isinstance(value, types):
        names = " or ".join(t.__name__ for t in types)
        raise MetricsReportError(f"{where} must be {names}, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise MetricsReportError(f"{where} must be finite, got {value}")


def _check_keys(metrics: Mapping[str, Any], keys: Mapping[str, tuple[type, ...]], why: str) -> None:
    missing = [key for key in keys if key not in metrics]
    if missing:
        raise MetricsReportError(f"metrics lack {', '.join(missing)} ({why})")
    for key, types in keys.items():
        _check_type(key, metrics[key], types)


def validate_metrics(metrics: Mapping[str, Any]) -> None:
    """Refuse a report that breaks the §4 contract: a missing key, a wrong type, an
    unknown mode or tee, a probability outside [0, 1], a malformed history entry."""
    if not isinstance(metrics, Mapping):
        raise MetricsReportError("metrics must be a JSON object")
    _check_keys(metrics, COMMON_KEYS, "required for every mode")
    try:
        mode = Mode(metrics["mode"])
    except ValueError as exc:
        valid = ", ".join(m.value for m in Mode)
        raise MetricsReportError(f"unknown mode {metrics['mode']!r}; valid: {valid}") from exc
    try:
        TEEKind(metrics["tee"])
    except ValueError as exc:
        valid = ", ".join(t.value for t in TEEKind)
        raise MetricsReportError(f"unknown tee {metrics['tee']!r}; valid: {valid}") from exc
    _check_keys(metrics, MODE_KEYS[mode], f"required for mode {mode.value}")
    if metrics["dataset"] == "synthetic":
        _check_keys(metrics, SYNTHETIC_KEYS, "required for the synthetic data set")
    best = [key for key in BEST_KEYS if key in metrics]
    if len(best) != 1:
        raise MetricsReportError(
            f"metrics need exactly one of {', '.join(BEST_KEYS)}, got {best or 'none'}"
        )
    _check_type(best[0], metrics[best[0]], (int,))
    for key in ("test_auc", "test_accuracy", "oracle_auc", "baseline_logreg_auc"):
        if key in metrics and not 0.0 <= metrics[key] <= 1.0:
            raise MetricsReportError(f"{key} must lie in [0, 1], got {metrics[key]}")
    if metrics["test_rows"] < 1:
        raise MetricsReportError("test_rows must be at least 1")
    if len(metrics["test_split_sha256"]) != 64:
        raise MetricsReportError("test_split_sha256 must be 64 hex digits")
    if not metrics["history"]:
        raise MetricsReportError("history must not be empty")
    for position, entry in enumerate(metrics["history"]):
        where = f"history[{position}]"
        if not isinstance(entry, Mapping):
            raise MetricsReportError(f"{where} must be an object")
        units = [unit for unit in HISTORY_UNITS if unit in entry]
        if len(units) != 1:
            raise MetricsReportError(f"{where} needs exactly one of {', '.join(HISTORY_UNITS)}")
        _check_type(f"{where}.{units[0]}", entry[units[0]], (int,))
        for key, types in HISTORY_KEYS.items():
            if key not in entry:
                raise MetricsReportError(f"{where} lacks {key}")
            _check_type(f"{where}.{key}", entry[key], types)


def write_json(path: Path, document: Any) -> Path:
    """Write ``document`` as indented JSON, atomically (a reader never sees half a file)."""
    path = Path(path)
    try:
        # Serialise first: a value JSON cannot hold (a numpy scalar) is our defect, and
        # must not leave a half-written file behind.
        text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise MetricsReportError(f"cannot serialise {path.name}: {exc}") from exc
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc}") from exc
    write_atomically(path, text.encode("utf-8"), mode=0o644)
    return path


def write_metrics(directory: Path, metrics: Mapping[str, Any]) -> Path:
    """Validate ``metrics`` and write them to ``directory/metrics.json``."""
    validate_metrics(metrics)
    return write_json(Path(directory) / METRICS_FILE, dict(metrics))


# --- the demo's comparison of modes ---------------------------------------------------

SUMMARY_COLUMNS = (
    ("mode", "mode"),
    ("tee", "tee"),
    ("test_auc", "test AUC"),
    ("test_logloss", "test log loss"),
    ("train_samples_per_second", "samples/s"),
    ("wall_seconds", "wall time (s)"),
)
REPORT_MARKDOWN = "report.md"
REPORT_JSON = "report.json"


def summary_row(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The columns a comparison of modes shows, from one validated report."""
    validate_metrics(metrics)
    return {key: metrics[key] for key, _ in SUMMARY_COLUMNS}


def format_summary_value(key: str, value: Any) -> str:
    if key in ("test_auc", "test_logloss"):
        return f"{value:.4f}"
    if key == "train_samples_per_second":
        return f"{value:,.0f}"
    if key == "wall_seconds":
        return f"{value:.1f}"
    return str(value)


SAMPLES_PER_SECOND_NOTE = (
    "**What samples/s counts.** Training examples processed per second of *training* "
    "time: the rows of every local epoch, divided by the seconds spent in training steps. "
    "Evaluation, start-up (a process and TensorFlow per party), attestation, enrollment, "
    "sending updates and aggregation are not in it; the wall time includes all of them. "
    "In a federation the parties train at the same time, so their samples add up over the "
    "round's training phase (the slowest party's time): with several parties it shows more "
    "samples/s than one centralized process, while its wall time is longer, spent outside "
    "the training steps."
)

# The details a mode's section shows, when its report has the key (data-driven: a mode
# that adds a key, such as the distributed one's workers, gets its line).
DETAIL_KEYS = (
    ("parties", "parties"),
    ("workers", "workers"),
    ("paramservers", "parameter servers"),
    ("partition", "partition"),
    ("strategy", "strategy"),
    ("local_epochs", "local epochs per round"),
    ("rounds_completed", "rounds"),
    ("steps_completed", "steps"),
    ("update_encoding", "update encoding"),
)


def run_details(metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, value) lines that describe one run beyond the summary table."""
    unit = next(u for u in HISTORY_UNITS if u in metrics["history"][0])
    details = [(label, f"{metrics[key]}") for key, label in DETAIL_KEYS if key in metrics]
    if "parties" not in metrics and "workers" not in metrics:
        details.insert(0, ("training processes", "1"))
    if unit == "epoch":
        details.append(("epochs", f"{len(metrics['history'])}"))
    details.append((f"best {unit}", f"{metrics[f'best_{unit}']}"))
    for key in sorted(metrics):
        if "bytes_per" in key and isinstance(metrics[key], _NUMBER):
            details.append((key.replace("_", " "), f"{metrics[key]:,.0f}"))
    details.append(("training samples/s", f"{metrics['train_samples_per_second']:,.0f}"))
    details.append(("wall time", f"{metrics['wall_seconds']:.1f} s"))
    return details


def write_comparison_report(
    directory: Path,
    runs: Sequence[Mapping[str, Any]],
    *,
    title: str,
    notes: Sequence[str] = (),
    folders: Sequence[str] | None = None,
    sections: Sequence[tuple[str, Sequence[str]]] = (),
) -> tuple[Path, Path]:
    """Write ``report.json`` (every run's full metrics and the summary rows) and
    ``report.md`` for runs on the same data and test split: the summary table, what
    samples/s counts, a section per run (its details and, given its ``folders`` relative
    to ``directory``, its curves as an image), then the caller's ``sections``."""
    if folders is not None and len(folders) != len(runs):
        raise MetricsReportError("one folder per run, or none")
    if not runs:
        raise MetricsReportError("a comparison needs at least one run")
    rows = [summary_row(metrics) for metrics in runs]
    splits = {metrics["test_split_sha256"] for metrics in runs}
    if len(splits) != 1:
        raise MetricsReportError("the runs were scored on different test splits")
    first = runs[0]
    document = {
        "title": title,
        "dataset": first["dataset"],
        "seed": first["seed"],
        "test_split_sha256": first["test_split_sha256"],
        "summary": rows,
        "runs": [dict(metrics) for metrics in runs],
    }
    json_path = write_json(Path(directory) / REPORT_JSON, document)
    lines = [
        f"# {title}",
        "",
        f"Data set `{first['dataset']}`, seed {first['seed']}, every mode scored on the same "
        f"test split ({first['test_rows']:,} rows, SHA-256 `{first['test_split_sha256']}`).",
        "",
        "| " + " | ".join(header for _, header in SUMMARY_COLUMNS) + " |",
        "| " + " | ".join("---" for _ in SUMMARY_COLUMNS) + " |",
    ]
    for row in rows:
        cells = (format_summary_value(key, row[key]) for key, _ in SUMMARY_COLUMNS)
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    lines += ["", SAMPLES_PER_SECOND_NOTE]
    for position, metrics in enumerate(runs):
        folder = folders[position] if folders is not None else None
        heading = folder or f"{metrics['mode']} (tee {metrics['tee']})"
        lines += ["", f"## {heading}", ""]
        lines += [f"- {label}: {value}" for label, value in run_details(metrics)]
        if folder is not None and (Path(directory) / folder / "curves.png").is_file():
            # A relative link: the report and its images move together.
            lines += ["", f"![{heading}: validation AUC and losses]({folder}/curves.png)"]
    for heading, body in sections:
        lines += ["", f"## {heading}", "", *body]
    markdown_path = Path(directory) / REPORT_MARKDOWN
    try:
        markdown_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {markdown_path}: {exc}") from exc
    return markdown_path, json_path
