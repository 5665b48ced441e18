from __future__ import annotations

import numpy as np
import pytest

from enclaverec.data.schema import FeatureSpec
from enclaverec.dlrm.config import KAGGLE, SMALL, DLRMConfig, InteractionKind
from enclaverec.dlrm.weights import check_arrays, initial_arrays, weight_shapes
from enclaverec.errors import ConfigError, WeightMappingError


def test_names_are_stable_readable_and_in_diagram_order(spec, config):
    assert list(weight_shapes(spec, config)) == [
        "bottom/0/kernel",
        "bottom/0/bias",
        "bottom/1/kernel",
        "bottom/1/bias",
        "embedding/user",
        "embedding/item",
        "embedding/genre",
        "top/0/kernel",
        "top/0/bias",
        "top/1/kernel",
        "top/1/bias",
    ]


def test_shapes_follow_the_spec_and_the_interaction(spec, config):
    shapes = weight_shapes(spec, config)
    assert shapes["bottom/0/kernel"] == (3, 6)
    assert shapes["embedding/genre"] == (11, 4)
    # 4 vectors (bottom + 3 embeddings): 6 pairs, after the bottom output's 4 values.
    assert shapes["top/0/kernel"] == (4 + 6, 5)
    cat = DLRMConfig(4, (6, 4), (5, 1), InteractionKind.CAT)
    assert weight_shapes(spec, cat)["top/0/kernel"] == (16, 5)


def test_kaggle_shape_matches_the_reference_dlrm():
    criteo = FeatureSpec(
        tuple(f"I{i}" for i in range(13)), tuple(f"C{i}" for i in range(26)), (100,) * 26
    )
    shapes = weight_shapes(criteo, KAGGLE.model)
    assert shapes["bottom/0/kernel"] == (13, 512)
    assert shapes["bottom/3/kernel"] == (64, 16)
    assert shapes["top/0/kernel"] == (16 + 27 * 26 // 2, 512)  # 367, as dlrm_s_pytorch
    assert shapes["top/2/kernel"] == (256, 1)


def test_initial_arrays_are_deterministic_and_seed_dependent(spec, config):
    first = initial_arrays(spec, config, seed=3)
    again = initial_arrays(spec, config, seed=3)
    other = initial_arrays(spec, config, seed=4)
    for name in first:
        assert first[name].dtype == np.float32
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["embedding/user"], other["embedding/user"])


def test_initial_arrays_follow_the_reference_distributions():
    big = FeatureSpec(("d",), ("c",), (400,))
    config = DLRMConfig(64, (256, 64), (256, 1))
    arrays = initial_arrays(big, config, seed=0)
    bound = np.sqrt(1 / 400)
    table = arrays["embedding/c"]
    assert table.min() >= -bound and table.max() <= bound
    assert table.min() < -0.9 * bound and table.max() > 0.9 * bound
    kernel = arrays["bottom/1/kernel"]  # 256 -> 64: std sqrt(2 / 320)
    assert abs(kernel.std() - np.sqrt(2 / 320)) < 0.01
    bias = arrays["top/0/bias"]  # 256 outputs: std sqrt(1 / 256)
    assert abs(bias.std() - np.sqrt(1 / 256)) < 0.015


def test_check_arrays_accepts_a_matching_mapping(spec, config):
    check_arrays(initial_arrays(spec, config, seed=0), weight_shapes(spec, config))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("top/1/bias"), "missing"),
        (lambda a: a.__setitem__("embedding/extra", np.zeros((2, 4), np.float32)), "unexpected"),
        (lambda a: a.__setitem__("embedding/user", np.zeros((6, 4), np.float32)), "shape"),
        (lambda a: a.__setitem__("bottom/0/bias", np.zeros(6, np.float64)), "dtype"),
        (lambda a: a["top/0/kernel"].__setitem__((0, 0), np.nan), "NaN"),
        (lambda a: a.__setitem__("bottom/0/bias", [0.0] * 6), "numpy array"),
    ],
)
def test_check_arrays_refuses_a_mismatch(spec, config, change, message):
    arrays = initial_arrays(spec, config, seed=0)
    change(arrays)
    with pytest.raises(WeightMappingError, match=message):
        check_arrays(arrays, weight_shapes(spec, config))


def test_config_refuses_inconsistent_shapes():
    with pytest.raises(ConfigError, match="embedding dimension"):
        DLRMConfig(16, (64, 8), (1,))
    with pytest.raises(ConfigError, match="one logit"):
        DLRMConfig(16, (16,), (8, 2))


def test_presets_hold_the_documented_defaults():
    assert SMALL.model.bottom_units == (64, 16) and SMALL.model.top_units == (64, 32, 1)
    assert (SMALL.learning_rate, SMALL.batch_size, SMALL.epochs, SMALL.patience) == (
        0.05,
        256,
        10,
        2,
    )
    assert (KAGGLE.learning_rate, KAGGLE.batch_size, KAGGLE.epochs) == (0.1, 128, 1)
