"""The DLRM's gradients for one distributed step, computed from pulled weights: forward
and backward through the same layers as the trainer, with the batch's embedding rows
given as a tensor instead of gathered from whole tables, and no optimizer.

A worker builds the bottom MLP, interaction and top MLP only (never ``SparseArch``, whose
tables would be whole): it holds the dense weights it pulled and the rows its batch uses.
The embedding gradient comes back per unique row, repeated ids summed, as the trainer's
``unique_rows`` does before Adagrad's statistic.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from enclaverec.arrays import SparseRows
from enclaverec.data.schema import DENSE_DTYPE, LABEL_DTYPE, Examples, FeatureSpec
from enclaverec.dlrm.config import DLRMConfig
from enclaverec.dlrm.weights import embedding_name, interaction_width
from enclaverec.errors import ConfigError
from enclaverec.gradients import BatchGradients, PulledBatch, batch_ids
from enclaverec.model._tf import tf
from enclaverec.model.layers import DenseArch, InteractionArch, OverArch


class DLRMGradients:
    """Implements :class:`enclaverec.gradients.GradientTrainer` for the DLRM."""

    def __init__(self, spec: FeatureSpec, config: DLRMConfig) -> None:
        self.spec = spec
        self.config = config
        self.dense_arch = DenseArch(spec.num_dense, config.bottom_units, name="bottom")
        self.interaction_arch = InteractionArch(
            spec.num_categorical, config.interaction, name="interaction"
        )
        self.over_arch = OverArch(
            interaction_width(spec.num_categorical, config), config.top_units, name="top"
        )
        self._dense_named: list[tuple[str, tf.Variable]] = []
        for prefix, arch in (("bottom", self.dense_arch), ("top", self.over_arch)):
            for index, layer in enumerate(arch.layers_):
                self._dense_named.append((f"{prefix}/{index}/kernel", layer.kernel.value))
                self._dense_named.append((f"{prefix}/{index}/bias", layer.bias.value))
        self._dense_variables = [variable for _, variable in self._dense_named]
        self._tables = [embedding_name(name) for name in spec.categorical_names]
        e, d, f = config.embedding_dim, spec.num_dense, spec.num_categorical

        params = [tf.TensorSpec(v.shape, v.dtype) for v in self._dense_variables]

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, d], tf.float32),
                tf.TensorSpec([None, f], tf.int32),
                tf.TensorSpec([None, e], tf.float32),
                tf.TensorSpec([None], tf.float32),
                *params,
            ]
        )
        def step(dense, local_rows, pulled, labels, *weights):
            """local_rows: [B, F] indices into ``pulled`` [U, E] (every table's unique
            rows stacked); ``weights``: the pulled dense arrays, in ``_dense_named``'s
            order. Returns (mean loss, d loss / d pulled [U, E], dense grads)."""
            # The pulled weights go into the layers' variables inside the graph: one call
            # per step instead of an eager assign per array (their Python overhead was
            # most of the step's compute), and the same layers and maths as before.
            for variable, weight in zip(self._dense_variables, weights, strict=True):
                variable.assign(weight)
            with tf.GradientTape() as tape:
                tape.watch(pulled)
                bottom = self.dense_arch(dense)  # [B, E]
                embedded = tf.gather(pulled, local_rows)  # [B, F, E]
                logits = self.over_arch(self.interaction_arch(bottom, embedded))  # [B]
                loss = tf.reduce_mean(
                    tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
                )
            row_gradient, *dense_gradients = tape.gradient(loss, [pulled, *self._dense_variables])
            # The gather's gradient arrives per occurrence; summing by index is the
            # trainer's unique_rows (repeated ids added before any statistic).
            return loss, tf.convert_to_tensor(row_gradient), dense_gradients

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, d], tf.float32),
                tf.TensorSpec([None, f], tf.int32),
                tf.TensorSpec([None, e], tf.float32),
            ]
        )
        def forward(dense, local_rows, pulled):
            bottom = self.dense_arch(dense)
            embedded = tf.gather(pulled, local_rows)
            return tf.sigmoid(self.over_arch(self.interaction_arch(bottom, embedded)))

        # The concrete function: called directly, it skips the per-call binding of the
        # arguments to the signature (the signature is fixed, so nothing is retraced).
        self._step = step.get_concrete_function()
        self._forward = forward

    def table_names(self) -> list[str]:
        return list(self._tables)

    def predict(
        self, arrays: Mapping[str, np.ndarray], examples: Examples, *, rows_per_call: int = 8192
    ) -> np.ndarray:
        """Click probabilities [N] of the model ``arrays`` for ``examples`` (validation
        scores): the same forward pass, each chunk given only the table rows it uses."""
        for name, variable in self._dense_named:
            variable.assign(np.asarray(arrays[name], np.float32))
        parts = []
        for start in range(0, len(examples), rows_per_call):
            chunk = examples.take(np.arange(start, min(start + rows_per_call, len(examples))))
            ids = batch_ids(chunk, self._tables)
            offsets = np.cumsum([0] + [len(unique) for unique, _ in ids.values()])
            local = np.stack(
                [inverse + offsets[i] for i, (_, inverse) in enumerate(ids.values())], axis=1
            ).astype(np.int32)
            pulled = np.concatenate(
                [np.asarray(arrays[name])[unique] for name, (unique, _) in ids.items()], axis=0
            ).astype(np.float32)
            parts.append(
                self._forward(
                    tf.convert_to_tensor(np.asarray(chunk.dense, DENSE_DTYPE)),
                    tf.convert_to_tensor(local),
                    tf.convert_to_tensor(pulled),
                ).numpy()
            )
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def gradients(self, batch: PulledBatch) -> BatchGradients:
        names = [table.name for table in batch.tables]
        if names != self._tables:
            raise ConfigError(f"the batch's tables {names} are not the model's {self._tables}")
        offsets = np.cumsum([0] + [len(table.ids) for table in batch.tables])
        local = np.stack(
            [table.inverse + offsets[i] for i, table in enumerate(batch.tables)], axis=1
        ).astype(np.int32)
        pulled = np.concatenate([table.rows for table in batch.tables], axis=0)
        examples = batch.examples
        loss, row_gradient, dense_gradients = self._step(
            tf.convert_to_tensor(np.asarray(examples.dense, DENSE_DTYPE)),
            tf.convert_to_tensor(local),
            tf.convert_to_tensor(pulled.astype(np.float32)),
            tf.convert_to_tensor(np.asarray(examples.labels, LABEL_DTYPE)),
            *(
                tf.convert_to_tensor(np.asarray(batch.dense[name], np.float32))
                for name, _ in self._dense_named
            ),
        )
        row_gradient = row_gradient.numpy()
        tables = {
            table.name: SparseRows(table.ids, row_gradient[offsets[i] : offsets[i + 1]])
            for i, table in enumerate(batch.tables)
        }
        return BatchGradients(
            loss_sum=float(loss) * len(examples),
            dense={
                name: gradient.numpy()
                for (name, _), gradient in zip(self._dense_named, dense_gradients, strict=True)
            },
            tables=tables,
        )
