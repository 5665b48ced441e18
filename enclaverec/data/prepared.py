"""The prepared on-disk form of a split data set (``data prepare``, ``data partition``).

A prepared folder holds ``spec.json`` and one ``.npz`` per split (``train.npz``,
``validation.npz``, ``test.npz``), each with the arrays ``dense`` (float32 [N, D]),
``categorical`` (int32 [N, F]), ``labels`` (float32 [N]) and ``row_ids`` (int64 [N]).
``spec.json`` names the data set, the seed, the feature spec, the split rule, the
category hashing (Criteo files), the rows per split, each ``.npz`` file's SHA-256 and
``test_split_sha256``. A partitioned folder holds ``partition.json`` and one prepared
folder per party (``party-0``, ``party-1``, ...).

Loading checks everything it can: the format version, every file's digest, array names,
dtypes, shapes and value ranges, that each row is in the split the rule assigns it to
for the recorded seed, and ``test_split_sha256``. Arrays are loaded with
``allow_pickle=False``: a prepared folder cannot run code.

Security: these folders hold plaintext training data. They belong on the data owner's
own premises; to send data anywhere else, use ``data encrypt``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from enclaverec.data.schema import (
    DENSE_DTYPE,
    LABEL_DTYPE,
    ROW_ID_DTYPE,
    SPARSE_DTYPE,
    DataSet,
    Examples,
    FeatureSpec,
    split_sha256,
)
from enclaverec.data.split import SPLIT_NAMES, SplitRule, assign_splits
from enclaverec.errors import ConfigError, DataFormatError, StorageError, UsageError

FORMAT = "enclaverec-prepared"
PARTITION_FORMAT = "enclaverec-partition"
VERSION = 1
SPEC_FILE = "spec.json"
PARTITION_FILE = "partition.json"
ARRAYS = ("dense", "categorical", "labels", "row_ids")
_DTYPES = {
    "dense": DENSE_DTYPE,
    "categorical": SPARSE_DTYPE,
    "labels": LABEL_DTYPE,
    "row_ids": ROW_ID_DTYPE,
}


def party_folder_name(party: int) -> str:
    return f"party-{party}"


def is_partitioned(path: Path) -> bool:
    return (Path(path) / PARTITION_FILE).is_file()


def save_prepared(dataset: DataSet, directory: Path) -> Path:
    """Write ``dataset`` as a prepared folder; refuses a ``directory`` that is not empty.

    The folder appears complete or not at all (written beside it, then renamed).
    """
    with _staging(directory) as staging:
        _write_prepared(dataset, staging)
    return Path(directory)


def save_partitioned(parties: Sequence[DataSet], directory: Path) -> Path:
    """Write one prepared folder per party and ``partition.json`` (all or nothing)."""
    if not parties:
        raise UsageError("nothing to write: no parties")
    first = parties[0].info.get("partition", {})
    summary = {
        "format": PARTITION_FORMAT,
        "version": VERSION,
        "dataset": parties[0].name,
        "mode": first.get("mode"),
        "parties": len(parties),
        "partition_seed": first.get("seed"),
        "seed": parties[0].info.get("seed"),
        "global_test_split_sha256": parties[0].info.get("global_test_split_sha256"),
        "folders": [party_folder_name(p) for p in range(len(parties))],
        "rows": [{name: len(getattr(party, name)) for name in SPLIT_NAMES} for party in parties],
    }
    with _staging(directory) as staging:
        for p, party in enumerate(parties):
            folder = staging / party_folder_name(p)
            folder.mkdir()
            _write_prepared(party, folder)
        _write_json(staging / PARTITION_FILE, summary)
    return Path(directory)


@contextmanager
def _staging(directory: Path) -> Iterator[Path]:
    """A temporary folder beside ``directory`` that becomes it when the block succeeds,
    and is deleted when it fails: the output appears complete or not at all."""
    directory = Path(directory)
    # The rule of every command (README, "Output folders"): a new or empty folder. An
    # empty one is replaced by the rename below (POSIX rename(2) allows that).
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise UsageError(f"refusing to write into the non-empty folder {directory}")
    if directory.parent.exists() and not directory.parent.is_dir():
        raise UsageError(f"the parent of the output folder is not a folder: {directory.parent}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    # mkdtemp makes the folder mode 0700: plaintext data is not readable by others.
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        yield staging
        os.rename(staging, directory)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise StorageError(f"cannot write {directory}: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_prepared(dataset: DataSet, folder: Path) -> None:
    digests: dict[str, str] = {}
    for name in SPLIT_NAMES:
        examples: Examples = getattr(dataset, name)
        path = folder / f"{name}.npz"
        with path.open("wb") as handle:
            np.savez(handle, **{key: getattr(examples, key) for key in ARRAYS})
            handle.flush()
            os.fsync(handle.fileno())
        digests[path.name] = _file_sha256(path)
    info = dict(dataset.info)
    spec = {
        "format": FORMAT,
        "version": VERSION,
        "dataset": dataset.name,
        "seed": info.get("seed"),
        "feature_spec": dataset.spec.to_dict(),
        "split": info.get("split"),
        "hashing": info.get("hashing"),
        "rows": {name: len(getattr(dataset, name)) for name in SPLIT_NAMES},
        "test_split_sha256": split_sha256(dataset.test.row_ids),
        "files": digests,
        "info": info,
    }
    _write_json(folder / SPEC_FILE, spec)


def _write_json(path: Path, value: Mapping[str, Any]) -> None:
    try:
        text = json.dumps(value, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot write {path.name}: {exc}") from exc
    with path.open("w", encoding="utf-8") as handle:
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_spec(directory: Path) -> dict[str, Any]:
    """``spec.json`` of a prepared folder, with its format and version checked."""
    return _read_json(Path(directory) / SPEC_FILE, FORMAT)


def read_partition(directory: Path) -> dict[str, Any]:
    """``partition.json`` of a partitioned folder, with its format and version checked."""
    return _read_json(Path(directory) / PARTITION_FILE, PARTITION_FORMAT)


def _read_json(path: Path, expected_format: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UsageError(f"not a prepared data folder (no {path.name}): {path.parent}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFormatError(f"unreadable: {exc}", path=str(path)) from exc
    if not isinstance(value, dict) or value.get("format") != expected_format:
        raise DataFormatError(f"not an {expected_format} file", path=str(path))
    if value.get("version") != VERSION:
        raise DataFormatError(
            f"format version {value.get('version')!r}; this build reads version {VERSION}",
            path=str(path),
        )
    return value


def load_prepared(directory: Path) -> DataSet:
    """Load and check a prepared folder.

    Raises:
        UsageError: the folder is missing or is not a prepared folder.
        DataFormatError: anything in it is inconsistent (names the file).
    """
    directory = Path(directory)
    spec_json = read_spec(directory)
    try:
        spec = FeatureSpec.from_dict(spec_json["feature_spec"])
        name = str(spec_json["dataset"])
        seed = int(spec_json["seed"])
        rule = SplitRule.from_dict(spec_json["split"])
        rows = {split: int(spec_json["rows"][split]) for split in SPLIT_NAMES}
        files = {str(k): str(v) for k, v in spec_json["files"].items()}
        info = dict(spec_json["info"])
        expected_test_sha = str(spec_json["test_split_sha256"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise DataFormatError(f"invalid spec: {exc}", path=str(directory / SPEC_FILE)) from exc

    splits: dict[str, Examples] = {}
    for split in SPLIT_NAMES:
        path = directory / f"{split}.npz"
        if not path.is_file():
            raise DataFormatError("missing", path=str(path))
        digest = _file_sha256(path)
        if digest != files.get(path.name):
            raise DataFormatError(
                f"SHA-256 {digest} differs from spec.json's {files.get(path.name)}",
                path=str(path),
            )
        examples = _load_arrays(path, spec)
        if len(examples) != rows[split]:
            raise DataFormatError(
                f"{len(examples)} rows, spec.json says {rows[split]}", path=str(path)
            )
        # Each row must be in the split the rule gives it for this seed: catches files
        # from another seed or another folder.
        wrong = assign_splits(examples.row_ids, seed=seed, rule=rule) != SPLIT_NAMES.index(split)
        if wrong.any():
            raise DataFormatError(
                f"{int(wrong.sum())} rows do not belong to the {split} split of seed {seed}",
                path=str(path),
            )
        splits[split] = examples
    if split_sha256(splits["test"].row_ids) != expected_test_sha:
        raise DataFormatError(
            "test rows do not match spec.json's test_split_sha256",
            path=str(directory / "test.npz"),
        )
    return DataSet(
        name=name,
        spec=spec,
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
        info=info,
    )


def _load_arrays(path: Path, spec: FeatureSpec) -> Examples:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if sorted(npz.files) != sorted(ARRAYS):
                raise DataFormatError(
                    f"arrays {sorted(npz.files)}, expected {sorted(ARRAYS)}", path=str(path)
                )
            arrays = {key: npz[key] for key in ARRAYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataFormatError(f"unreadable arrays: {exc}", path=str(path)) from exc
    for key, dtype in _DTYPES.items():
        if arrays[key].dtype != dtype:
            raise DataFormatError(
                f"{key} has dtype {arrays[key].dtype}, expected {np.dtype(dtype)}", path=str(path)
            )
    n = len(arrays["labels"])
    shapes = {
        "dense": (n, spec.num_dense),
        "categorical": (n, spec.num_categorical),
        "labels": (n,),
        "row_ids": (n,),
    }
    for key, shape in shapes.items():
        if arrays[key].shape != shape:
            raise DataFormatError(
                f"{key} has shape {arrays[key].shape}, expected {shape}", path=str(path)
            )
    categorical = arrays["categorical"]
    if n and (
        (categorical < 0).any() or (categorical >= np.array(spec.table_sizes, np.int64)).any()
    ):
        raise DataFormatError("categorical row ids outside their tables", path=str(path))
    if n and not np.isin(arrays["labels"], (0.0, 1.0)).all():
        raise DataFormatError("labels must be 0 or 1", path=str(path))
    if n and not np.isfinite(arrays["dense"]).all():
        raise DataFormatError("dense features must be finite", path=str(path))
    if n and len(np.unique(arrays["row_ids"])) != n:
        raise DataFormatError("row ids repeat", path=str(path))
    return Examples(**arrays)
