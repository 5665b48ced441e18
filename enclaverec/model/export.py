"""Export a trained DLRM as a TensorFlow SavedModel, with the metadata needed to score it
again on the same kind of data (features, hashing, preset, data set), and load it back.

The folder holds the SavedModel (signature ``serving_default``: ``dense`` float32 [B, D],
``categorical`` int32 [B, F] -> ``probability`` float32 [B]) and ``enclaverec-model.json``.
Security: the export is plaintext weights, for the centralized baseline on the owner's own
premises; secure modes return the model encrypted instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from enclaverec.data.schema import DENSE_DTYPE, SPARSE_DTYPE, Examples
from enclaverec.errors import ConfigError, ModelFormatError, UsageError
from enclaverec.model._tf import tf
from enclaverec.model.dlrm_trainer import PREDICT_ROWS_PER_CALL, DLRMTrainer
from enclaverec.model.metadata import METADATA_FILE, ModelMetadata, read_metadata

__all__ = ["METADATA_FILE", "ModelMetadata", "SavedDLRM", "export_saved_model", "read_metadata"]

SIGNATURE = "serving_default"


class _Serving(tf.Module):
    def __init__(self, trainer: DLRMTrainer) -> None:
        super().__init__(name="enclaverec_dlrm")
        self.dlrm = trainer.model
        # Track the tf.Variables explicitly: the Keras layers hold them behind their own
        # variable type, which tf.Module does not walk.
        self.tracked_variables = [weight.value for weight in trainer.model.weights]
        spec = trainer.spec
        self.serve = tf.function(
            self._serve,
            input_signature=[
                tf.TensorSpec([None, spec.num_dense], tf.float32, name="dense"),
                tf.TensorSpec([None, spec.num_categorical], tf.int32, name="categorical"),
            ],
        )

    def _serve(self, dense, categorical):
        return {"probability": tf.sigmoid(self.dlrm(dense, categorical))}


def export_saved_model(
    trainer: DLRMTrainer,
    arrays: Mapping[str, np.ndarray],
    directory: Path,
    metadata: ModelMetadata,
) -> Path:
    """Write the model ``arrays`` as a SavedModel with its metadata to ``directory``, which
    must not exist yet or be empty (an export never overwrites another)."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise UsageError(f"refusing to export into non-empty {directory}")
    if metadata.spec != trainer.spec or metadata.model != trainer.config.model:
        raise ConfigError("the metadata describes another model than the trainer's")
    trainer.set_arrays(arrays)
    module = _Serving(trainer)
    try:
        tf.saved_model.save(module, str(directory), signatures={SIGNATURE: module.serve})
    except (OSError, tf.errors.OpError) as exc:
        raise UsageError(f"cannot write the model to {directory}: {exc}") from exc
    (directory / METADATA_FILE).write_text(
        json.dumps(metadata.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return directory


class SavedDLRM:
    """A saved model loaded for scoring (no training code needed)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.metadata = read_metadata(self.directory)
        try:
            self._loaded = tf.saved_model.load(str(self.directory))
        except (OSError, ValueError, tf.errors.OpError) as exc:
            raise ModelFormatError(f"{directory}: cannot load the SavedModel: {exc}") from exc
        if not hasattr(self._loaded, "serve"):
            raise ModelFormatError(f"{directory}: the SavedModel has no serve function")

    def predict(self, examples: Examples) -> np.ndarray:
        """Click probabilities [N] for ``examples``, which must have the model's features."""
        spec = self.metadata.spec
        if examples.dense.shape[1:] != (spec.num_dense,) or examples.categorical.shape[1:] != (
            spec.num_categorical,
        ):
            raise ConfigError(
                f"the model expects {spec.num_dense} dense and {spec.num_categorical} "
                f"categorical features, the data has {examples.dense.shape[1]} and "
                f"{examples.categorical.shape[1]}"
            )
        if len(examples) and (
            examples.categorical.min() < 0
            or (examples.categorical >= np.asarray(spec.table_sizes)).any()
        ):
            raise ConfigError("a categorical row id is outside the model's embedding table")
        dense = np.asarray(examples.dense, dtype=DENSE_DTYPE)
        categorical = np.asarray(examples.categorical, dtype=SPARSE_DTYPE)
        parts = [
            self._loaded.serve(
                dense[start : start + PREDICT_ROWS_PER_CALL],
                categorical[start : start + PREDICT_ROWS_PER_CALL],
            )["probability"].numpy()
            for start in range(0, len(examples), PREDICT_ROWS_PER_CALL)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
