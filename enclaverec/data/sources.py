"""Data selection (``--dataset NAME`` or ``--data PATH...``) and loading into a split DataSet.

Built-in data sets come from the registry (:mod:`enclaverec.data.registry`). Every source
ends in the same steps: rows with global row ids, then the split of
``enclaverec.data.split`` (a pure function of row id and seed). ``DataSet.info`` carries
what the source knows: for every source ``split`` and ``seed``; ``synthetic`` adds
``oracle_auc`` and ``oracle_logloss`` (the planted model on the test split) and
``user_feature``; ``movielens-100k`` adds ``user_feature`` and the files' ``sha256``;
Criteo files add ``hashing`` (the :class:`CategoryHashing` as a dict), ``files``,
``bad_lines_skipped`` and ``bad_line_examples`` (the first few "file:line: reason").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclaverec.data.criteo import (
    NUM_CATEGORICAL,
    BadLineCounter,
    OnBadLine,
    check_paths,
    criteo_feature_spec,
    empty_examples,
    iter_criteo_examples,
)
from enclaverec.data.hashing import DEFAULT_TABLE_SIZE, CategoryHashing
from enclaverec.data.registry import builtin_dataset
from enclaverec.data.schema import DataSet, Examples, FeatureSpec
from enclaverec.data.split import SplitRule, split_examples
from enclaverec.errors import ConfigError, DataFormatError, UsageError
from enclaverec.terminal import make_console

__all__ = [
    "DataSelection",
    "load_dataset",
]

CRITEO_PREFIX = "criteo:"
# Rows per parsed batch when a whole file is loaded into memory.
_LOAD_BATCH_ROWS = 1 << 16


@dataclass(frozen=True)
class DataSelection:
    """Which data: a built-in data set by name, or Criteo files (exactly one of the two)."""

    dataset: str | None = None
    paths: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        # Accept any sequence of str or Path; keep an immutable tuple of Paths.
        object.__setattr__(self, "paths", tuple(Path(p) for p in self.paths))
        if (self.dataset is None) == (not self.paths):
            raise UsageError("give exactly one of --dataset NAME or --data PATH...")
        if self.dataset is not None:
            builtin_dataset(self.dataset)  # refuses an unknown name, listing the known ones

    @property
    def name(self) -> str:
        """The §4 ``dataset`` value: the built-in name, or ``criteo:<file>[+<file>...]``."""
        if self.dataset is not None:
            return self.dataset
        return CRITEO_PREFIX + "+".join(Path(p).name for p in self.paths)


def load_dataset(
    selection: DataSelection,
    *,
    seed: int,
    table_size: int | None = None,
    on_bad_line: str = "fail",
    progress: bool = False,
) -> DataSet:
    """Load the selected data and split it by ``seed`` (80/10/10, see ``split``).

    ``table_size`` (rows per categorical feature, default 100,000) applies to Criteo
    files only: built-in data sets use their own fixed id maps.

    Raises:
        UsageError: an unknown data set, a missing file, a table size for a built-in set.
        DataFormatError: a malformed line (with ``on_bad_line="fail"``), or no rows at all.
        MissingDependencyError: ``movielens-100k`` without recbole's files.
    """
    mode = OnBadLine.parse(on_bad_line)
    rule = SplitRule()
    if selection.dataset is not None and table_size is not None:
        raise UsageError(
            f"--table-size applies to --data (Criteo files) only; {selection.dataset} "
            "uses fixed id maps"
        )
    info: dict[str, Any] = {"seed": seed, "split": rule.to_dict()}
    probabilities = None
    if selection.dataset is not None:
        rows = builtin_dataset(selection.dataset).load()
        spec, examples, probabilities = rows.spec, rows.examples, rows.probabilities
        info.update(rows.info)
    else:
        spec, examples, criteo_info = _load_criteo(
            selection.paths, table_size=table_size, on_bad_line=mode, progress=progress
        )
        info.update(criteo_info)
    train, validation, test = split_examples(examples, seed=seed, rule=rule)
    if probabilities is not None:
        # The planted model's own score, with the metrics every mode is scored with.
        from enclaverec.evaluation import binary_metrics

        oracle = binary_metrics(test.labels, probabilities[test.row_ids])
        info["oracle_auc"] = oracle.auc
        info["oracle_logloss"] = oracle.logloss
    return DataSet(
        name=selection.name,
        spec=spec,
        train=train,
        validation=validation,
        test=test,
        info=info,
    )


def criteo_hashing(table_size: int | None) -> CategoryHashing:
    """The category hashing of ``--data``: one table size for all 26 features."""
    size = DEFAULT_TABLE_SIZE if table_size is None else table_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise UsageError(f"--table-size must be an integer >= 2, got {size!r}")
    try:
        return CategoryHashing.uniform(NUM_CATEGORICAL, size)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc


def _load_criteo(
    paths: tuple[Path, ...], *, table_size: int | None, on_bad_line: OnBadLine, progress: bool
) -> tuple[FeatureSpec, Examples, dict[str, Any]]:
    hashing = criteo_hashing(table_size)
    checked = check_paths(paths)
    counter = BadLineCounter()
    with _byte_progress(checked, enabled=progress) as on_bytes:
        batches = list(
            iter_criteo_examples(
                checked,
                hashing=hashing,
                batch_size=_LOAD_BATCH_ROWS,
                on_bad_line=on_bad_line,
                counter=counter,
                on_bytes=on_bytes,
            )
        )
    examples = Examples.concatenate(batches) if batches else empty_examples()
    if len(examples) == 0:
        raise DataFormatError(
            "no valid rows in "
            + ", ".join(str(p) for p in checked)
            + (f" ({counter.skipped} malformed lines skipped)" if counter.skipped else "")
        )
    info: dict[str, Any] = {
        "hashing": hashing.to_dict(),
        "files": [p.name for p in checked],
        "bad_lines_skipped": counter.skipped,
        "bad_line_examples": list(counter.messages),
    }
    return criteo_feature_spec(hashing), examples, info


@contextmanager
def _byte_progress(
    paths: tuple[Path, ...], *, enabled: bool
) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr over the files' (compressed) bytes, or nothing."""
    if not enabled:
        yield None
        return
    # rich is imported here: data is also used by processes that never draw progress.
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    total = sum(p.stat().st_size for p in paths)
    with Progress(
        TextColumn("[bold]reading"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=make_console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("reading", total=total)
        yield lambda n: bar.advance(task, n)
