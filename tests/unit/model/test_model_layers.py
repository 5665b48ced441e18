from __future__ import annotations

import numpy as np
import pytest

from enclaverec.dlrm.config import DLRMConfig, InteractionKind
from enclaverec.model._tf import tf
from enclaverec.model.layers import DLRM, DenseArch, InteractionArch, OverArch, SparseArch

B = 5


def test_dense_arch_maps_dense_features_to_the_embedding_width():
    arch = DenseArch(3, (6, 4))
    out = arch(tf.random.normal([B, 3]))
    assert out.shape == (B, 4)
    # ReLU at the end too: the bottom output is a feature vector like an embedding.
    assert float(tf.reduce_min(out)) >= 0.0


def test_sparse_arch_looks_up_each_feature_in_its_own_table():
    arch = SparseArch((3, 2), embedding_dim=2)
    # Stacked rows 0-2 belong to feature 0, rows 3-4 to feature 1.
    arch.tables.assign(np.arange(10, dtype=np.float32).reshape(5, 2))
    out = arch(tf.constant([[0, 1], [2, 0]], dtype=tf.int32)).numpy()
    assert out.shape == (2, 2, 2)
    np.testing.assert_array_equal(out[0, 0], [0, 1])  # feature 0, row 0
    np.testing.assert_array_equal(out[0, 1], [8, 9])  # feature 1, row 1 = stacked row 4
    np.testing.assert_array_equal(out[1, 0], [4, 5])  # feature 0, row 2
    np.testing.assert_array_equal(out[1, 1], [6, 7])  # feature 1, row 0 = stacked row 3


def test_dot_interaction_is_the_strict_lower_triangle_after_the_bottom_output():
    num_categorical, width = 3, 2
    rng = np.random.default_rng(1)
    bottom = rng.normal(size=(B, width)).astype(np.float32)
    embedded = rng.normal(size=(B, num_categorical, width)).astype(np.float32)
    out = InteractionArch(num_categorical, InteractionKind.DOT)(bottom, embedded).numpy()
    vectors = np.concatenate([bottom[:, None, :], embedded], axis=1)  # [B, 4, 2]
    # The reference order: i over rows, j < i; never a vector with itself.
    expected_pairs = [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    assert out.shape == (B, width + len(expected_pairs))
    np.testing.assert_allclose(out[:, :width], bottom)
    for column, (i, j) in enumerate(expected_pairs):
        np.testing.assert_allclose(
            out[:, width + column], np.sum(vectors[:, i] * vectors[:, j], axis=1), rtol=1e-6
        )


def test_dot_interaction_leaves_out_the_diagonal_and_upper_triangle():
    # Orthogonal unit vectors: every off-diagonal product is 0, every diagonal one is 1,
    # so any diagonal entry in the output would show up as a 1.
    bottom = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)
    embedded = np.array([[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]], dtype=np.float32)
    out = InteractionArch(2, InteractionKind.DOT)(bottom, embedded).numpy()
    assert out.shape == (1, 3 + 3)  # 3 vectors: 3 * 2 / 2 pairs
    np.testing.assert_array_equal(out[0, 3:], [0.0, 0.0, 0.0])


def test_cat_interaction_concatenates_all_vectors():
    bottom = np.ones((B, 2), dtype=np.float32)
    embedded = np.full((B, 3, 2), 2.0, dtype=np.float32)
    out = InteractionArch(3, InteractionKind.CAT)(bottom, embedded).numpy()
    assert out.shape == (B, 8)
    np.testing.assert_array_equal(out[0], [1, 1, 2, 2, 2, 2, 2, 2])


def test_over_arch_ends_in_one_linear_logit_per_row():
    arch = OverArch(7, (5, 1))
    arch.layers_[-1].bias.assign([-3.0])
    out = arch(tf.zeros([B, 7]))
    assert out.shape == (B,)
    # Linear last layer: a negative logit passes (a ReLU would clip it to 0).
    np.testing.assert_allclose(out.numpy(), -3.0)


@pytest.mark.parametrize("interaction", list(InteractionKind))
def test_dlrm_gives_one_logit_per_row(spec, examples, interaction):
    config = DLRMConfig(
        embedding_dim=4, bottom_units=(6, 4), top_units=(5, 1), interaction=interaction
    )
    model = DLRM(spec, config)
    logits = model(examples.dense[:B], examples.categorical[:B])
    assert logits.shape == (B,)
    assert logits.dtype == tf.float32
