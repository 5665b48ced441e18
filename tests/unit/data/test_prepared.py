from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from enclaverec.data import prepared
from enclaverec.data.partition import partition_dataset
from enclaverec.data.prepared import (
    load_prepared,
    read_partition,
    save_partitioned,
    save_prepared,
)
from enclaverec.data.schema import DataSet, Examples, FeatureSpec, split_sha256
from enclaverec.data.split import SplitRule, split_examples
from enclaverec.errors import DataFormatError, StorageError, UsageError


def make_dataset(seed: int = 0, n: int = 3000) -> DataSet:
    rng = np.random.default_rng(1)
    examples = Examples(
        dense=rng.random((n, 3)).astype(np.float32),
        categorical=np.column_stack((rng.integers(1, 101, n), rng.integers(0, 7, n))).astype(
            np.int32
        ),
        labels=(rng.random(n) < 0.4).astype(np.float32),
        row_ids=np.arange(n, dtype=np.int64),
    )
    spec = FeatureSpec(("a", "b", "c"), ("user", "x"), (101, 7))
    train, validation, test = split_examples(examples, seed=seed)
    info = {
        "seed": seed,
        "split": SplitRule().to_dict(),
        "user_feature": "user",
        "oracle_auc": 0.9,
    }
    return DataSet("unit", spec, train, validation, test, info=info)


def assert_same(a: DataSet, b: DataSet) -> None:
    assert (a.name, a.spec, dict(a.info)) == (b.name, b.spec, dict(b.info))
    for split in ("train", "validation", "test"):
        x, y = getattr(a, split), getattr(b, split)
        for key in ("dense", "categorical", "labels", "row_ids"):
            np.testing.assert_array_equal(getattr(x, key), getattr(y, key))
            assert getattr(x, key).dtype == getattr(y, key).dtype


@pytest.fixture
def folder(tmp_path) -> Path:
    return save_prepared(make_dataset(), tmp_path / "prep")


def test_round_trip_is_exact(folder):
    assert_same(load_prepared(folder), make_dataset())


def test_spec_json_documents_the_data_set(folder):
    spec = json.loads((folder / "spec.json").read_text())
    dataset = make_dataset()
    assert spec["format"] == "enclaverec-prepared" and spec["version"] == 1
    assert spec["dataset"] == "unit" and spec["seed"] == 0
    assert spec["feature_spec"] == dataset.spec.to_dict()
    assert spec["test_split_sha256"] == split_sha256(dataset.test.row_ids)
    assert spec["rows"] == {
        "train": len(dataset.train),
        "validation": len(dataset.validation),
        "test": len(dataset.test),
    }
    assert sorted(spec["files"]) == ["test.npz", "train.npz", "validation.npz"]
    assert spec["hashing"] is None


def test_folder_is_private_to_its_owner(folder):
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_non_empty_folder_is_refused(folder):
    with pytest.raises(UsageError, match="refusing to write into the non-empty folder"):
        save_prepared(make_dataset(), folder)


def test_an_empty_folder_is_filled(tmp_path):
    (tmp_path / "empty").mkdir()
    save_prepared(make_dataset(), tmp_path / "empty")
    assert (tmp_path / "empty" / "spec.json").is_file()


def test_missing_parents_are_made(tmp_path):
    # `data prepare --output prepared/ml` works in a fresh folder, as the README shows.
    save_prepared(make_dataset(), tmp_path / "no" / "prep")
    assert (tmp_path / "no" / "prep").is_dir()


def test_a_parent_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        save_prepared(make_dataset(), tmp_path / "file" / "prep")


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []
    real_savez = np.savez

    def failing_savez(handle, **arrays):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_savez(handle, **arrays)

    monkeypatch.setattr(prepared.np, "savez", failing_savez)
    with pytest.raises(StorageError, match="No space left"):
        save_prepared(make_dataset(), tmp_path / "prep")
    assert list(tmp_path.iterdir()) == []


def test_not_a_prepared_folder(tmp_path):
    with pytest.raises(UsageError, match="not a prepared data folder"):
        load_prepared(tmp_path)


def rewrite_spec(folder: Path, **changes) -> None:
    path = folder / "spec.json"
    spec = json.loads(path.read_text())
    spec.update(changes)
    path.write_text(json.dumps(spec))


def refresh_digest(folder: Path, name: str) -> None:
    spec = json.loads((folder / "spec.json").read_text())
    spec["files"][name] = prepared._file_sha256(folder / name)
    (folder / "spec.json").write_text(json.dumps(spec))


