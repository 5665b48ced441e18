"""The DLRM's shape and training presets as frozen configuration (no TensorFlow import)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from enclaverec.errors import ConfigError


class InteractionKind(enum.Enum):
    """How the feature interaction layer combines the bottom output and the embeddings."""

    # Pairwise dot products, strict lower triangle, concatenated with the bottom output
    # (Naumov et al. 2019, §3; dlrm_s_pytorch.py interact_features, arch-interaction-op=dot).
    DOT = "dot"
    # Plain concatenation of the bottom output and every embedding (arch-interaction-op=cat).
    CAT = "cat"


class OptimizerKind(enum.Enum):
    """The update rule; embedding tables are always updated sparsely (touched rows only)."""

    # Plain SGD on dense weights, scatter-subtract on the touched embedding rows.
    SGD = "sgd"
    # Element-wise Adagrad on dense weights, row-wise Adagrad on embedding tables (one
    # accumulator per row, as FBGEMM's EXACT_ROWWISE_ADAGRAD), touching batch rows only.
    ADAGRAD = "adagrad"


class Preset(enum.Enum):
    """Named model shapes, each with its own training defaults."""

    SMALL = "small"
    KAGGLE = "kaggle"


@dataclass(frozen=True)
class DLRMConfig:
    """The network's shape.

    ``bottom_units`` are the bottom MLP's output widths (its input is the number of dense
    features); the last must equal ``embedding_dim`` so that the bottom output can interact
    with the embeddings. ``top_units`` are the top MLP's widths; the last must be 1 (the
    logit).
    """

    embedding_dim: int
    bottom_units: tuple[int, ...]
    top_units: tuple[int, ...]
    interaction: InteractionKind = InteractionKind.DOT

    def __post_init__(self) -> None:
        if self.embedding_dim <= 0:
            raise ConfigError(f"embedding_dim must be positive, got {self.embedding_dim}")
        if not self.bottom_units or not self.top_units:
            raise ConfigError("the bottom and top MLPs need at least one layer each")
        if any(units <= 0 for units in self.bottom_units + self.top_units):
            raise ConfigError("every MLP layer needs a positive width")
        if self.bottom_units[-1] != self.embedding_dim:
            raise ConfigError(
                f"the bottom MLP must end in the embedding dimension "
                f"(got {self.bottom_units[-1]}, expected {self.embedding_dim})"
            )
        if self.top_units[-1] != 1:
            raise ConfigError(f"the top MLP must end in one logit, got {self.top_units[-1]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "embedding_dim": self.embedding_dim,
            "bottom_units": list(self.bottom_units),
            "top_units": list(self.top_units),
            "interaction": self.interaction.value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DLRMConfig:
        try:
            return cls(
                embedding_dim=int(data["embedding_dim"]),
                bottom_units=tuple(int(u) for u in data["bottom_units"]),
                top_units=tuple(int(u) for u in data["top_units"]),
                interaction=InteractionKind(data["interaction"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid model configuration: {exc}") from exc


@dataclass(frozen=True)
class PresetDefaults:
    """A preset's shape and the training defaults that go with it.

    ``patience`` is the early-stopping patience on validation AUC in epochs (None: train
    every epoch, still keeping the best epoch's weights). ``jit_compile``: compile the
    training step with XLA, which pays off where the step's compute dominates (measured
    on 2 cores: the kaggle shape runs about twice as fast at batch 128), and costs more
    than it saves on small models and data (a second or two of compilation per batch
    shape against epochs of a few hundred milliseconds).
    """

    preset: Preset
    model: DLRMConfig
    optimizer: OptimizerKind
    learning_rate: float
    batch_size: int
    epochs: int
    patience: int | None
    jit_compile: bool


# Embedding 16, bottom 13-512-256-64-16, top 512-256-1, SGD lr 0.1, batch 128, one epoch:
# the reference Criteo Kaggle run of facebookresearch/dlrm (bench/dlrm_s_criteo_kaggle.sh).
KAGGLE = PresetDefaults(
    preset=Preset.KAGGLE,
    model=DLRMConfig(embedding_dim=16, bottom_units=(512, 256, 64, 16), top_units=(512, 256, 1)),
    optimizer=OptimizerKind.SGD,
    learning_rate=0.1,
    batch_size=128,
    epochs=1,
    patience=None,
    jit_compile=True,
)

SMALL = PresetDefaults(
    preset=Preset.SMALL,
    model=DLRMConfig(embedding_dim=16, bottom_units=(64, 16), top_units=(64, 32, 1)),
    optimizer=OptimizerKind.ADAGRAD,
    learning_rate=0.05,
    batch_size=256,
    epochs=10,
    patience=2,
    jit_compile=False,
)

PRESETS: dict[Preset, PresetDefaults] = {Preset.SMALL: SMALL, Preset.KAGGLE: KAGGLE}

# DESIGN.md §Model: `small` below one million training rows, `kaggle` from there on.
SMALL_PRESET_MAX_TRAIN_ROWS = 1_000_000


def choose_preset(train_rows: int) -> Preset:
    """The default preset for a training split of ``train_rows`` rows."""
    return Preset.SMALL if train_rows < SMALL_PRESET_MAX_TRAIN_ROWS else Preset.KAGGLE
