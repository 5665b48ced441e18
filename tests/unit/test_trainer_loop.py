"""The centralized loop and its shared pieces, driven by a scripted trainer (no TensorFlow)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from enclaverec.data.schema import Examples
from enclaverec.errors import ConfigError, TrainingError
from enclaverec.training import (
    BestTracker,
    CentralizedConfig,
    EvalRecord,
    FitConfig,
    FitMetrics,
    TrainingObserver,
    train_centralized,
)

LABELS = np.array([0, 1, 0, 1, 0, 1, 0, 1], dtype=np.float32)
VALIDATION = Examples(
    dense=np.zeros((8, 1), np.float32),
    categorical=np.zeros((8, 1), np.int32),
    labels=LABELS,
    row_ids=np.arange(8, dtype=np.int64),
)


def scores_with_auc(correct_pairs: int) -> np.ndarray:
    """Scores whose AUC on LABELS is correct_pairs / 16 (4 positives x 4 negatives)."""
    positives = np.full(4, 0.5)
    negatives = np.full(4, 0.9)
    # Put the first k negatives below every positive: each adds 4 correctly ordered pairs.
    negatives[: correct_pairs // 4] = 0.1
    scores = np.empty(8)
    scores[LABELS == 1] = positives
    scores[LABELS == 0] = negatives
    return scores


class ScriptedTrainer:
    """The model is the epoch counter; its validation AUC follows ``aucs`` (in sixteenths)."""

    def __init__(self, aucs: list[int], loss: float = 0.5):
        self.aucs = aucs
        self.loss = loss
        self.fit_configs: list[FitConfig] = []

    def initial_arrays(self):
        return {"epoch": np.zeros(1, np.float32)}

    def fit(self, arrays, config, *, on_steps=None):
        self.fit_configs.append(config)
        if on_steps is not None:
            on_steps(1, 1, self.loss)
        return {"epoch": arrays["epoch"] + 1}, FitMetrics(
            samples=100, steps=1, mean_loss=self.loss, wall_seconds=0.01
        )

    def predict(self, arrays, examples):
        return scores_with_auc(self.aucs[int(arrays["epoch"][0]) - 1])


def run(aucs, epochs, patience, **kwargs):
    trainer = ScriptedTrainer(aucs, **kwargs)
    config = CentralizedConfig(
        epochs=epochs, patience=patience, batch_size=4, learning_rate=0.1, seed=7
    )
    return trainer, train_centralized(trainer, VALIDATION, config)


def test_keeps_the_best_epoch_and_stops_after_patience():
    trainer, outcome = run([8, 12, 4, 16, 8, 4, 4, 16], epochs=8, patience=2)
    assert outcome.best_index == 4
    assert outcome.best_arrays["epoch"][0] == 4  # the weights after epoch 4, not the last
    assert [record.index for record in outcome.history] == [1, 2, 3, 4, 5, 6]
    assert outcome.stopped_early
    assert outcome.history[3].val_auc == pytest.approx(1.0)
    assert outcome.history[0].val_auc == pytest.approx(0.5)


def test_without_patience_runs_every_epoch_and_still_keeps_the_best():
    _, outcome = run([8, 12, 4, 4, 4], epochs=5, patience=None)
    assert len(outcome.history) == 5 and not outcome.stopped_early
    assert outcome.best_index == 2


def test_each_epoch_gets_its_own_shuffle_and_the_run_seed():
    trainer, _ = run([4, 8, 12], epochs=3, patience=None)
    assert [c.round_index for c in trainer.fit_configs] == [0, 1, 2]
    assert {c.seed for c in trainer.fit_configs} == {7}
    assert {c.epochs for c in trainer.fit_configs} == {1}


def test_counts_training_samples_and_time():
    _, outcome = run([4, 8], epochs=2, patience=None)
    assert outcome.train_samples == 200
    assert outcome.train_seconds > 0
    assert outcome.train_samples_per_second == pytest.approx(200 / outcome.train_seconds)
    assert outcome.history[1].wall_seconds >= outcome.history[0].wall_seconds


def test_a_diverged_loss_stops_training():
    with pytest.raises(TrainingError, match="diverged"):
        run([8], epochs=1, patience=None, loss=float("nan"))


def test_observer_sees_every_phase():
    seen = []

    class Recorder(TrainingObserver):
        def phase_started(self, unit, index, last):
            seen.append(("start", unit, index, last))

        def steps_done(self, done, total, mean_loss):
            seen.append(("steps", done, total))

        def evaluated(self, record, improved):
            seen.append(("eval", record.index, improved))

    trainer = ScriptedTrainer([8, 4])
    config = CentralizedConfig(epochs=2, patience=None, batch_size=4, learning_rate=0.1)
    train_centralized(trainer, VALIDATION, config, observer=Recorder())
    assert seen == [
        ("start", "epoch", 1, 2),
        ("steps", 1, 1),
        ("eval", 1, True),
        ("start", "epoch", 2, 2),
        ("steps", 1, 1),
        ("eval", 2, False),
    ]


def test_best_tracker_copies_the_best_arrays_and_keeps_the_earlier_of_a_tie():
    tracker = BestTracker(patience=None)
    arrays = {"w": np.ones(2, np.float32)}
    assert tracker.offer(1, 0.7, arrays)
    arrays["w"][:] = 5.0  # a caller updating in place must not change the kept copy
    assert not tracker.offer(2, 0.7, arrays)
    assert tracker.best_index == 1
    np.testing.assert_array_equal(tracker.best_arrays["w"], [1.0, 1.0])
    assert not tracker.should_stop


def test_history_entry_uses_its_unit_as_key():
    record = EvalRecord(unit="round", index=3, val_auc=0.7, val_logloss=0.5, wall_seconds=2.0)
    assert record.to_dict() == {"round": 3, "val_auc": 0.7, "val_logloss": 0.5, "wall_seconds": 2.0}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"patience": 0}, "patience"),
        ({"batch_size": 0}, "batch size"),
        ({"learning_rate": 0.0}, "learning rate"),
    ],
)
def test_centralized_config_refuses_bad_values(kwargs, message):
    values = {"epochs": 2, "patience": 1, "batch_size": 4, "learning_rate": 0.1, **kwargs}
    with pytest.raises(ConfigError, match=message):
        CentralizedConfig(**values)


def test_the_interface_modules_import_no_tensorflow():
    import subprocess

    code = (
        "import sys; import enclaverec.training, enclaverec.evaluation, enclaverec.report, "
        "enclaverec.plots, enclaverec.dlrm.config, enclaverec.dlrm.weights; "
        "print(any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
