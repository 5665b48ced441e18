"""The ``synthetic`` data set: Criteo-shaped rows with labels from a planted model.

Rows have 13 integer features (log-normal counts, some negative or missing, then Criteo's
``log(1 + max(x, 0))``) and 26 categorical features with power-law (Zipf) frequencies.
The label of a row is drawn from ``sigmoid(logit)`` where

    logit = bias + sum_f w_f[c_f]                          (per-category effects)
                 + sum_{f<g in I} <v_f[c_f], v_g[c_g]>      (pairwise latent interactions)
                 + sum_{f in I} <B z, v_f[c_f]>              (dense x category interactions)
                 + a . z                                     (linear dense effects)

with ``z`` the standardised dense features and ``I`` the interacting features. A linear
model sees the first and last terms only, so it cannot reach the planted model's own AUC
(``oracle_auc``); DLRM's dot interaction has the shape of the middle terms.

The data are a function of :class:`SyntheticConfig` alone (``generator_seed`` included):
one fixed data set, whichever ``--seed`` the split and the training use. numpy's
``Generator`` (PCG64) draws them; NEP 19 lets numpy change a distribution's algorithm
between releases, so byte-identical rows are promised for one numpy version.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from enclaverec.data.schema import (
    DENSE_DTYPE,
    LABEL_DTYPE,
    ROW_ID_DTYPE,
    SPARSE_DTYPE,
    BuiltinDataSet,
    Examples,
    FeatureSpec,
    SourceRows,
)
from enclaverec.errors import ConfigError

NUM_DENSE = 13
NUM_CATEGORICAL = 26
DENSE_NAMES = tuple(f"I{i}" for i in range(1, NUM_DENSE + 1))
CATEGORICAL_NAMES = tuple(f"C{i}" for i in range(1, NUM_CATEGORICAL + 1))
# C1 is the "user" of the synthetic rows: the largest feature (10,000 ids), never missing,
# with a per-user effect, so that `--partition by-user` has users to keep whole.
USER_FEATURE = "C1"


@dataclass(frozen=True)
class SyntheticConfig:
    """Shape and strength of the synthetic data set. The defaults are the ``synthetic``
    data set; tests use fewer rows."""

    num_rows: int = 150_000
    generator_seed: int = 0
    # Cardinalities 10 .. 10,000 spaced evenly on a log scale, the largest first (C1).
    min_cardinality: int = 10
    max_cardinality: int = 10_000
    zipf_exponent: float = 1.1
    max_missing_rate: float = 0.05
    latent_dim: int = 4
    # Features (0-based) whose latent vectors interact: C16, C18, .., C26, with 158 down to
    # 10 categories. Frequent enough that 120k training rows can learn their latent
    # vectors (measured: a DLRM beats the logistic baseline by ~0.04 AUC); interactions
    # of rare categories would only raise the oracle's AUC, not what a model can learn.
    interacting: tuple[int, ...] = (15, 17, 19, 21, 23, 25)
    main_effect_scale: float = 0.3
    interaction_scale: float = 1.0
    dense_effect_scale: float = 0.3
    positive_rate: float = 0.25

    def __post_init__(self) -> None:
        if self.num_rows < 10:
            raise ConfigError(f"synthetic num_rows must be at least 10, got {self.num_rows}")
        if not 2 <= self.min_cardinality <= self.max_cardinality:
            raise ConfigError("synthetic cardinalities must satisfy 2 <= min <= max")
        if not 0.0 < self.positive_rate < 1.0:
            raise ConfigError("synthetic positive_rate must be in (0, 1)")
        if any(not 0 <= f < NUM_CATEGORICAL for f in self.interacting):
            raise ConfigError("synthetic interacting features must be in 0..25")

    def cardinalities(self) -> tuple[int, ...]:
        exponents = np.linspace(
            np.log10(self.max_cardinality), np.log10(self.min_cardinality), NUM_CATEGORICAL
        )
        return tuple(int(round(10.0**e)) for e in exponents)


@dataclass(frozen=True)
class SyntheticData:
    """The generated rows and the planted model's probability of a positive label."""

    spec: FeatureSpec
    examples: Examples
    probabilities: np.ndarray