def test_unknown_version_is_refused(folder):
    rewrite_spec(folder, version=2)
    with pytest.raises(DataFormatError, match="format version 2"):
        load_prepared(folder)


def test_not_json_is_refused(folder):
    (folder / "spec.json").write_text("{")
    with pytest.raises(DataFormatError, match="spec.json: unreadable"):
        load_prepared(folder)


def test_a_spec_without_a_field_is_refused(folder):
    spec = json.loads((folder / "spec.json").read_text())
    del spec["rows"]
    (folder / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(DataFormatError, match="invalid spec"):
        load_prepared(folder)


def test_a_modified_array_file_is_refused(folder):
    data = bytearray((folder / "train.npz").read_bytes())
    data[-100] ^= 1
    (folder / "train.npz").write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match=r"train\.npz: SHA-256 .* differs"):
        load_prepared(folder)


def test_a_missing_array_file_is_refused(folder):
    (folder / "validation.npz").unlink()
    with pytest.raises(DataFormatError, match=r"validation\.npz: missing"):
        load_prepared(folder)


def write_arrays(folder: Path, name: str, **arrays) -> None:
    with (folder / name).open("wb") as handle:
        np.savez(handle, **arrays)
    refresh_digest(folder, name)


def arrays_of(examples: Examples) -> dict[str, np.ndarray]:
    return {k: getattr(examples, k) for k in ("dense", "categorical", "labels", "row_ids")}


def test_rows_from_another_seed_are_refused(folder, tmp_path):
    other = make_dataset(seed=1)
    write_arrays(folder, "test.npz", **arrays_of(other.test))
    rewrite_spec(
        folder,
        rows={
            "train": len(make_dataset().train),
            "validation": len(make_dataset().validation),
            "test": len(other.test),
        },
    )
    with pytest.raises(DataFormatError, match="do not belong to the test split of seed 0"):
        load_prepared(folder)


def test_a_changed_test_split_is_refused(folder):
    rewrite_spec(folder, test_split_sha256="0" * 64)
    with pytest.raises(DataFormatError, match="test_split_sha256"):
        load_prepared(folder)


def test_pickled_objects_are_never_loaded(folder):
    arrays = arrays_of(make_dataset().train)
    arrays["labels"] = np.array([object()] * len(arrays["labels"]), dtype=object)
    write_arrays(folder, "train.npz", **arrays)
    with pytest.raises(DataFormatError, match="unreadable arrays"):
        load_prepared(folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dense": lambda a: a.astype(np.float64)}, "dense has dtype float64"),
        ({"categorical": lambda a: a[:, :1]}, "categorical has shape"),
        ({"categorical": lambda a: a + 200}, "outside their tables"),
        ({"categorical": lambda a: a - 200}, "outside their tables"),
        ({"labels": lambda a: a * 2}, "labels must be 0 or 1"),
        ({"dense": lambda a: a * np.inf}, "must be finite"),
        ({"row_ids": lambda a: np.zeros_like(a)}, "row ids repeat"),
    ],
)
def test_inconsistent_arrays_are_refused(folder, change, message):
    arrays = arrays_of(make_dataset().train)
    for key, fn in change.items():
        arrays[key] = fn(arrays[key])
    write_arrays(folder, "train.npz", **arrays)
    with pytest.raises(DataFormatError, match=message):
        load_prepared(folder)


def test_extra_or_missing_arrays_are_refused(folder):
    arrays = arrays_of(make_dataset().train)
    arrays["extra"] = np.zeros(3)
    write_arrays(folder, "train.npz", **arrays)
    with pytest.raises(DataFormatError, match="arrays .* expected"):
        load_prepared(folder)


def test_partitioned_tree_round_trips(tmp_path):
    dataset = make_dataset()
    parties = partition_dataset(dataset, parties=3, mode="by-user", seed=5)
    root = save_partitioned(parties, tmp_path / "fed")
    summary = read_partition(root)
    assert summary["parties"] == 3 and summary["mode"] == "by-user"
    assert summary["folders"] == ["party-0", "party-1", "party-2"]
    assert summary["global_test_split_sha256"] == split_sha256(dataset.test.row_ids)
    for i, party in enumerate(parties):
        assert_same(load_prepared(root / f"party-{i}"), party)
    assert sorted(os.listdir(root)) == ["partition.json", "party-0", "party-1", "party-2"]
