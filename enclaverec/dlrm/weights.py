"""The DLRM's weights as an ordered mapping of stable names to numpy arrays (no TensorFlow).

This mapping is what moves between processes (federated parties, parameter servers), so
its names are part of the interface:

- ``bottom/<i>/kernel`` [in, out] and ``bottom/<i>/bias`` [out], for each bottom MLP layer;
- ``embedding/<feature>`` [table_size, embedding_dim], one table per categorical feature,
  in the FeatureSpec's order;
- ``top/<i>/kernel`` and ``top/<i>/bias``, for each top MLP layer.

The order is the DLRM diagram's: bottom MLP, embeddings, top MLP.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from enclaverec.arrays import Arrays
from enclaverec.data.schema import FeatureSpec
from enclaverec.dlrm.config import DLRMConfig, InteractionKind
from enclaverec.errors import ConfigError, WeightMappingError

WEIGHT_DTYPE = np.dtype(np.float32)
EMBEDDING_PREFIX = "embedding/"


def interaction_width(num_categorical: int, config: DLRMConfig) -> int:
    """Width of the interaction layer's output, i.e. the top MLP's input."""
    vectors = num_categorical + 1  # the bottom MLP's output joins the embeddings
    if config.interaction is InteractionKind.DOT:
        return config.embedding_dim + vectors * (vectors - 1) // 2
    return config.embedding_dim * vectors


def _mlp_shapes(prefix: str, width_in: int, units: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for index, width_out in enumerate(units):
        shapes[f"{prefix}/{index}/kernel"] = (width_in, width_out)
        shapes[f"{prefix}/{index}/bias"] = (width_out,)
        width_in = width_out
    return shapes


def embedding_name(feature: str) -> str:
    return f"{EMBEDDING_PREFIX}{feature}"


def weight_shapes(spec: FeatureSpec, config: DLRMConfig) -> dict[str, tuple[int, ...]]:
    """Every weight's name and shape, in the mapping's order."""
    if spec.num_dense < 1:
        raise ConfigError("the DLRM needs at least one dense feature for its bottom MLP")
    if spec.num_categorical < 1:
        raise ConfigError("the DLRM needs at least one categorical feature")
    if len(set(spec.categorical_names)) != spec.num_categorical:
        raise ConfigError("categorical feature names must be unique")
    shapes = _mlp_shapes("bottom", spec.num_dense, config.bottom_units)
    for name, rows in zip(spec.categorical_names, spec.table_sizes, strict=True):
        shapes[embedding_name(name)] = (rows, config.embedding_dim)
    shapes.update(
        _mlp_shapes("top", interaction_width(spec.num_categorical, config), config.top_units)
    )
    return shapes


def initial_arrays(spec: FeatureSpec, config: DLRMConfig, *, seed: int) -> Arrays:
    """Fresh weights, initialised as the reference DLRM does (dlrm_s_pytorch.py):

    - MLP kernels ~ Normal(0, sqrt(2 / (fan_in + fan_out))) (Glorot normal, create_mlp);
    - MLP biases ~ Normal(0, sqrt(1 / fan_out)) (create_mlp);
    - embedding rows ~ Uniform(-sqrt(1 / rows), sqrt(1 / rows)) (create_emb).

    Drawn with numpy from ``seed`` so every process that starts from the same seed holds
    the same model, whatever its TensorFlow version.
    """
    rng = np.random.default_rng(seed)
    arrays: Arrays = {}
    for name, shape in weight_shapes(spec, config).items():
        if name.startswith(EMBEDDING_PREFIX):
            bound = np.sqrt(1.0 / shape[0])
            # float32 draws: a Kaggle-size table would need gigabytes as float64.
            uniform = rng.random(shape, dtype=np.float32)
            arrays[name] = ((2.0 * bound) * uniform - bound).astype(WEIGHT_DTYPE)
        elif name.endswith("/kernel"):
            std = np.sqrt(2.0 / (shape[0] + shape[1]))
            arrays[name] = rng.normal(0.0, std, size=shape).astype(WEIGHT_DTYPE)
        else:
            std = np.sqrt(1.0 / shape[0])
            arrays[name] = rng.normal(0.0, std, size=shape).astype(WEIGHT_DTYPE)
    return arrays


def check_arrays(arrays: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Refuse a mapping whose names, shapes or dtypes differ from the model's, or that
    holds non-finite values.

    The message names the first offending weight and what was expected; it never shows
    values.
    """
    missing = [name for name in shapes if name not in arrays]
    unexpected = [name for name in arrays if name not in shapes]
    if missing or unexpected:
        raise WeightMappingError(
            f"weight names do not match the model (missing: {missing[:3] or 'none'}, "
            f"unexpected: {unexpected[:3] or 'none'})"
        )
    for name, shape in shapes.items():
        array = arrays[name]
        if not isinstance(array, np.ndarray):
            raise WeightMappingError(f"{name}: expected a numpy array, got {type(array).__name__}")
        if array.dtype != WEIGHT_DTYPE:
            raise WeightMappingError(f"{name}: dtype {array.dtype}, expected {WEIGHT_DTYPE}")
        if tuple(array.shape) != tuple(shape):
            raise WeightMappingError(f"{name}: shape {tuple(array.shape)}, expected {shape}")
        if not np.isfinite(array).all():
            raise WeightMappingError(f"{name}: holds NaN or infinite values")
