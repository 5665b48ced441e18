"""The DLRM network (Naumov et al. 2019, arXiv 1906.00091) as one Keras layer per part of
its diagram: DenseArch (bottom MLP), SparseArch (embedding tables), InteractionArch and
OverArch (top MLP).

Shapes use B for the batch size, D for the number of dense features, F for the number of
categorical features (one embedding table each) and E for the embedding dimension.

The layers create their variables with zero initialisers: the real initial values come
from :func:`enclaverec.dlrm.weights.initial_arrays` (numpy, seeded), so that every process
starting from the same seed holds the same model.
"""

from __future__ import annotations

import numpy as np

from enclaverec.data.schema import FeatureSpec
from enclaverec.dlrm.config import DLRMConfig, InteractionKind
from enclaverec.dlrm.weights import interaction_width
from enclaverec.model._tf import keras, tf


def _mlp(units: tuple[int, ...], width_in: int, *, last_activation: str | None) -> list:
    layers = []
    for index, width_out in enumerate(units):
        last = index == len(units) - 1
        layer = keras.layers.Dense(
            width_out,
            activation=last_activation if last else "relu",
            kernel_initializer="zeros",
            bias_initializer="zeros",
            name=str(index),
        )
        layer.build((None, width_in))
        layers.append(layer)
        width_in = width_out
    return layers


class DenseArch(keras.layers.Layer):
    """The bottom MLP: ReLU layers from the dense features to one vector of width E."""

    def __init__(self, num_dense: int, units: tuple[int, ...], **kwargs) -> None:
        super().__init__(**kwargs)
        self.layers_ = _mlp(units, num_dense, last_activation="relu")

    def call(self, dense: tf.Tensor) -> tf.Tensor:
        """dense: float32 [B, D]. Returns: float32 [B, E]."""
        x = dense
        for layer in self.layers_:
            x = layer(x)
        return x


class SparseArch(keras.layers.Layer):
    """One embedding table per categorical feature.

    The tables are stored as one variable, stacked row-wise with an offset per feature, so
    that a batch is one gather and its update one scatter; the weight mapping still shows
    one array per feature (:mod:`enclaverec.dlrm.weights`).
    """

    def __init__(self, table_sizes: tuple[int, ...], embedding_dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.table_sizes = tuple(int(size) for size in table_sizes)
        self.embedding_dim = embedding_dim
        self.total_rows = sum(self.table_sizes)
        self.index_dtype = tf.int32 if self.total_rows < 2**31 else tf.int64
        starts = np.concatenate([[0], np.cumsum(self.table_sizes)[:-1]])
        self.row_offsets = starts.astype(self.index_dtype.as_numpy_dtype)
        self.tables = self.add_weight(
            shape=(self.total_rows, embedding_dim), initializer="zeros", name="tables"
        )

    def stacked_rows(self, categorical: tf.Tensor) -> tf.Tensor:
        """categorical: int [B, F] row ids, each in [0, table size). Returns: [B, F] rows
        of the stacked table."""
        return tf.cast(categorical, self.index_dtype) + self.row_offsets

    def call(self, categorical: tf.Tensor) -> tf.Tensor:
        """categorical: int [B, F]. Returns: float32 [B, F, E]."""
        # Gather from the tf.Variable itself (a ResourceGather), not from a read of it: a
        # read tensor would stay alive for the gradient, and the optimizer's in-place
        # scatter would then copy the whole table on every step.
        return tf.gather(self.tables.value, self.stacked_rows(categorical))


class InteractionArch(keras.layers.Layer):
    """Feature interaction of the bottom output with the embeddings.

    DOT: the pairwise dot products of the F + 1 vectors, strict lower triangle (no vector
    with itself), in the reference's order (i over rows, j < i), after the bottom output;
    CAT: the F + 1 vectors concatenated.
    """

    def __init__(self, num_categorical: int, kind: InteractionKind, **kwargs) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.vectors = num_categorical + 1
        rows, cols = np.tril_indices(self.vectors, k=-1)
        # Positions of the strict lower triangle in the flattened [F+1, F+1] matrix.
        self.lower_triangle = (rows * self.vectors + cols).astype(np.int32)

    def call(self, bottom: tf.Tensor, embedded: tf.Tensor) -> tf.Tensor:
        """bottom: [B, E]; embedded: [B, F, E]. Returns: [B, E + (F+1)F/2] for DOT,
        [B, (F+1)E] for CAT."""
        stacked = tf.concat([tf.expand_dims(bottom, 1), embedded], axis=1)  # [B, F+1, E]
        if self.kind is InteractionKind.CAT:
            return tf.reshape(stacked, [-1, self.vectors * stacked.shape[-1]])
        products = tf.matmul(stacked, stacked, transpose_b=True)  # [B, F+1, F+1]
        flat = tf.reshape(products, [-1, self.vectors * self.vectors])
        pairs = tf.gather(flat, self.lower_triangle, axis=1)  # [B, (F+1)F/2]
        return tf.concat([bottom, pairs], axis=1)


class OverArch(keras.layers.Layer):
    """The top MLP: ReLU layers, then a linear layer to one logit."""

    def __init__(self, width_in: int, units: tuple[int, ...], **kwargs) -> None:
        super().__init__(**kwargs)
        self.layers_ = _mlp(units, width_in, last_activation=None)

    def call(self, interacted: tf.Tensor) -> tf.Tensor:
        """interacted: [B, width]. Returns: float32 [B] logits."""
        x = interacted
        for layer in self.layers_:
            x = layer(x)
        return tf.squeeze(x, axis=1)


class DLRM(keras.layers.Layer):
    """The deep-learning recommendation model: dense features through the bottom MLP,
    categorical features through their embedding tables, their interaction, and the top MLP
    to a click logit. Trained with binary cross-entropy on that logit (outside the model:
    :mod:`enclaverec.model.dlrm_trainer`)."""

    def __init__(self, spec: FeatureSpec, config: DLRMConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.config = config
        self.dense_arch = DenseArch(spec.num_dense, config.bottom_units, name="bottom")
        self.sparse_arch = SparseArch(spec.table_sizes, config.embedding_dim, name="embedding")
        self.interaction_arch = InteractionArch(
            spec.num_categorical, config.interaction, name="interaction"
        )
        self.over_arch = OverArch(
            interaction_width(spec.num_categorical, config), config.top_units, name="top"
        )

    def call(self, dense: tf.Tensor, categorical: tf.Tensor) -> tf.Tensor:
        """dense: float32 [B, D]; categorical: int32 [B, F]. Returns: float32 [B] logits."""
        bottom = self.dense_arch(dense)  # [B, E]
        embedded = self.sparse_arch(categorical)  # [B, F, E]
        interacted = self.interaction_arch(bottom, embedded)  # [B, width]
        return self.over_arch(interacted)  # [B]
