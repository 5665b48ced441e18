"""A numpy logistic-regression trainer behind the same interface as the TensorFlow DLRM.

Protocol, fault and security tests of the schemes run parties and workers with it, so they
exercise real training (real SGD steps, sparse per-category weights, a loss that falls)
without paying TensorFlow's start-up. Its weights use the DLRM's naming convention for
tables (``embedding/<feature>``, one weight per row), so sparse updates travel the same way.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from enclaverec.arrays import SparseRows
from enclaverec.data.schema import Examples, FeatureSpec
from enclaverec.dlrm.weights import EMBEDDING_PREFIX
from enclaverec.errors import TrainingError
from enclaverec.gradients import BatchGradients, PulledBatch
from enclaverec.training import Arrays, FitConfig, FitMetrics, StepCallback

_EPSILON = 1e-7


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


class LogisticRegressionTrainer:
    """p(click) = sigmoid(dense . w + sum_f table_f[row_f] + b), trained with plain SGD
    (lazy on the tables: a step touches only the rows in its batch)."""

    def __init__(self, spec: FeatureSpec, train: Examples, *, seed: int = 0) -> None:
        self.spec = spec
        self.train = train
        self.seed = seed

    def table_names(self) -> list[str]:
        return [EMBEDDING_PREFIX + name for name in self.spec.categorical_names]

    def initial_arrays(self) -> Arrays:
        rng = np.random.default_rng(self.seed)
        arrays: Arrays = {
            "linear/kernel": (0.01 * rng.standard_normal(self.spec.num_dense)).astype(np.float32),
            "linear/bias": np.zeros(1, np.float32),
        }
        for name, rows in zip(self.table_names(), self.spec.table_sizes, strict=True):
            arrays[name] = np.zeros((rows, 1), np.float32)
        return arrays

    def _logits(self, arrays: Mapping[str, np.ndarray], examples: Examples) -> np.ndarray:
        logits = examples.dense @ arrays["linear/kernel"] + arrays["linear/bias"][0]
        for column, name in enumerate(self.table_names()):
            logits = logits + arrays[name][examples.categorical[:, column], 0]
        return logits

    def predict(self, arrays: Mapping[str, np.ndarray], examples: Examples) -> np.ndarray:
        return _sigmoid(self._logits(arrays, examples)).astype(np.float32)

    def fit(
        self,
        arrays: Mapping[str, np.ndarray],
        config: FitConfig,
        *,
        on_steps: StepCallback | None = None,
    ) -> tuple[Arrays, FitMetrics]:
        if len(self.train) == 0:
            raise TrainingError("no training rows: nothing to fit")
        started = time.perf_counter()
        weights = {name: np.array(value, np.float32, copy=True) for name, value in arrays.items()}
        start = (
            {name: value.copy() for name, value in weights.items()} if config.proximal_mu else None
        )
        total_steps = config.max_steps or config.epochs * -(-len(self.train) // config.batch_size)
        steps = samples = 0
        loss_sum = 0.0
        rng_seed = [config.seed, config.round_index]
        epoch = 0
        while steps < total_steps:
            shuffle = int(np.random.SeedSequence([*rng_seed, epoch]).generate_state(1)[0])
            for batch in self.train.batches(config.batch_size, shuffle_seed=shuffle):
                probabilities = _sigmoid(self._logits(weights, batch))
                clipped = np.clip(probabilities, _EPSILON, 1 - _EPSILON)
                loss_sum += float(
                    -np.sum(
                        batch.labels * np.log(clipped) + (1 - batch.labels) * np.log(1 - clipped)
                    )
                )
                # d(mean BCE)/d(logit) = (p - y) / B
                error = (probabilities - batch.labels) / len(batch)
                lr = config.learning_rate
                kernel_grad = batch.dense.T @ error
                bias_grad = np.array([error.sum()], np.float32)
                if start is not None:
                    kernel_grad = kernel_grad + config.proximal_mu * (
                        weights["linear/kernel"] - start["linear/kernel"]
                    )
                    bias_grad = bias_grad + config.proximal_mu * (
                        weights["linear/bias"] - start["linear/bias"]
                    )
                weights["linear/kernel"] -= (lr * kernel_grad).astype(np.float32)
                weights["linear/bias"] -= (lr * bias_grad).astype(np.float32)
                for column, name in enumerate(self.table_names()):
                    rows, inverse = np.unique(batch.categorical[:, column], return_inverse=True)
                    grad = np.zeros(len(rows), np.float64)
                    np.add.at(grad, inverse, error)
                    if start is not None:
                        grad += config.proximal_mu * (weights[name][rows, 0] - start[name][rows, 0])
                    weights[name][rows, 0] -= (lr * grad).astype(np.float32)
                steps += 1
                samples += len(batch)
                if on_steps is not None:
                    on_steps(steps, total_steps, loss_sum / samples)
                if steps >= total_steps:
                    break
            epoch += 1
        metrics = FitMetrics(
            samples=samples,
            steps=steps,
            mean_loss=loss_sum / max(samples, 1),
            wall_seconds=time.perf_counter() - started,
        )
        return weights, metrics


class LogisticRegressionGradients:
    """The gradients of the same logistic regression for one distributed step, from pulled
    weights (no optimizer here: the parameter servers apply it). Tables are [rows, 1]."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec

    def table_names(self) -> list[str]:
        return [EMBEDDING_PREFIX + name for name in self.spec.categorical_names]

    def predict(self, arrays: Mapping[str, np.ndarray], examples: Examples) -> np.ndarray:
        """Click probabilities [N] of the model ``arrays`` (validation scores)."""
        return LogisticRegressionTrainer(self.spec, examples).predict(arrays, examples)

    def gradients(self, batch: PulledBatch) -> BatchGradients:
        examples = batch.examples
        kernel, bias = batch.dense["linear/kernel"], batch.dense["linear/bias"]
        logits = examples.dense @ kernel + bias[0]
        for table in batch.tables:
            logits = logits + table.rows[table.inverse, 0]
        probabilities = _sigmoid(logits)
        clipped = np.clip(probabilities, _EPSILON, 1 - _EPSILON)
        labels = examples.labels
        loss_sum = float(-np.sum(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))
        error = (probabilities - labels) / len(examples)  # d(mean BCE)/d(logit)
        tables: dict[str, SparseRows] = {}
        for table in batch.tables:
            summed = np.zeros(len(table.ids), np.float64)
            np.add.at(summed, table.inverse, error)  # repeated ids add up
            tables[table.name] = SparseRows(table.ids, summed.astype(np.float32)[:, None])
        return BatchGradients(
            loss_sum=loss_sum,
            dense={
                "linear/kernel": (examples.dense.T @ error).astype(np.float32),
                "linear/bias": np.array([error.sum()], np.float32),
            },
            tables=tables,
        )
