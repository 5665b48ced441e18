from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from enclaverec.data.schema import Examples, FeatureSpec
from enclaverec.logreg import LogisticRegressionTrainer
from enclaverec.training import FitConfig, Trainer


def planted(n: int, seed: int) -> tuple[FeatureSpec, Examples]:
    rng = np.random.default_rng(seed)
    spec = FeatureSpec(("d0", "d1"), ("C1", "C2"), (20, 30))
    dense = rng.normal(size=(n, 2)).astype(np.float32)
    cats = np.stack([rng.integers(0, 20, n), rng.integers(0, 30, n)], axis=1).astype(np.int32)
    effect1 = rng.normal(size=20)
    effect2 = rng.normal(size=30)
    logit = 1.5 * dense[:, 0] + effect1[cats[:, 0]] + effect2[cats[:, 1]]
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return spec, Examples(dense, cats, labels, np.arange(n, dtype=np.int64))


def test_is_a_trainer_and_learns_the_planted_model():
    spec, rows = planted(4000, 0)
    trainer = LogisticRegressionTrainer(spec, rows)
    assert isinstance(trainer, Trainer)
    start = trainer.initial_arrays()
    before = roc_auc_score(rows.labels, trainer.predict(start, rows))
    arrays, metrics = trainer.fit(start, FitConfig(batch_size=64, learning_rate=0.5, epochs=3))
    after = roc_auc_score(rows.labels, trainer.predict(arrays, rows))
    assert metrics.samples == 3 * 4000 and metrics.steps == 3 * 63
    assert after > before + 0.1 and after > 0.75
    assert set(arrays) == set(start)


def test_a_step_touches_only_the_rows_in_the_batch():
    spec, rows = planted(10, 1)
    trainer = LogisticRegressionTrainer(spec, rows)
    start = trainer.initial_arrays()
    arrays, _ = trainer.fit(start, FitConfig(batch_size=10, learning_rate=0.1, max_steps=1))
    used = np.unique(rows.categorical[:, 0])
    changed = np.flatnonzero(arrays["embedding/C1"][:, 0] != start["embedding/C1"][:, 0])
    assert set(changed) <= set(used) and len(changed) > 0
    assert start["embedding/C1"].sum() == 0  # fit did not modify the caller's arrays


def test_proximal_term_pulls_towards_the_start():
    spec, rows = planted(2000, 2)
    trainer = LogisticRegressionTrainer(spec, rows)
    start = trainer.initial_arrays()
    free, _ = trainer.fit(start, FitConfig(batch_size=32, learning_rate=0.5, epochs=2))
    held, _ = trainer.fit(
        start, FitConfig(batch_size=32, learning_rate=0.5, epochs=2, proximal_mu=1.0)
    )

    def distance(arrays):
        return sum(float(np.sum((arrays[n] - start[n]) ** 2)) for n in start)

    assert distance(held) < 0.8 * distance(free)


def test_same_seed_same_result_and_round_changes_order():
    spec, rows = planted(500, 3)
    trainer = LogisticRegressionTrainer(spec, rows)
    start = trainer.initial_arrays()
    a, _ = trainer.fit(start, FitConfig(batch_size=32, learning_rate=0.1, round_index=1))
    b, _ = trainer.fit(start, FitConfig(batch_size=32, learning_rate=0.1, round_index=1))
    c, _ = trainer.fit(start, FitConfig(batch_size=32, learning_rate=0.1, round_index=2))
    assert all(np.array_equal(a[n], b[n]) for n in a)
    assert not all(np.array_equal(a[n], c[n]) for n in a)


def test_refuses_to_fit_without_rows():
    import pytest

    from enclaverec.errors import TrainingError

    spec, rows = planted(10, 4)
    empty = rows.take(np.array([], dtype=np.int64))
    trainer = LogisticRegressionTrainer(spec, empty)
    with pytest.raises(TrainingError, match="no training rows"):
        trainer.fit(
            trainer.initial_arrays(), FitConfig(batch_size=8, learning_rate=0.1, max_steps=3)
        )
