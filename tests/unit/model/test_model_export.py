from __future__ import annotations

import json

import numpy as np
import pytest

from enclaverec.dlrm.config import OptimizerKind
from enclaverec.errors import ConfigError, ModelFormatError, UsageError
from enclaverec.model.dlrm_trainer import DLRMTrainer, DLRMTrainerConfig
from enclaverec.model.export import (
    METADATA_FILE,
    ModelMetadata,
    SavedDLRM,
    export_saved_model,
    read_metadata,
)


@pytest.fixture
def metadata(spec, config) -> ModelMetadata:
    return ModelMetadata(
        spec=spec,
        model=config,
        preset="small",
        optimizer="adagrad",
        dataset="synthetic",
        seed=4,
        table_size=None,
        hashing={"function": "splitmix64-keyed", "salt": "00ff", "table_sizes": [7, 5, 11]},
    )


@pytest.fixture
def trainer(spec, config, examples) -> DLRMTrainer:
    return DLRMTrainer(spec, DLRMTrainerConfig(config, OptimizerKind.ADAGRAD), examples)


def test_saved_model_predicts_what_the_trainer_predicts(tmp_path, trainer, metadata, examples):
    arrays = {n: v + 0.01 for n, v in trainer.initial_arrays().items()}
    folder = export_saved_model(trainer, arrays, tmp_path / "model", metadata)
    loaded = SavedDLRM(folder)
    assert loaded.metadata == metadata
    np.testing.assert_allclose(
        loaded.predict(examples), trainer.predict(arrays, examples), rtol=1e-6
    )


def test_metadata_round_trips_through_json(metadata):
    assert ModelMetadata.from_dict(json.loads(json.dumps(metadata.to_dict()))) == metadata


def test_export_never_overwrites(tmp_path, trainer, metadata):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "other").write_text("x")
    with pytest.raises(UsageError, match="non-empty"):
        export_saved_model(trainer, trainer.initial_arrays(), folder, metadata)


def test_export_refuses_metadata_of_another_model(tmp_path, trainer, metadata, spec):
    other = ModelMetadata(**{**metadata.__dict__, "spec": type(spec)(("a",), ("b",), (3,))})
    with pytest.raises(ConfigError, match="another model"):
        export_saved_model(trainer, trainer.initial_arrays(), tmp_path / "m", other)


def test_loading_refuses_a_folder_without_metadata(tmp_path):
    with pytest.raises(ModelFormatError, match="not an enclaverec model"):
        SavedDLRM(tmp_path)


def test_loading_refuses_a_missing_folder(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        read_metadata(tmp_path / "absent")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "unreadable metadata"),
        ("[]", "JSON object"),
        (json.dumps({"format": "other/9"}), "unknown model metadata format"),
        (json.dumps({"format": "enclaverec-dlrm/1", "preset": "small"}), "invalid model metadata"),
    ],
)
def test_loading_refuses_bad_metadata(tmp_path, text, message):
    (tmp_path / METADATA_FILE).write_text(text)
    with pytest.raises(ModelFormatError, match=message):
        read_metadata(tmp_path)


def test_saved_model_refuses_data_of_another_shape(tmp_path, trainer, metadata, examples):
    loaded = SavedDLRM(
        export_saved_model(trainer, trainer.initial_arrays(), tmp_path / "m", metadata)
    )
    narrow = type(examples)(
        examples.dense[:, :2], examples.categorical, examples.labels, examples.row_ids
    )
    with pytest.raises(ConfigError, match="expects 3 dense"):
        loaded.predict(narrow)
    outside = type(examples)(
        examples.dense, examples.categorical + 20, examples.labels, examples.row_ids
    )
    with pytest.raises(ConfigError, match="outside"):
        loaded.predict(outside)
