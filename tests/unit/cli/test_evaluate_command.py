"""``enclaverec evaluate`` refusals that come before any model is loaded."""

from __future__ import annotations

import json

import pytest

from enclaverec.data.schema import FeatureSpec
from enclaverec.dlrm.config import SMALL
from enclaverec.model.metadata import METADATA_FILE, ModelMetadata


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("enclaverec: error: "), err
    return lines[0]


@pytest.fixture
def model_dir(tmp_path):
    """A model folder whose metadata describes 2 dense and 1 categorical feature."""
    metadata = ModelMetadata(
        spec=FeatureSpec(("a", "b"), ("c",), (10,)),
        model=SMALL.model,
        preset="small",
        optimizer="adagrad",
        dataset="synthetic",
        seed=3,
    )
    (tmp_path / METADATA_FILE).write_text(json.dumps(metadata.to_dict()))
    return tmp_path


def test_a_missing_model_folder_is_exit_2(run_cli, tmp_path):
    code, _, err = run_cli("evaluate", "--model", tmp_path / "absent", "--dataset", "synthetic")
    assert code == 2
    assert "model folder not found" in one_line(err)


def test_a_folder_that_is_not_a_model_is_exit_2(run_cli, tmp_path):
    code, _, err = run_cli("evaluate", "--model", tmp_path, "--dataset", "synthetic")
    assert code == 2
    assert "is not an enclaverec model" in one_line(err)


def test_a_non_numeric_seed_is_exit_2(run_cli, model_dir):
    code, _, err = run_cli(
        "evaluate", "--model", model_dir, "--dataset", "synthetic", "--seed", "x"
    )
    assert code == 2
    assert "--seed must be an integer, got 'x'" in one_line(err)


def test_data_with_other_features_is_refused(run_cli, model_dir):
    code, _, err = run_cli("evaluate", "--model", model_dir, "--dataset", "synthetic")
    assert code == 2
    assert "the model was trained on other features than synthetic has" in one_line(err)


def test_a_seed_other_than_the_model_s_is_refused(run_cli, model_dir):
    # Another seed's test split contains rows the model was trained on.
    code, _, err = run_cli(
        "evaluate", "--model", model_dir, "--dataset", "synthetic", "--seed", "4"
    )
    assert code == 2
    assert "trained with seed 3" in one_line(err)