def generate(config: SyntheticConfig = SyntheticConfig()) -> SyntheticData:
    """Draw the rows (row ids 0 .. num_rows-1) and their labels."""
    rng = np.random.default_rng(config.generator_seed)
    n = config.num_rows
    cards = config.cardinalities()

    # Categories: Zipf ranks, mapped to ids through a fixed permutation (so frequent ids
    # are scattered over the table); id 0 is the missing value, ids 1..K are categories.
    categorical = np.empty((n, NUM_CATEGORICAL), dtype=SPARSE_DTYPE)
    for f, card in enumerate(cards):
        weights = (np.arange(card) + 1.0) ** -config.zipf_exponent
        ranks = rng.choice(card, size=n, p=weights / weights.sum())
        ids = rng.permutation(card)[ranks] + 1
        missing_rate = 0.0 if f == 0 else rng.uniform(0.0, config.max_missing_rate)
        ids[rng.random(n) < missing_rate] = 0
        categorical[:, f] = ids

    # Integers: log-normal counts; I2 may be negative (as in Criteo); some are missing.
    mu = rng.uniform(0.5, 4.0, NUM_DENSE)
    sigma = rng.uniform(0.5, 1.5, NUM_DENSE)
    counts = np.floor(np.exp(rng.normal(mu, sigma, (n, NUM_DENSE)))) - 1.0
    counts[:, 1] -= rng.integers(0, 3, n)
    counts[rng.random((n, NUM_DENSE)) < rng.uniform(0.0, 0.2, NUM_DENSE)] = 0.0
    dense = np.log1p(np.maximum(counts, 0.0))
    z = (dense - dense.mean(axis=0)) / np.maximum(dense.std(axis=0), 1e-6)

    # The planted model.
    k = config.latent_dim
    pair_count = max(1, len(config.interacting) * (len(config.interacting) - 1) // 2)
    # Scale latent vectors so the pairwise term has variance ~ interaction_scale**2 * k.
    latent_std = (config.interaction_scale**2 / pair_count) ** 0.25
    logit = np.zeros(n)
    for f, card in enumerate(cards):
        # Half the features carry main effects; the rest are noise for the model to ignore.
        if f % 2 == 0 or f in config.interacting:
            effects = rng.normal(0.0, config.main_effect_scale, card + 1)
            logit += effects[categorical[:, f]]
    latent = {
        f: rng.normal(0.0, latent_std, (cards[f] + 1, k))[categorical[:, f]]
        for f in config.interacting
    }
    total = np.zeros((n, k))
    for f in config.interacting:
        total += latent[f]
    # sum_{f<g} <v_f, v_g> = (|sum v|^2 - sum |v|^2) / 2
    logit += 0.5 * ((total**2).sum(axis=1) - sum((v**2).sum(axis=1) for v in latent.values()))
    dense_projection = rng.normal(
        0.0, config.dense_effect_scale / np.sqrt(NUM_DENSE), (NUM_DENSE, k)
    )
    logit += ((z @ dense_projection) * total).sum(axis=1)
    logit += z @ rng.normal(0.0, config.dense_effect_scale, NUM_DENSE)
    logit += _bias_for_rate(logit, config.positive_rate)
    probabilities = 1.0 / (1.0 + np.exp(-logit))
    labels = (rng.random(n) < probabilities).astype(LABEL_DTYPE)

    spec = FeatureSpec(
        dense_names=DENSE_NAMES,
        categorical_names=CATEGORICAL_NAMES,
        table_sizes=tuple(card + 1 for card in cards),
    )
    examples = Examples(
        dense=dense.astype(DENSE_DTYPE),
        categorical=categorical,
        labels=labels,
        row_ids=np.arange(n, dtype=ROW_ID_DTYPE),
    )
    return SyntheticData(spec=spec, examples=examples, probabilities=probabilities)


def _bias_for_rate(logit: np.ndarray, rate: float) -> float:
    """The bias b with mean(sigmoid(logit + b)) == rate (bisection; the mean is monotone)."""
    low, high = -30.0, 30.0
    for _ in range(60):
        mid = (low + high) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(logit + mid)))) < rate:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def load_rows() -> SourceRows:
    """The registry's loader: every row, the generator's settings, the user feature and
    the planted model's probabilities."""
    config = SyntheticConfig()
    generated = generate(config)
    return SourceRows(
        spec=generated.spec,
        examples=generated.examples,
        info={
            "generator": {
                "num_rows": config.num_rows,
                "generator_seed": config.generator_seed,
            },
            "user_feature": USER_FEATURE,
        },
        probabilities=generated.probabilities,
    )


DATASET = BuiltinDataSet(
    name="synthetic",
    summary="Criteo-shaped rows with labels from a planted model (oracle AUC known)",
    load=load_rows,
)
