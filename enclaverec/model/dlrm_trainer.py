"""The TensorFlow DLRM trainer: implements :class:`enclaverec.training.Trainer` over the
DLRM with sparse embedding updates, and keeps its optimizer state across ``fit`` calls
(unless the fit restarts it).

Speed: the local data lives in memory as tensors; each compiled call runs a chunk of
optimizer steps in a graph loop (gathering its batches from the permutation it is given),
so Python is entered once per chunk, not once per step. Embedding gradients stay
``IndexedSlices`` and are applied with scatter operations (see ``optimizers``).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from enclaverec.data.schema import DENSE_DTYPE, LABEL_DTYPE, SPARSE_DTYPE, Examples, FeatureSpec
from enclaverec.dlrm.config import DLRMConfig, OptimizerKind
from enclaverec.dlrm.weights import (
    EMBEDDING_PREFIX,
    WEIGHT_DTYPE,
    Arrays,
    check_arrays,
    embedding_name,
    initial_arrays,
    weight_shapes,
)
from enclaverec.errors import ConfigError, TrainingError
from enclaverec.model._tf import tf
from enclaverec.model.layers import DLRM
from enclaverec.model.optimizers import make_rule, unique_rows
from enclaverec.schedule import epoch_order
from enclaverec.training import FitConfig, FitMetrics, StepCallback

# Steps per compiled call: large enough that Python's per-call cost (~0.1 ms) vanishes
# against the steps, small enough for a lively progress bar. A power of two (see
# _step_plan).
STEPS_PER_CALL = 32
# Rows per compiled call in predict: bounds the interaction tensor's memory
# ([rows, F+1, F+1] floats: 47 MB for Criteo's 27 vectors).
PREDICT_ROWS_PER_CALL = 16_384


@dataclass(frozen=True)
class DLRMTrainerConfig:
    """How to build a DLRM trainer: the network's shape, the update rule, the seed of the
    initial weights, and whether XLA compiles the training step."""

    model: DLRMConfig
    optimizer: OptimizerKind
    init_seed: int = 0
    jit_compile: bool = False


def _check_examples(spec: FeatureSpec, examples: Examples, what: str) -> None:
    if examples.dense.ndim != 2 or examples.dense.shape[1] != spec.num_dense:
        raise ConfigError(
            f"{what}: dense features have shape {examples.dense.shape}, "
            f"expected [N, {spec.num_dense}]"
        )
    if examples.categorical.ndim != 2 or examples.categorical.shape[1] != spec.num_categorical:
        raise ConfigError(
            f"{what}: categorical features have shape {examples.categorical.shape}, "
            f"expected [N, {spec.num_categorical}]"
        )
    if len(examples) and (
        examples.categorical.min() < 0
        or (examples.categorical >= np.asarray(spec.table_sizes)).any()
    ):
        raise ConfigError(f"{what}: a categorical row id is outside its embedding table")


class DLRMTrainer:
    """Trains the DLRM on its own local data (``train``; None for a predict-only trainer).

    The weights move in and out as the named arrays of :mod:`enclaverec.dlrm.weights`;
    the optimizer's accumulators stay inside this object.
    """

    def __init__(
        self, spec: FeatureSpec, config: DLRMTrainerConfig, train: Examples | None = None
    ) -> None:
        self.spec = spec
        self.config = config
        self.shapes = weight_shapes(spec, config.model)
        self.model = DLRM(spec, config.model, name="dlrm")
        sparse = self.model.sparse_arch
        # tf.Variables under the Keras variables: scatter operations need them.
        self._table = sparse.tables.value
        self._dense_named: list[tuple[str, tf.Variable]] = []
        for prefix, arch in (("bottom", self.model.dense_arch), ("top", self.model.over_arch)):
            for index, layer in enumerate(arch.layers_):
                self._dense_named.append((f"{prefix}/{index}/kernel", layer.kernel.value))
                self._dense_named.append((f"{prefix}/{index}/bias", layer.bias.value))
        self._dense_variables = [variable for _, variable in self._dense_named]
        starts = np.concatenate([[0], np.cumsum(spec.table_sizes)])
        self._table_slices = {
            embedding_name(name): (int(starts[i]), int(starts[i + 1]))
            for i, name in enumerate(spec.categorical_names)
        }
        self.rule = make_rule(config.optimizer, self._dense_variables, self._table)
        self._anchor_table: tf.Variable | None = None
        self._anchor_dense: list | None = None
        self._train: tuple | None = None
        self.train_rows = 0
        if train is not None:
            _check_examples(spec, train, "training data")
            if len(train) == 0:
                raise TrainingError("the training split is empty")
            self._train = self._as_tensors(train)
            self.train_rows = len(train)
        self.set_arrays(self.initial_arrays())
        self._compile()

    # --- weights ----------------------------------------------------------------------

    def initial_arrays(self) -> Arrays:
        return initial_arrays(self.spec, self.config.model, seed=self.config.init_seed)

    def get_arrays(self) -> Arrays:
        """The current weights as fresh numpy arrays, in the mapping's order."""
        dense = {
            name: np.array(variable.numpy(), copy=True) for name, variable in self._dense_named
        }
        table = self._table.numpy()
        arrays: Arrays = {}
        for name in self.shapes:
            if name.startswith(EMBEDDING_PREFIX):
                start, stop = self._table_slices[name]
                arrays[name] = np.array(table[start:stop], copy=True)
            else:
                arrays[name] = dense[name]
        return arrays

    def set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Set every weight from ``arrays``; WeightMappingError if it does not fit."""
        check_arrays(arrays, self.shapes)
        self._table.assign(np.concatenate([arrays[name] for name in self._table_slices], axis=0))
        for name, variable in self._dense_named:
            variable.assign(arrays[name])

    # --- compiled functions -----------------------------------------------------------

    def _as_tensors(self, examples: Examples) -> tuple:
        return (
            tf.convert_to_tensor(np.asarray(examples.dense, dtype=DENSE_DTYPE)),
            tf.convert_to_tensor(np.asarray(examples.categorical, dtype=SPARSE_DTYPE)),
            tf.convert_to_tensor(np.asarray(examples.labels, dtype=LABEL_DTYPE)),
        )

    def _compile(self) -> None:
        d, f = self.spec.num_dense, self.spec.num_categorical
        data_signature = [
            tf.TensorSpec([None, d], tf.float32),
            tf.TensorSpec([None, f], tf.int32),
            tf.TensorSpec([None], tf.float32),
        ]
        scalar = tf.TensorSpec([], tf.float32)
        jit = self.config.jit_compile

        def chunk(use_prox: bool):
            @tf.function(
                input_signature=[
                    *data_signature,
                    tf.TensorSpec([None, None], tf.int32),
                    scalar,
                    scalar,
                ],
                jit_compile=jit,
            )
            def train_chunk(dense, categorical, labels, order, learning_rate, mu):
                """order: [K, b] rows of the local data, one line per step. Returns the sum
                of the per-row losses of the K steps."""
                total = tf.constant(0.0)
                for k in tf.range(tf.shape(order)[0]):
                    rows = order[k]
                    loss = self._step(
                        tf.gather(dense, rows),
                        tf.gather(categorical, rows),
                        tf.gather(labels, rows),
                        learning_rate,
                        mu,
                        use_prox,
                    )
                    total += loss * tf.cast(tf.shape(rows)[0], tf.float32)
                return total

            return train_chunk

        self._train_chunk = {False: chunk(False), True: chunk(True)}

        @tf.function(input_signature=[*data_signature, scalar], jit_compile=jit)
        def train_batch(dense, categorical, labels, learning_rate):
            return self._step(dense, categorical, labels, learning_rate, 0.0, False)

        self._train_batch = train_batch

        @tf.function(input_signature=data_signature[:2])
        def predict(dense, categorical):
            return tf.sigmoid(self.model(dense, categorical))

        self._predict = predict

    def _step(self, dense, categorical, labels, learning_rate, mu, use_prox: bool):
        """One optimizer step on a batch; returns the batch's mean loss (without the
        proximal term)."""
        with tf.GradientTape() as tape:
            logits = self.model(dense, categorical)
            loss = tf.reduce_mean(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
            )
        table_gradient, *dense_gradients = tape.gradient(
            loss, [self._table, *self._dense_variables]
        )
        rows, row_gradients = table_gradient.indices, table_gradient.values
        if self.rule.needs_unique_rows or use_prox:
            rows, row_gradients = unique_rows(rows, row_gradients)
        if use_prox:
            if self._anchor_table is None or self._anchor_dense is None:
                raise TrainingError("the proximal term needs its start weights")  # traced only
            # FedProx: the gradient of mu/2 * ||w - w_start||^2 is mu * (w - w_start), on
            # the dense weights and on the rows this batch touches.
            dense_gradients = [
                gradient + mu * (variable - anchor)
                for gradient, variable, anchor in zip(
                    dense_gradients, self._dense_variables, self._anchor_dense, strict=True
                )
            ]
            row_gradients += mu * (
                tf.gather(self._table, rows) - tf.gather(self._anchor_table, rows)
            )
        self.rule.apply_dense(dense_gradients, learning_rate)
        self.rule.apply_rows(rows, row_gradients, learning_rate)
        return loss

    # --- Trainer interface ------------------------------------------------------------

    def _permutations(self, config: FitConfig) -> Iterable[np.ndarray]:
        """Row orders for ``config``: one seeded permutation per pass over the data."""
        passes = config.epochs
        if config.max_steps is not None:
            steps_per_pass = math.ceil(self.train_rows / config.batch_size)
            passes = math.ceil(config.max_steps / steps_per_pass)
        for pass_index in range(passes):
            yield epoch_order(
                self.train_rows,
                seed=config.seed,
                round_index=config.round_index,
                pass_index=pass_index,
            )

    def _step_plan(self, config: FitConfig) -> list[np.ndarray]:
        """The fit's steps as index blocks: [K, batch] blocks of full batches and [1, b]
        blocks for each pass's short last batch, cut at ``max_steps``.

        K is STEPS_PER_CALL or, for the rest, a power of two: a compiled function is
        specialised to its input shapes, so this bounds the shapes (and the XLA
        compilations) to a handful per batch size, reused by every later fit.
        """
        batch = config.batch_size
        blocks: list[np.ndarray] = []
        remaining = config.max_steps if config.max_steps is not None else math.inf
        for order in self._permutations(config):
            full = len(order) // batch
            full_steps = int(min(full, remaining))
            lines = order[: full_steps * batch].reshape(full_steps, batch)
            start = 0
            while start < full_steps:
                size = min(STEPS_PER_CALL, 1 << ((full_steps - start).bit_length() - 1))
                blocks.append(lines[start : start + size])
                start += size
            remaining -= full_steps
            if remaining > 0 and len(order) > full * batch:
                blocks.append(order[full * batch :][None, :])
                remaining -= 1
            if remaining <= 0:
                break
        return blocks

    def fit(
        self,
        arrays: Mapping[str, np.ndarray],
        config: FitConfig,
        *,
        on_steps: StepCallback | None = None,
    ) -> tuple[Arrays, FitMetrics]:
        started = time.perf_counter()
        self.set_arrays(arrays)
        metrics = self.train_local(config, on_steps=on_steps)
        new_arrays = self.get_arrays()
        # The fit's wall time includes moving the weights in and out.
        return new_arrays, FitMetrics(
            samples=metrics.samples,
            steps=metrics.steps,
            mean_loss=metrics.mean_loss,
            wall_seconds=time.perf_counter() - started,
        )

    def train_local(self, config: FitConfig, *, on_steps: StepCallback | None = None) -> FitMetrics:
        """Train the current weights on the local data as ``config`` says (``fit``
        without moving weights in and out); the proximal term anchors at the current
        weights."""
        if self._train is None:
            raise TrainingError("this trainer has no training data")
        started = time.perf_counter()
        if config.restart_optimizer:
            self.rule.restart()
        use_prox = config.proximal_mu > 0
        if use_prox:
            self._set_anchor()
        blocks = self._step_plan(config)
        total_steps = sum(len(block) for block in blocks)
        learning_rate = tf.constant(config.learning_rate, tf.float32)
        mu = tf.constant(config.proximal_mu, tf.float32)
        train_chunk = self._train_chunk[use_prox]
        loss_sum = 0.0
        samples = 0
        steps = 0
        for block in blocks:
            loss_sum += float(train_chunk(*self._train, tf.constant(block), learning_rate, mu))
            samples += block.size
            steps += len(block)
            if on_steps is not None:
                on_steps(steps, total_steps, loss_sum / samples)
        return FitMetrics(
            samples=samples,
            steps=steps,
            mean_loss=loss_sum / samples,
            wall_seconds=time.perf_counter() - started,
        )

    def _set_anchor(self) -> None:
        """Remember the weights at the start of the fit for the proximal term."""
        if self._anchor_table is None:
            self._anchor_table = tf.Variable(self._table, trainable=False, name="prox_table")
            self._anchor_dense = [
                tf.Variable(variable, trainable=False, name="prox_dense")
                for variable in self._dense_variables
            ]
        else:
            self._anchor_table.assign(self._table)
            for anchor, variable in zip(
                self._anchor_dense or [], self._dense_variables, strict=True
            ):
                anchor.assign(variable)

    def train_batches(
        self,
        batches: Iterable[Examples],
        *,
        learning_rate: float,
        prefetch: int = 2,
        on_steps: StepCallback | None = None,
    ) -> FitMetrics:
        """One optimizer step per batch from a stream (data that does not fit in memory,
        such as a Criteo file being read), continuing from the current weights.

        Runs of STEPS_PER_CALL equal-sized batches go to TensorFlow as one block (one
        compiled call, as ``fit`` does); the rest step one by one. With ``prefetch`` > 0 a
        background thread reads up to that many batches ahead, so that parsing overlaps
        with TensorFlow's kernels (which release the GIL). A deeper queue did not help on
        2 cores (measured: 41k samples/s with 2, 37k with 64 at batch 2048): parsing
        ahead competes with TensorFlow's threads for the same cores.
        """
        started = time.perf_counter()
        rate = tf.constant(learning_rate, tf.float32)
        mu = tf.constant(0.0, tf.float32)
        loss_sum = 0.0
        samples = steps = 0
        pending: list[Examples] = []

        def run(block: list[Examples]) -> None:
            nonlocal loss_sum, samples, steps
            if len(block) == STEPS_PER_CALL:
                merged = Examples.concatenate(block)
                order = np.arange(len(merged), dtype=np.int32).reshape(len(block), -1)
                total = self._train_chunk[False](
                    *self._as_tensors(merged), tf.constant(order), rate, mu
                )
                loss_sum += float(total)
            else:
                for batch in block:
                    loss = self._train_batch(*self._as_tensors(batch), rate)
                    loss_sum += float(loss) * len(batch)
            samples += sum(len(batch) for batch in block)
            steps += len(block)
            if on_steps is not None:
                on_steps(steps, 0, loss_sum / samples)

        stream = prefetched(batches, prefetch) if prefetch > 0 else iter(batches)
        try:
            for batch in stream:
                _check_examples(self.spec, batch, "training batch")
                if pending and len(batch) != len(pending[0]):
                    run(pending)
                    pending = []
                pending.append(batch)
                if len(pending) == STEPS_PER_CALL:
                    run(pending)
                    pending = []
            if pending:
                run(pending)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if steps == 0:
            raise TrainingError("the batch stream was empty")
        return FitMetrics(samples, steps, loss_sum / samples, time.perf_counter() - started)

    def predict(self, arrays: Mapping[str, np.ndarray], examples: Examples) -> np.ndarray:
        self.set_arrays(arrays)
        return self.predict_current(examples)

    def predict_current(self, examples: Examples) -> np.ndarray:
        """Click probabilities [N] (float32) of the current weights for ``examples``."""
        _check_examples(self.spec, examples, "examples")
        dense, categorical, _ = self._as_tensors(examples)
        parts = [
            self._predict(
                dense[start : start + PREDICT_ROWS_PER_CALL],
                categorical[start : start + PREDICT_ROWS_PER_CALL],
            ).numpy()
            for start in range(0, len(examples), PREDICT_ROWS_PER_CALL)
        ]
        if not parts:
            return np.zeros(0, dtype=WEIGHT_DTYPE)
        return np.concatenate(parts)


_END = object()


def prefetched(items: Iterable, depth: int) -> Iterator:
    """Iterate ``items`` in a background thread, up to ``depth`` ahead of the consumer.

    An exception in the producer is raised in the consumer; closing the generator early
    stops the producer at its next item.
    """
    if depth < 1:
        raise ConfigError(f"prefetch depth must be at least 1, got {depth}")
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer and re-raised
            put(_Failure(exc))

    producer = threading.Thread(target=produce, name="enclaverec-prefetch", daemon=True)
    producer.start()
    try:
        while True:
            item = buffer.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        producer.join()


@dataclass(frozen=True)
class _Failure:
    error: BaseException
