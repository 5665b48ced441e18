"""``bench train``'s flags."""

from __future__ import annotations

import pytest

from enclaverec.cli.bench_train import _batch_sizes
from enclaverec.errors import ConfigError


@pytest.mark.parametrize("text", ["", "128,x", "0", ",,"])
def test_bad_batch_sizes_are_refused(text):
    with pytest.raises(ConfigError, match="batch-sizes"):
        _batch_sizes(text)


def test_batch_sizes_parse():
    assert _batch_sizes("128, 2048") == (128, 2048)
