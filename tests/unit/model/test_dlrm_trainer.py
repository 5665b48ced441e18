from __future__ import annotations

import numpy as np
import pytest
from numpy_dlrm import loss_and_gradients
from tiny_model import make_examples

from enclaverec.dlrm.config import OptimizerKind
from enclaverec.errors import ConfigError, TrainingError, WeightMappingError
from enclaverec.model.dlrm_trainer import STEPS_PER_CALL, DLRMTrainer, DLRMTrainerConfig
from enclaverec.model.optimizers import ADAGRAD_EPSILON
from enclaverec.training import FitConfig, Trainer


def make_trainer(spec, config, examples, optimizer=OptimizerKind.SGD, seed=0) -> DLRMTrainer:
    return DLRMTrainer(spec, DLRMTrainerConfig(config, optimizer, init_seed=seed), examples)


def random_arrays(trainer, seed=5):
    rng = np.random.default_rng(seed)
    return {
        name: rng.normal(size=shape).astype(np.float32) for name, shape in trainer.shapes.items()
    }


def full_batch(examples, lr=0.1, steps=1, **kwargs) -> FitConfig:
    return FitConfig(batch_size=len(examples), learning_rate=lr, max_steps=steps, **kwargs)


def test_implements_the_trainer_interface(spec, config, examples):
    assert isinstance(make_trainer(spec, config, examples), Trainer)


def test_weight_mapping_round_trip_is_exact(spec, config, examples):
    trainer = make_trainer(spec, config, examples)
    arrays = random_arrays(trainer)
    trainer.set_arrays(arrays)
    back = trainer.get_arrays()
    assert list(back) == list(trainer.shapes)  # names and order stable
    for name, value in arrays.items():
        assert back[name].dtype == np.float32
        assert back[name].tobytes() == value.tobytes(), name


def test_get_arrays_returns_copies_the_trainer_does_not_touch(spec, config, examples):
    trainer = make_trainer(spec, config, examples)
    before = trainer.get_arrays()
    snapshot = {name: value.copy() for name, value in before.items()}
    trainer.fit(before, full_batch(examples))
    for name in before:
        np.testing.assert_array_equal(before[name], snapshot[name])


def test_initial_arrays_are_the_seeded_reference_init(spec, config, examples):
    trainer = make_trainer(spec, config, examples, seed=9)
    assert trainer.get_arrays().keys() == trainer.initial_arrays().keys()
    for name, value in trainer.initial_arrays().items():
        np.testing.assert_array_equal(trainer.get_arrays()[name], value)


def test_set_arrays_refuses_a_foreign_mapping(spec, config, examples):
    trainer = make_trainer(spec, config, examples)
    arrays = trainer.get_arrays()
    arrays["embedding/item"] = np.zeros((4, 4), np.float32)
    with pytest.raises(WeightMappingError, match="embedding/item: shape"):
        trainer.fit(arrays, full_batch(examples))


def test_sgd_step_equals_a_hand_computed_numpy_step(spec, config, examples):
    trainer = make_trainer(spec, config, examples)
    start = trainer.initial_arrays()
    lr = 0.3
    new, metrics = trainer.fit(start, full_batch(examples, lr=lr))
    loss, grads = loss_and_gradients(
        start, spec, config, examples.dense, examples.categorical, examples.labels
    )
    assert metrics.steps == 1 and metrics.samples == len(examples)
    assert metrics.mean_loss == pytest.approx(loss, rel=1e-5)
    for name, value in start.items():
        expected = value.astype(np.float64) - lr * grads[name]
        np.testing.assert_allclose(new[name], expected, rtol=1e-5, atol=1e-6, err_msg=name)


