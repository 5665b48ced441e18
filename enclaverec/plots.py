"""Training-curve figures (PNG) drawn with matplotlib's Agg canvas: no display needed.

The Figure is built directly (not through pyplot), so no global backend or figure state
changes and nothing depends on a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

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
    figure = training_figure(
        history, title=title, best_index=best_index, reference_lines=reference_lines
    )
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc}") from exc
    return path


def training_figure(
    history: Sequence[EvalRecord],
    *,
    title: str,
    best_index: int | None = None,
    reference_lines: dict[str, float] | None = None,
) -> Figure:
    """The figure :func:`plot_training_curves` saves (tests inspect its axes)."""
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
    auc_axes.set_ylabel("ROC AUC")

    loss_axes.plot(x, [r.val_logloss for r in history], marker="o", label="validation log loss")
    # A resumed federation's rounds before the restart may lack it: plot what there is.
    trained = [r for r in history if r.train_loss is not None]
    if trained:
        loss_axes.plot(
            [r.index for r in trained],
            [r.train_loss for r in trained],
            marker="s",
            label=f"training loss ({unit} mean)",
        )
    loss_axes.set_ylabel("binary cross-entropy")

    for axes in (auc_axes, loss_axes):
        axes.set_xlabel(unit)
        # Epochs and rounds are whole numbers: no 0.96-1.04 around a single epoch.
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(x) == 1:  # one epoch: its tick alone, centred
            axes.set_xlim(x[0] - 1, x[0] + 1)
            axes.set_xticks([x[0]])
        axes.grid(alpha=0.3)
        # Below the axes, outside them: a legend never covers a point.
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=2, frameon=False)

    figure.suptitle(title)
    return figure
