"""A numpy DLRM forward and backward pass, written out by hand, to check the TensorFlow
trainer's steps against (binary cross-entropy, mean over the batch)."""

from __future__ import annotations

import numpy as np

from enclaverec.data.schema import FeatureSpec
from enclaverec.dlrm.config import DLRMConfig


def _mlp_forward(x, arrays, prefix, layers, last_linear):
    cache = []
    for index in range(layers):
        kernel = arrays[f"{prefix}/{index}/kernel"].astype(np.float64)
        bias = arrays[f"{prefix}/{index}/bias"].astype(np.float64)
        z = x @ kernel + bias
        out = z if (last_linear and index == layers - 1) else np.maximum(z, 0.0)
        cache.append((x, z))
        x = out
    return x, cache


def _mlp_backward(grad_out, arrays, prefix, layers, last_linear, cache, grads):
    for index in reversed(range(layers)):
        x, z = cache[index]
        if not (last_linear and index == layers - 1):
            grad_out = grad_out * (z > 0)
        grads[f"{prefix}/{index}/kernel"] = x.T @ grad_out
        grads[f"{prefix}/{index}/bias"] = grad_out.sum(axis=0)
        grad_out = grad_out @ arrays[f"{prefix}/{index}/kernel"].astype(np.float64).T
    return grad_out


def loss_and_gradients(arrays, spec: FeatureSpec, config: DLRMConfig, dense, categorical, labels):
    """Mean BCE loss and the gradient of every weight (float64, dense arrays)."""
    batch = len(labels)
    bottom_layers, top_layers = len(config.bottom_units), len(config.top_units)
    bottom, bottom_cache = _mlp_forward(
        dense.astype(np.float64), arrays, "bottom", bottom_layers, last_linear=False
    )
    tables = [arrays[f"embedding/{name}"].astype(np.float64) for name in spec.categorical_names]
    vectors = [bottom] + [table[categorical[:, f]] for f, table in enumerate(tables)]
    pairs = [(i, j) for i in range(len(vectors)) for j in range(i)]
    products = [np.sum(vectors[i] * vectors[j], axis=1) for i, j in pairs]
    interacted = np.concatenate([bottom, np.stack(products, axis=1)], axis=1)
    logits, top_cache = _mlp_forward(interacted, arrays, "top", top_layers, last_linear=True)
    logits = logits[:, 0]
    probabilities = 1.0 / (1.0 + np.exp(-logits))
    y = labels.astype(np.float64)
    loss = np.mean(np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits))))

    grads: dict[str, np.ndarray] = {}
    grad_logits = ((probabilities - y) / batch)[:, None]
    grad_interacted = _mlp_backward(grad_logits, arrays, "top", top_layers, True, top_cache, grads)
    width = config.embedding_dim
    grad_vectors = [np.zeros_like(v) for v in vectors]
    grad_vectors[0] += grad_interacted[:, :width]
    for column, (i, j) in enumerate(pairs):
        g = grad_interacted[:, width + column][:, None]
        grad_vectors[i] += g * vectors[j]
        grad_vectors[j] += g * vectors[i]
    for f, name in enumerate(spec.categorical_names):
        grad_table = np.zeros_like(tables[f])
        np.add.at(grad_table, categorical[:, f], grad_vectors[f + 1])
        grads[f"embedding/{name}"] = grad_table
    _mlp_backward(grad_vectors[0], arrays, "bottom", bottom_layers, False, bottom_cache, grads)
    return loss, grads
