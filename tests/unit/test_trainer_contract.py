"""The Trainer contract, run against every implementation: the TensorFlow DLRM and the numpy
logistic regression that protocol tests use in its place."""

from __future__ import annotations

import numpy as np
import pytest

from enclaverec.data.schema import Examples, FeatureSpec
from enclaverec.evaluation import binary_metrics
from enclaverec.training import FitConfig, Trainer

SPEC = FeatureSpec(("d0", "d1"), ("user", "item"), (6, 9))


def learnable_examples(rows: int, seed: int = 0) -> Examples:
    """Labels that depend on the user, the item and the first dense feature."""
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, 6, rows), rng.integers(0, 9, rows)
    dense = rng.normal(size=(rows, 2)).astype(np.float32)
    logit = (users - 2.5) * 0.8 + (items % 3 - 1.0) + dense[:, 0]
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return Examples(
        dense=dense,
        categorical=np.stack([users, items], axis=1).astype(np.int32),
        labels=labels,
        row_ids=np.arange(rows, dtype=np.int64),
    )


def dlrm(train: Examples) -> Trainer:
    from enclaverec.dlrm.config import DLRMConfig, OptimizerKind
    from enclaverec.model.dlrm_trainer import DLRMTrainer, DLRMTrainerConfig

    config = DLRMConfig(embedding_dim=4, bottom_units=(8, 4), top_units=(8, 1))
    return DLRMTrainer(SPEC, DLRMTrainerConfig(config, OptimizerKind.SGD, init_seed=1), train)


def logistic_regression(train: Examples) -> Trainer:
    from enclaverec.logreg import LogisticRegressionTrainer

    return LogisticRegressionTrainer(SPEC, train, seed=1)


@pytest.fixture(params=[dlrm, logistic_regression], ids=["dlrm", "logreg"])
def make(request):
    return request.param


def test_is_a_trainer(make):
    assert isinstance(make(learnable_examples(50)), Trainer)


def test_fit_returns_fresh_arrays_with_the_same_names_and_shapes(make):
    trainer = make(learnable_examples(50))
    start = trainer.initial_arrays()
    snapshot = {name: value.copy() for name, value in start.items()}
    new, _ = trainer.fit(start, FitConfig(batch_size=16, learning_rate=0.1))
    assert list(new) == list(start)
    for name, value in new.items():
        assert value.shape == start[name].shape and value.dtype == np.float32
        assert value is not start[name]
        np.testing.assert_array_equal(start[name], snapshot[name])  # the input is untouched
    assert any(not np.array_equal(new[name], start[name]) for name in new)


def test_fit_counts_epochs_and_max_steps(make):
    trainer = make(learnable_examples(50))
    start = trainer.initial_arrays()
    _, two_epochs = trainer.fit(start, FitConfig(batch_size=16, learning_rate=0.1, epochs=2))
    assert (two_epochs.steps, two_epochs.samples) == (8, 100)
    _, capped = trainer.fit(start, FitConfig(batch_size=16, learning_rate=0.1, max_steps=3))
    assert (capped.steps, capped.samples) == (3, 48)


def test_fit_is_deterministic_by_seed_and_round(make):
    trainer = make(learnable_examples(50))
    start = trainer.initial_arrays()
    config = FitConfig(batch_size=8, learning_rate=0.1, seed=4, round_index=1)
    first, _ = trainer.fit(start, config)
    again, _ = trainer.fit(start, config)
    other, _ = trainer.fit(start, FitConfig(batch_size=8, learning_rate=0.1, seed=4, round_index=2))
    assert all(np.array_equal(first[name], again[name]) for name in first)
    assert not all(np.array_equal(first[name], other[name]) for name in first)


def test_training_lowers_the_loss_and_predicts_probabilities(make):
    train = learnable_examples(2000)
    trainer = make(train)
    start = trainer.initial_arrays()
    trained, _ = trainer.fit(start, FitConfig(batch_size=32, learning_rate=0.1, epochs=5))
    before = binary_metrics(train.labels, trainer.predict(start, train))
    after = binary_metrics(train.labels, trainer.predict(trained, train))
    assert after.logloss < before.logloss - 0.02
    assert after.auc > max(before.auc, 0.5) + 0.1
    probabilities = trainer.predict(trained, train)
    assert probabilities.shape == (len(train),)
    assert ((probabilities > 0) & (probabilities < 1)).all()


def test_the_proximal_term_pulls_towards_the_start(make):
    trainer = make(learnable_examples(200))
    start = trainer.initial_arrays()
    fit = dict(batch_size=16, learning_rate=0.2, epochs=3)
    plain, _ = trainer.fit(start, FitConfig(**fit))
    prox, _ = trainer.fit(start, FitConfig(**fit, proximal_mu=2.0))

    def distance(arrays):
        return sum(float(np.sum((arrays[name] - start[name]) ** 2)) for name in start)

    assert distance(prox) < 0.9 * distance(plain)
