"""Accuracy per epoch of a training run, from its ``log.csv``, as a PNG.

Each training stage writes ``<model_dir>/<stage>/log.csv`` (Keras'
`CSVLogger`: one row per epoch, appended across resumed runs).
`plot_training_curves` draws the accuracy columns in % (training accuracy
and validation episode accuracy, with its 95 % confidence band when logged)
and the losses, one column of panels per CSV (e.g. pre-training and
meta-training side by side).

`AccuracyPlot` is the Keras callback that re-draws the figure after every
epoch, next to the CSV (``accuracy.png`` in the stage folder). Put it AFTER
the `CSVLogger` in the callback list, so the epoch's row is already
written; without matplotlib it logs one warning and does nothing (figures
are an optional extra; training must not depend on them).
"""

from __future__ import annotations

import csv
import logging
import os
from typing import Optional, Sequence, Union

import keras
import numpy as np

from tf_deepemd.visualization.figures import new_figure, require_matplotlib, save_figure

__all__ = ["AccuracyPlot", "plot_training_curves", "read_csv_log"]

log = logging.getLogger(__name__)

_LABELS = {
    "accuracy": "training accuracy (all-class classifier)",
    "episode_accuracy": "training episode accuracy",
    "val_episode_accuracy": "validation episode accuracy",
    "loss": "training loss",
    "val_loss": "validation loss",
}


