from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from criteo_helpers import criteo_8hex_fields, lines_text

from enclaverec.data.registry import dataset_names
from enclaverec.data.schema import split_sha256
from enclaverec.data.sources import DataSelection, load_dataset
from enclaverec.errors import DataFormatError, UsageError


@pytest.fixture
def criteo_files(tmp_path) -> tuple[Path, Path]:
    rng = random.Random(11)
    a, b = tmp_path / "day_0.tsv", tmp_path / "day_1.tsv"
    a.write_bytes(lines_text([criteo_8hex_fields(rng) for _ in range(600)]))
    b.write_bytes(lines_text([criteo_8hex_fields(rng) for _ in range(400)]))
    return a, b


def test_builtin_names():
    assert dataset_names() == ("synthetic", "movielens-100k")


def test_unknown_data_set_names_the_valid_ones():
    with pytest.raises(UsageError, match="unknown data set 'criteo'.*synthetic, movielens-100k"):
        DataSelection(dataset="criteo")


@pytest.mark.parametrize("kwargs", [{}, {"dataset": "synthetic", "paths": (Path("x"),)}])
def test_exactly_one_source(kwargs):
    with pytest.raises(UsageError, match="exactly one"):
        DataSelection(**kwargs)


def test_names_of_criteo_selections(criteo_files):
    a, b = criteo_files
    assert DataSelection(paths=(a,)).name == "criteo:day_0.tsv"
    assert DataSelection(paths=(a, b)).name == "criteo:day_0.tsv+day_1.tsv"


def test_criteo_files_load_split_and_describe_their_hashing(criteo_files):
    dataset = load_dataset(DataSelection(paths=criteo_files), seed=4, table_size=500)
    assert dataset.name == "criteo:day_0.tsv+day_1.tsv"
    ids = np.concatenate([s.row_ids for s in (dataset.train, dataset.validation, dataset.test)])
    np.testing.assert_array_equal(np.sort(ids), np.arange(1000))
    assert dataset.spec.table_sizes == (500,) * 26
    assert dataset.info["hashing"]["table_sizes"] == [500] * 26
    assert dataset.info["bad_lines_skipped"] == 0 and dataset.info["seed"] == 4
    assert dataset.info["files"] == ["day_0.tsv", "day_1.tsv"]


def test_default_table_size_is_100000(criteo_files):
    dataset = load_dataset(DataSelection(paths=criteo_files[:1]), seed=0)
    assert dataset.spec.table_sizes == (100_000,) * 26


def test_test_split_depends_only_on_the_seed(criteo_files):
    selection = DataSelection(paths=criteo_files)
    a = load_dataset(selection, seed=1)
    b = load_dataset(selection, seed=1, table_size=50)
    c = load_dataset(selection, seed=2)
    assert split_sha256(a.test.row_ids) == split_sha256(b.test.row_ids)
    assert split_sha256(a.test.row_ids) != split_sha256(c.test.row_ids)


def test_skip_mode_reports_the_count(criteo_files):
    a, _ = criteo_files
    with a.open("ab") as handle:
        handle.write(b"1\t2\t3\n")
    with pytest.raises(DataFormatError, match=r"day_0\.tsv:601: expected 40"):
        load_dataset(DataSelection(paths=(a,)), seed=0)
    dataset = load_dataset(DataSelection(paths=(a,)), seed=0, on_bad_line="skip")
    assert dataset.info["bad_lines_skipped"] == 1
    assert dataset.info["bad_line_examples"] == [
        f"{a}:601: expected 40 tab-separated fields, got 3"
    ]


def test_a_file_without_valid_rows_is_an_error(tmp_path):
    path = tmp_path / "junk.tsv"
    path.write_bytes(b"a\tb\n")
    with pytest.raises(DataFormatError, match=r"no valid rows .*1 malformed"):
        load_dataset(DataSelection(paths=(path,)), seed=0, on_bad_line="skip")


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="data file not found"):
        load_dataset(DataSelection(paths=(tmp_path / "nope.tsv",)), seed=0)


@pytest.mark.parametrize("size", [0, 1, -5])
def test_bad_table_size_is_a_usage_error(criteo_files, size):
    with pytest.raises(UsageError, match="--table-size"):
        load_dataset(DataSelection(paths=criteo_files), seed=0, table_size=size)


def test_table_size_for_a_builtin_set_is_a_usage_error():
    with pytest.raises(UsageError, match="--table-size applies to --data"):
        load_dataset(DataSelection(dataset="synthetic"), seed=0, table_size=1000)


def test_negative_seed_is_refused(criteo_files):
    with pytest.raises(UsageError, match="non-negative"):
        load_dataset(DataSelection(paths=criteo_files), seed=-1)


def test_synthetic_reports_its_oracle(monkeypatch):
    from enclaverec.data import synthetic

    small = synthetic.SyntheticConfig(num_rows=5000)
    monkeypatch.setattr(synthetic, "SyntheticConfig", lambda: small)
    dataset = load_dataset(DataSelection(dataset="synthetic"), seed=0)
    assert dataset.name == "synthetic"
    assert 0.8 < dataset.info["oracle_auc"] < 1.0
    assert dataset.info["oracle_logloss"] > 0
    assert dataset.info["user_feature"] == "C1"
    assert dataset.info["generator"] == {"num_rows": 5000, "generator_seed": 0}


def test_selection_normalises_paths_to_a_tuple_of_paths():
    selection = DataSelection(paths=["a.tsv", Path("b.tsv")])  # type: ignore[arg-type]
    assert selection.paths == (Path("a.tsv"), Path("b.tsv"))
    assert hash(selection) == hash(DataSelection(paths=(Path("a.tsv"), Path("b.tsv"))))
