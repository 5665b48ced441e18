"""The benchmark's data: Zipf ids, and the Criteo file that the end-to-end run reads back."""

from __future__ import annotations

import numpy as np
import pytest

from enclaverec.app.bench_train import (
    NUM_TABLES,
    TABLE_ROWS,
    BenchTrainConfig,
    benchmark_rows,
    write_criteo_file,
    zipf_ids,
)
from enclaverec.data.criteo import CategoryHashing, iter_criteo_examples
from enclaverec.errors import ConfigError


def test_zipf_ids_are_in_range_and_heavy_tailed():
    ids = zipf_ids(np.random.default_rng(0), TABLE_ROWS, (200_000,))
    assert ids.min() >= 0 and ids.max() < TABLE_ROWS
    counts = np.sort(np.bincount(ids, minlength=TABLE_ROWS))[::-1]
    # Zipf(1.2): the top rank's share is 1 / H(100000, 1.2), about 22%; rank 2 is
    # 2^-1.2 of it; many rows are never drawn.
    assert 0.19 < counts[0] / len(ids) < 0.25
    assert counts[1] / counts[0] == pytest.approx(2**-1.2, rel=0.05)
    assert (counts == 0).sum() > TABLE_ROWS // 2


def test_the_criteo_file_reads_back_as_the_same_rows(tmp_path):
    examples, integers = benchmark_rows(300, seed=1)
    path = tmp_path / "bench.tsv"
    write_criteo_file(path, examples, integers, seed=1)
    hashing = CategoryHashing.uniform(NUM_TABLES, TABLE_ROWS)
    (read,) = list(iter_criteo_examples([path], hashing=hashing, batch_size=1000))
    np.testing.assert_array_equal(read.labels, examples.labels)
    np.testing.assert_allclose(read.dense, examples.dense, rtol=1e-6)
    for table in range(NUM_TABLES):
        # The same id always hashes to the same row, and distinct ids (almost always) to
        # distinct rows: the reader sees the same grouping of rows as the model in memory.
        ours, theirs = examples.categorical[:, table], read.categorical[:, table]
        pairs = set(zip(ours.tolist(), theirs.tolist(), strict=True))
        assert len(pairs) == len(set(ours.tolist()))
        assert len(set(theirs.tolist())) >= len(set(ours.tolist())) - 1


def test_the_configuration_refuses_what_cannot_run():
    assert BenchTrainConfig().batch_sizes == (128, 2048)
    with pytest.raises(ConfigError, match="--steps must be at least 1"):
        BenchTrainConfig(steps=0)
    with pytest.raises(ConfigError, match="--batch-sizes must be positive"):
        BenchTrainConfig(batch_sizes=(128, 0))