def read_csv_log(path: str) -> dict[str, np.ndarray]:
    """Numeric columns of a Keras CSV log, one value per epoch (the last row of a repeated epoch).

    Returns:
      ``{column: float64 [epochs]}`` sorted by the ``epoch`` column (from 1
      in a run's ``log.csv``, `tf_deepemd.training.run_logs.EpochCSVLogger`).

    Raises:
      ValueError: no ``epoch`` column or no rows. OSError: unreadable file.
    """
    with open(path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    if not rows or "epoch" not in rows[0]:
        raise ValueError(f"{path!r} is not a training log with rows and an 'epoch' column.")
    by_epoch = {int(float(row["epoch"])): row for row in rows}  # a resumed run may repeat one
    epochs = sorted(by_epoch)
    columns = {}
    for name in rows[0]:
        try:
            columns[name] = np.array([float(by_epoch[e][name] or "nan") for e in epochs])
        except (TypeError, ValueError):
            continue  # not numeric
    return columns


# Smallest y-ranges of the panels, so that epoch-to-epoch noise does not
# fill the panel: 20 accuracy points, and half the largest loss.
MIN_ACCURACY_SPAN = 20.0
MIN_LOSS_SPAN_FRACTION = 0.5


def readable_limits(series, min_span, bounds=(None, None)):
    """``(low, high)`` y-limits holding every finite value of ``series``, at least ``min_span`` apart.

    Centred on the data, padded by 8 %, kept within ``bounds`` (None: open).
    """
    finite = np.concatenate([np.asarray(v, np.float64)[np.isfinite(v)] for v in series] or [np.zeros(0)])
    if not finite.size:
        return (bounds[0] or 0.0, bounds[1] if bounds[1] is not None else 1.0)
    low, high = float(finite.min()), float(finite.max())
    span = max(high - low, float(min_span), 1e-6)
    centre = (low + high) / 2
    low, high = centre - 0.54 * span, centre + 0.54 * span
    if bounds[0] is not None and low < bounds[0]:  # shifted inside the bounds, same span
        low, high = bounds[0], high + bounds[0] - low
    if bounds[1] is not None and high > bounds[1]:
        low, high = low - (high - bounds[1]), bounds[1]
        if bounds[0] is not None:
            low = max(low, bounds[0])
    return low, high


def _stage_name(path):
    return os.path.basename(os.path.dirname(os.path.abspath(path))).replace("_", "-") or "training"


def plot_training_curves(
    csv_paths: Union[str, Sequence[str]],
    path: Optional[str] = None,
    title: Optional[str] = None,
):
    """Accuracy (%) and loss per epoch of one or more stage logs.

    Args:
      csv_paths: one ``log.csv`` or several (one column of panels each,
        titled by the stage folder's name).
      path: write a PNG there.
      title: figure title.

    Returns:
      The matplotlib `Figure`.
    """
    paths = [csv_paths] if isinstance(csv_paths, (str, os.PathLike)) else list(csv_paths)
    if not paths:
        raise ValueError("`csv_paths` is empty: pass at least one log.csv.")
    logs = [read_csv_log(p) for p in paths]
    figure = new_figure(5.2 * len(paths), 6.4)
    grid = figure.add_gridspec(2, len(paths), height_ratios=(2.0, 1.0))
    for column, (csv_path, values) in enumerate(zip(paths, logs)):
        epochs = values["epoch"]  # from 1 in a run's log.csv
        accuracy_axes = figure.add_subplot(grid[0, column])
        loss_axes = figure.add_subplot(grid[1, column], sharex=accuracy_axes)
        accuracies = [n for n in values if n.endswith("accuracy")]
        shown = [100 * values[name] for name in accuracies]
        for name in accuracies:
            line, = accuracy_axes.plot(epochs, 100 * values[name], marker="o", markersize=3,
                                       label=_LABELS.get(name, name))
            if name + "_ci95" in values:
                low = 100 * (values[name] - values[name + "_ci95"])
                high = 100 * (values[name] + values[name + "_ci95"])
                shown += [low, high]
                accuracy_axes.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2,
                                           label="95 % confidence interval")
            best = int(np.nanargmax(values[name])) if np.isfinite(values[name]).any() else None
            if best is not None and name.startswith("val_"):
                # A marker with its value in the legend: no label to collide with an axis.
                accuracy_axes.plot(epochs[best], 100 * values[name][best], marker="*", markersize=13,
                                   linestyle="none", color=line.get_color(), markeredgecolor="black",
                                   label=f"best: {100 * values[name][best]:.1f} % (epoch {epochs[best]:g})")
        accuracy_axes.set_ylim(*readable_limits(shown, min_span=MIN_ACCURACY_SPAN, bounds=(0.0, 100.0)))
        accuracy_axes.set_ylabel("accuracy (%)")
        accuracy_axes.set_title(f"{_stage_name(csv_path)}: accuracy per epoch", fontsize=10)
        accuracy_axes.grid(alpha=0.3)
        if accuracies:
            accuracy_axes.legend(fontsize=8, loc="best")
        losses = [n for n in values if n.endswith("loss")]
        for name in losses:
            loss_axes.plot(epochs, values[name], marker="o", markersize=3, label=_LABELS.get(name, name))
        if losses:
            loss_values = [values[n] for n in losses]
            top = max(float(np.nanmax(np.abs(v))) if np.isfinite(v).any() else 0.0 for v in loss_values)
            loss_axes.set_ylim(*readable_limits(loss_values, min_span=MIN_LOSS_SPAN_FRACTION * top,
                                                bounds=(0.0, None)))
        loss_axes.set_xlabel("epoch")
        loss_axes.set_ylabel("loss")
        loss_axes.grid(alpha=0.3)
        if losses:
            loss_axes.legend(fontsize=8, loc="upper right")
        if len(epochs) < 12:
            loss_axes.set_xticks(epochs)
    if title:
        figure.suptitle(title)
    if path:
        save_figure(figure, path)
    return figure


class AccuracyPlot(keras.callbacks.Callback):
    """Re-draws ``plot_path`` from the stage's ``csv_path`` after every epoch.

    Args:
      csv_path: the stage's ``log.csv`` (written by a `CSVLogger` earlier in
        the callback list).
      plot_path: PNG to write; default ``accuracy.png`` next to the CSV.
    """

    def __init__(self, csv_path: str, plot_path: Optional[str] = None):
        super().__init__()
        self.csv_path = csv_path
        self.plot_path = plot_path or os.path.join(os.path.dirname(os.path.abspath(csv_path)), "accuracy.png")
        self._disabled = False

    def on_epoch_end(self, epoch, logs=None):
        if self._disabled:
            return
        try:
            require_matplotlib()
        except ImportError as error:
            self._disabled = True
            log.warning("No accuracy plot: %s", error)
            return
        if not os.path.isfile(self.csv_path):
            log.warning("No accuracy plot: %s does not exist (is a CSVLogger before AccuracyPlot?)", self.csv_path)
            return
        try:
            plot_training_curves(self.csv_path, self.plot_path)
        except (OSError, ValueError) as error:  # a plot must never stop training
            log.warning("No accuracy plot for epoch %d: %s", epoch + 1, error)