def test_adagrad_step_equals_the_row_wise_rule(spec, config, examples):
    trainer = make_trainer(spec, config, examples, optimizer=OptimizerKind.ADAGRAD)
    start = trainer.initial_arrays()
    lr = 0.05
    new, _ = trainer.fit(start, full_batch(examples, lr=lr))
    _, grads = loss_and_gradients(
        start, spec, config, examples.dense, examples.categorical, examples.labels
    )
    for name, value in start.items():
        g = grads[name]
        if name.startswith("embedding/"):
            # One accumulator per row: the mean of the row's squared gradient.
            scale = lr / (np.sqrt(np.mean(g * g, axis=1, keepdims=True)) + ADAGRAD_EPSILON)
        else:
            scale = lr / (np.abs(g) + ADAGRAD_EPSILON)
        expected = value - scale * g
        np.testing.assert_allclose(new[name], expected, rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("optimizer", list(OptimizerKind))
def test_untouched_rows_and_their_accumulators_stay_bit_identical(spec, config, optimizer):
    examples = make_examples(32, id_limit=3)  # ids 0..2 only: rows 3.. are never touched
    trainer = make_trainer(spec, config, examples, optimizer=optimizer)
    start = trainer.initial_arrays()
    state_before = (
        trainer.rule.state_arrays()["rows"].copy() if optimizer is OptimizerKind.ADAGRAD else None
    )
    new, _ = trainer.fit(start, FitConfig(batch_size=8, learning_rate=0.1, epochs=2))
    offset = 0
    for f, name in enumerate(spec.categorical_names):
        table = f"embedding/{name}"
        touched = np.unique(examples.categorical[:, f])
        untouched = np.setdiff1d(np.arange(spec.table_sizes[f]), touched)
        assert len(untouched) > 0
        assert new[table][untouched].tobytes() == start[table][untouched].tobytes()
        assert not np.array_equal(new[table][touched], start[table][touched])
        if state_before is not None:
            state_after = trainer.rule.state_arrays()["rows"]
            assert (
                state_after[offset + untouched].tobytes()
                == state_before[offset + untouched].tobytes()
            )
            assert (state_after[offset + touched] > 0).all()
        offset += spec.table_sizes[f]


def test_adagrad_state_stays_in_the_trainer_across_fits(spec, config, examples):
    trainer = make_trainer(spec, config, examples, optimizer=OptimizerKind.ADAGRAD)
    arrays = trainer.initial_arrays()
    arrays, _ = trainer.fit(arrays, full_batch(examples))
    after_one = trainer.rule.state_arrays()["rows"].copy()
    arrays, _ = trainer.fit(arrays, full_batch(examples))
    after_two = trainer.rule.state_arrays()["rows"]
    used = after_one > 0
    assert used.any()
    assert (after_two[used] > after_one[used]).all()
    # The accumulators are never part of the weights that leave the trainer.
    assert not any("adagrad" in name or "accumulator" in name for name in arrays)


def test_a_restarted_optimizer_steps_as_a_new_one(spec, config, examples):
    # A federated party restarts its optimizer every round: the second fit must step
    # exactly as a new trainer's first fit from the same weights, the first fit's
    # accumulators forgotten; without the restart they shrink the step.
    used = make_trainer(spec, config, examples, optimizer=OptimizerKind.ADAGRAD)
    start = used.initial_arrays()
    middle, _ = used.fit(start, full_batch(examples))
    restarted, _ = used.fit(middle, full_batch(examples, restart_optimizer=True))
    fresh = make_trainer(spec, config, examples, optimizer=OptimizerKind.ADAGRAD)
    expected, _ = fresh.fit(middle, full_batch(examples))
    for name in expected:
        np.testing.assert_array_equal(restarted[name], expected[name], err_msg=name)
    for key, value in fresh.rule.state_arrays().items():
        np.testing.assert_array_equal(used.rule.state_arrays()[key], value, err_msg=key)
    continued = make_trainer(spec, config, examples, optimizer=OptimizerKind.ADAGRAD)
    continued.fit(start, full_batch(examples))
    kept, _ = continued.fit(middle, full_batch(examples))
    step = "top/0/bias"
    assert np.abs(kept[step] - middle[step]).sum() < np.abs(expected[step] - middle[step]).sum()


def test_proximal_term_is_zero_at_the_start_and_exact_afterwards(spec, config, examples):
    trainer = make_trainer(spec, config, examples)
    start = trainer.initial_arrays()
    lr, mu = 0.2, 0.5
    one_plain, _ = trainer.fit(start, full_batch(examples, lr=lr))
    one_prox, _ = trainer.fit(start, full_batch(examples, lr=lr, proximal_mu=mu))
    for name in start:  # w = w_start at the first step: the term has no gradient yet
        # (equal up to summation order: the proximal path sums repeated rows first)
        np.testing.assert_allclose(one_prox[name], one_plain[name], rtol=1e-6, atol=1e-7)

    two_prox, _ = trainer.fit(start, full_batch(examples, lr=lr, steps=2, proximal_mu=mu))
    _, grads_1 = loss_and_gradients(
        start, spec, config, examples.dense, examples.categorical, examples.labels
    )
    w1 = {n: v.astype(np.float64) - lr * grads_1[n] for n, v in start.items()}
    _, grads_2 = loss_and_gradients(
        w1, spec, config, examples.dense, examples.categorical, examples.labels
    )
    for f, feature in enumerate(spec.categorical_names):
        name = f"embedding/{feature}"
        touched = np.zeros(spec.table_sizes[f], bool)
        touched[examples.categorical[:, f]] = True
        # The term covers the rows the batch touches only.
        grads_2[name][touched] += mu * (w1[name][touched] - start[name][touched])
    for name in start:
        if not name.startswith("embedding/"):
            grads_2[name] = grads_2[name] + mu * (w1[name] - start[name])
        expected = w1[name] - lr * grads_2[name]
        np.testing.assert_allclose(two_prox[name], expected, rtol=1e-4, atol=1e-6, err_msg=name)


def test_proximal_term_pulls_towards_the_start_weights(spec, config, examples):
    trainer = make_trainer(spec, config, examples)
    start = trainer.initial_arrays()
    fit = dict(batch_size=16, learning_rate=0.2, epochs=3, seed=1)
    plain, _ = trainer.fit(start, FitConfig(**fit))
    prox, _ = trainer.fit(start, FitConfig(**fit, proximal_mu=2.0))

    def distance(arrays, prefix):
        return sum(
            float(np.sum((arrays[n] - start[n]) ** 2)) for n in start if n.startswith(prefix)
        )

    for prefix in ("bottom/", "embedding/", "top/"):
        assert distance(prox, prefix) < 0.9 * distance(plain, prefix), prefix


def test_fit_is_deterministic_by_seed_and_round(spec, config, examples):
    trainer = make_trainer(spec, config, examples)
    start = trainer.initial_arrays()
    a, _ = trainer.fit(start, FitConfig(batch_size=8, learning_rate=0.1, seed=1, round_index=2))
    b, _ = trainer.fit(start, FitConfig(batch_size=8, learning_rate=0.1, seed=1, round_index=2))
    c, _ = trainer.fit(start, FitConfig(batch_size=8, learning_rate=0.1, seed=1, round_index=3))
    assert all(np.array_equal(a[n], b[n]) for n in a)
    assert not all(np.array_equal(a[n], c[n]) for n in a)


def test_epochs_and_max_steps_count_steps_and_samples(spec, config):
    examples = make_examples(50)
    trainer = make_trainer(spec, config, examples)
    start = trainer.initial_arrays()
    _, two_epochs = trainer.fit(start, FitConfig(batch_size=16, learning_rate=0.1, epochs=2))
    assert (two_epochs.steps, two_epochs.samples) == (8, 100)  # 3 full + 1 short, twice
    _, capped = trainer.fit(start, FitConfig(batch_size=16, learning_rate=0.1, max_steps=6))
    assert (capped.steps, capped.samples) == (6, 16 * 3 + 2 + 16 * 2)
    assert capped.wall_seconds > 0 and np.isfinite(capped.mean_loss)


def test_progress_callback_reaches_the_total(spec, config, examples):
    trainer = make_trainer(spec, config, examples)
    calls = []
    trainer.fit(
        trainer.initial_arrays(),
        FitConfig(batch_size=4, learning_rate=0.1),
        on_steps=lambda done, total, loss: calls.append((done, total)),
    )
    assert calls and calls[-1] == (16, 16)


def test_predict_gives_probabilities_for_the_given_arrays(spec, config, examples):
    trainer = make_trainer(spec, config, examples)
    start = trainer.initial_arrays()
    trained, _ = trainer.fit(start, full_batch(examples, steps=3))
    p_start = trainer.predict(start, examples)
    p_trained = trainer.predict(trained, examples)
    assert p_start.shape == (len(examples),)
    assert ((p_start > 0) & (p_start < 1)).all()
    assert not np.allclose(p_start, p_trained)
    np.testing.assert_array_equal(trainer.predict(start, examples), p_start)


def test_refuses_row_ids_outside_the_tables(spec, config, examples):
    bad = make_examples(4)
    bad.categorical[0, 1] = spec.table_sizes[1]
    with pytest.raises(ConfigError, match="outside its embedding table"):
        make_trainer(spec, config, bad)
    trainer = make_trainer(spec, config, examples)
    with pytest.raises(ConfigError, match="outside its embedding table"):
        trainer.predict(trainer.initial_arrays(), bad)


def test_refuses_examples_of_another_shape(spec, config, examples):
    trainer = make_trainer(spec, config, examples)
    other = make_examples(4)
    narrow = type(other)(other.dense[:, :2], other.categorical, other.labels, other.row_ids)
    with pytest.raises(ConfigError, match="dense features have shape"):
        trainer.predict(trainer.initial_arrays(), narrow)


def test_a_trainer_without_data_can_predict_but_not_fit(spec, config, examples):
    trainer = DLRMTrainer(spec, DLRMTrainerConfig(config, OptimizerKind.SGD))
    assert trainer.predict(trainer.initial_arrays(), examples).shape == (len(examples),)
    with pytest.raises(TrainingError, match="no training data"):
        trainer.fit(trainer.initial_arrays(), full_batch(examples))


def test_train_batches_streams_one_step_per_batch(spec, config, examples):
    trainer = make_trainer(spec, config, None)
    start = trainer.get_arrays()
    metrics = trainer.train_batches(examples.batches(16), learning_rate=0.1)
    assert (metrics.steps, metrics.samples) == (4, 64)
    assert not np.array_equal(trainer.get_arrays()["top/0/kernel"], start["top/0/kernel"])
    with pytest.raises(TrainingError, match="empty"):
        trainer.train_batches([], learning_rate=0.1)


def test_streamed_blocks_equal_single_steps(spec, config):
    # One block of STEPS_PER_CALL batches (one compiled call), then two single steps and
    # a short one; the result must be that of as many separate steps.
    examples = make_examples(16 * (STEPS_PER_CALL + 2) + 5)
    batches = list(examples.batches(16))
    blocked = make_trainer(spec, config, None)
    single = make_trainer(spec, config, None)
    metrics = blocked.train_batches(batches, learning_rate=0.1, prefetch=0)
    for batch in batches:
        single.train_batches([batch], learning_rate=0.1, prefetch=0)
    assert (metrics.steps, metrics.samples) == (STEPS_PER_CALL + 3, len(examples))
    expected = single.get_arrays()
    for name, value in blocked.get_arrays().items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_train_batches_raises_the_readers_error(spec, config, examples):
    trainer = make_trainer(spec, config, None)

    def failing():
        yield examples
        raise ConfigError("bad line 2")

    with pytest.raises(ConfigError, match="bad line 2"):
        trainer.train_batches(failing(), learning_rate=0.1, prefetch=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch size"),
        ({"learning_rate": -1.0}, "learning rate"),
        ({"learning_rate": float("nan")}, "learning rate"),
        ({"epochs": 0}, "epochs"),
        ({"max_steps": 0}, "max_steps"),
        ({"proximal_mu": -0.1}, "proximal_mu"),
        ({"round_index": -1}, "round_index"),
    ],
)
def test_fit_config_refuses_bad_values(kwargs, message):
    values = {"batch_size": 8, "learning_rate": 0.1, **kwargs}
    with pytest.raises(ConfigError, match=message):
        FitConfig(**values)


@pytest.mark.parametrize("optimizer", list(OptimizerKind))
def test_the_xla_compiled_step_matches_and_stays_sparse(spec, config, optimizer):
    examples = make_examples(64, id_limit=3)
    plain = make_trainer(spec, config, examples, optimizer=optimizer)
    xla = DLRMTrainer(spec, DLRMTrainerConfig(config, optimizer, jit_compile=True), examples)
    start = plain.initial_arrays()
    fit = FitConfig(batch_size=16, learning_rate=0.1, epochs=2, proximal_mu=0.5)
    expected, _ = plain.fit(start, fit)
    got, _ = xla.fit(start, fit)
    for name in start:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6)
        if name.startswith("embedding/"):
            # Rows 3.. are never touched, with or without XLA.
            assert got[name][3:].tobytes() == start[name][3:].tobytes()
