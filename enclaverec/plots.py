"""Training-curve figures (PNG) drawn with matplotlib's Agg canvas: no display needed.

The Figure is built directly (not through pyplot), so no global backend or figure state
changes and nothing depends on a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from enclaverec.errors import UsageError
from enclaverec.training import EvalRecord


def plot_training_curves(
    history: Sequence[EvalRecord],
    path: Path,
    *,
    title: str,
    best_index: int | None = None,
    reference_lines: dict[str, float] | None = None,
) -> Path:
    """Draw validation AUC (left) and losses (right) per epoch, round or step to ``path``.

    ``reference_lines`` are horizontal AUC levels to compare with, such as the synthetic
    data set's ``oracle_auc`` and ``baseline_logreg_auc``.
    """
    if not history:
        raise UsageError("no history to plot")
    unit = history[0].unit
    x = [record.index for record in history]
    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    auc_axes, loss_axes = figure.subplots(1, 2)

    auc_axes.plot(x, [r.val_auc for r in history], marker="o", label="validation AUC")
    for label, level in (reference_lines or {}).items():
        auc_axes.axhline(level, linestyle="--", linewidth=1, color="gray")
        auc_axes.annotate(label, (x[0], level), textcoords="offset points", xytext=(2, 3))
    if best_index is not None:
        auc_axes.axvline(best_index, linestyle=":", color="tab:green", label=f"best {unit}")
    auc_axes.set_xlabel(unit)
    auc_axes.set_ylabel("ROC AUC")
    auc_axes.legend(loc="lower right")
    auc_axes.grid(alpha=0.3)

    loss_axes.plot(x, [r.val_logloss for r in history], marker="o", label="validation log loss")
    if all(r.train_loss is not None for r in history):
        loss_axes.plot(x, [r.train_loss for r in history], marker="s", label="training loss (mean)")
    loss_axes.set_xlabel(unit)
    loss_axes.set_ylabel("binary cross-entropy")
    loss_axes.legend(loc="upper right")
    loss_axes.grid(alpha=0.3)

    figure.suptitle(title)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc}") from exc
    return path
