"""The logistic-regression baseline (scikit-learn) that a DLRM must beat on a data set.

Features: one-hot embedding rows (one column per row of every table, so a hashed or
id-mapped category is exactly one column) plus the dense features standardised with the
training split's mean and deviation. The L2 strength ``C`` is chosen by validation AUC
on a fixed grid; the test AUC of that model is the baseline.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from enclaverec.data.schema import DataSet, Examples, FeatureSpec
from enclaverec.errors import TrainingError

C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
MAX_ITERATIONS = 300


def design_matrix(
    examples: Examples, spec: FeatureSpec, mean: np.ndarray, scale: np.ndarray
) -> sparse.csr_matrix:
    """[N, sum(table_sizes) + num_dense]: one-hot categories, then standardised dense."""
    n = len(examples)
    offsets = np.concatenate(([0], np.cumsum(spec.table_sizes)[:-1])).astype(np.int64)
    columns = (examples.categorical.astype(np.int64) + offsets).ravel()
    rows = np.repeat(np.arange(n), spec.num_categorical)
    one_hot = sparse.csr_matrix(
        (np.ones(len(columns), dtype=np.float64), (rows, columns)),
        shape=(n, int(sum(spec.table_sizes))),
    )
    dense = (examples.dense.astype(np.float64) - mean) / scale
    return sparse.hstack([one_hot, sparse.csr_matrix(dense)], format="csr")


def baseline_logreg_auc(dataset: DataSet, *, seed: int) -> float:
    """Test ROC AUC of L2 logistic regression, ``C`` chosen on validation AUC.

    Raises:
        TrainingError: a split is empty or has one class only (AUC is undefined).
    """
    for name, split in (
        ("train", dataset.train),
        ("validation", dataset.validation),
        ("test", dataset.test),
    ):
        if len(np.unique(split.labels)) < 2:
            raise TrainingError(
                f"logistic baseline: the {name} split of {dataset.name} needs both labels"
            )
    mean = dataset.train.dense.astype(np.float64).mean(axis=0)
    scale = np.maximum(dataset.train.dense.astype(np.float64).std(axis=0), 1e-6)
    x_train, x_val, x_test = (
        design_matrix(split, dataset.spec, mean, scale)
        for split in (dataset.train, dataset.validation, dataset.test)
    )
    # Ascending C with warm starts; the validation AUC over C is unimodal in practice, so
    # stop at the first drop (the larger C values are also the slow ones to fit).
    model = LogisticRegression(max_iter=MAX_ITERATIONS, warm_start=True, random_state=seed)
    best_auc, best_coef, best_intercept = -1.0, None, None
    for c in C_GRID:
        model.set_params(C=c)
        with warnings.catch_warnings():
            # A grid point that stops at max_iter is still a valid (regularised) candidate.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x_train, dataset.train.labels)
        val_auc = float(roc_auc_score(dataset.validation.labels, model.decision_function(x_val)))
        if val_auc <= best_auc:
            break
        best_auc, best_coef, best_intercept = val_auc, model.coef_.copy(), model.intercept_.copy()
    scores = x_test @ best_coef.ravel() + best_intercept[0]
    return float(roc_auc_score(dataset.test.labels, scores))
