from __future__ import annotations

import pytest

from enclaverec.errors import UsageError
from enclaverec.plots import plot_training_curves
from enclaverec.training import EvalRecord

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_writes_a_png(tmp_path):
    history = [
        EvalRecord("epoch", 1, 0.70, 0.52, 1.5, train_loss=0.55),
        EvalRecord("epoch", 2, 0.74, 0.50, 3.0, train_loss=0.50),
    ]
    path = plot_training_curves(
        history,
        tmp_path / "out" / "curves.png",
        title="t",
        best_index=2,
        reference_lines={"oracle": 0.8},
    )
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000


def test_refuses_an_empty_history(tmp_path):
    with pytest.raises(UsageError, match="no history"):
        plot_training_curves([], tmp_path / "c.png", title="t")
