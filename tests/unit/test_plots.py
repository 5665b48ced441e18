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


# --- issue 11 item 13: integer ticks, legends off the points, training loss per round -------


def drawn(figure):
    figure.canvas.draw()  # ticks and legend positions are fixed at drawing time
    return figure


def visible_ticks(axes) -> list[float]:
    low, high = axes.get_xlim()
    return [t for t in axes.get_xticks() if low <= t <= high]


@pytest.mark.parametrize("rounds", [1, 3, 7])
def test_ticks_are_whole_epochs_and_rounds(rounds):
    from enclaverec.plots import training_figure

    history = [
        EvalRecord("round", i, 0.6 + 0.01 * i, 0.6 - 0.01 * i, float(i), train_loss=0.5)
        for i in range(1, rounds + 1)
    ]
    figure = drawn(training_figure(history, title="t", best_index=1))
    for axes in figure.axes:
        ticks = visible_ticks(axes)
        assert ticks, "no tick on the x axis"
        assert all(float(t).is_integer() for t in ticks), ticks
        assert axes.get_xlabel() == "round"


def test_legends_lie_outside_the_axes():
    from enclaverec.plots import training_figure

    history = [
        EvalRecord("epoch", i, 0.6 + 0.02 * i, 0.6 - 0.02 * i, float(i), train_loss=0.55)
        for i in range(1, 6)
    ]
    figure = drawn(
        training_figure(history, title="t", best_index=3, reference_lines={"oracle": 0.8})
    )
    renderer = figure.canvas.get_renderer()
    for axes in figure.axes:
        legend = axes.get_legend()
        assert legend is not None
        box = legend.get_window_extent(renderer)
        plot_area = axes.get_window_extent(renderer)
        assert not box.overlaps(plot_area), (box, plot_area)


def test_federated_curves_show_the_training_loss_per_round():
    from enclaverec.plots import training_figure

    history = [
        EvalRecord("round", 1, 0.70, 0.60, 1.0, train_loss=0.62),
        EvalRecord("round", 2, 0.74, 0.55, 2.0, train_loss=0.51),
    ]
    figure = training_figure(history, title="federated", best_index=2)
    loss_axes = figure.axes[1]
    lines = {line.get_label(): line for line in loss_axes.get_lines()}
    training = [label for label in lines if label.startswith("training loss")]
    assert len(training) == 1
    assert list(lines[training[0]].get_ydata()) == [0.62, 0.51]
    assert list(lines[training[0]].get_xdata()) == [1, 2]
