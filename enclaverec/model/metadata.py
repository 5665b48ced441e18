"""The metadata saved beside an exported model: what scoring it again needs besides its
weights (no TensorFlow import, so commands can check it before starting TensorFlow)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclaverec.data.schema import FeatureSpec
from enclaverec.dlrm.config import DLRMConfig
from enclaverec.errors import ConfigError, ModelFormatError, UsageError

METADATA_FILE = "enclaverec-model.json"
METADATA_FORMAT = "enclaverec-dlrm/1"


@dataclass(frozen=True)
class ModelMetadata:
    """What a saved model needs besides its weights: its features and how categories were
    hashed (both must match the data it scores), its shape and how it was trained."""

    spec: FeatureSpec
    model: DLRMConfig
    preset: str
    optimizer: str
    dataset: str
    seed: int
    table_size: int | None = None
    hashing: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": METADATA_FORMAT,
            "feature_spec": self.spec.to_dict(),
            "model": self.model.to_dict(),
            "preset": self.preset,
            "optimizer": self.optimizer,
            "dataset": self.dataset,
            "seed": self.seed,
            "table_size": self.table_size,
            "hashing": dict(self.hashing) if self.hashing is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelMetadata:
        if data.get("format") != METADATA_FORMAT:
            raise ModelFormatError(
                f"unknown model metadata format (got {data.get('format')!r}, "
                f"expected {METADATA_FORMAT!r})"
            )
        try:
            return cls(
                spec=FeatureSpec.from_dict(data["feature_spec"]),
                model=DLRMConfig.from_dict(data["model"]),
                preset=str(data["preset"]),
                optimizer=str(data["optimizer"]),
                dataset=str(data["dataset"]),
                seed=int(data["seed"]),
                table_size=None if data.get("table_size") is None else int(data["table_size"]),
                hashing=data.get("hashing"),
            )
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise ModelFormatError(f"invalid model metadata: {exc}") from exc


def read_metadata(directory: Path) -> ModelMetadata:
    """The metadata of the saved model in ``directory``."""
    path = Path(directory) / METADATA_FILE
    if Path(directory).exists() and not Path(directory).is_dir():
        raise UsageError(
            f"--model {directory} is a file, not a folder: give the folder `train --export` wrote"
        )
    if not Path(directory).is_dir():
        raise UsageError(f"model folder not found: {directory}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelFormatError(
            f"{directory} is not an enclaverec model (no {METADATA_FILE})"
        ) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: unreadable metadata: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: metadata must be a JSON object")
    return ModelMetadata.from_dict(data)
