"""Figures of a gin-configured training run (``tools/visualize.py``).

The model is rebuilt and its weights loaded as ``tools/eval.py`` /
``tools/export.py`` do (`tf_deepemd.training.run_settings`); the episode comes
from the run's dataset (``run_experiment.dataset``, ``data_dir``,
``dataset_options``, ``test_split``, ``way``, ``shot``, ``query``,
``image_size``), and the training curves from the stage logs in the model
dir. gin must be parsed before calling `visualize_run`.
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

import numpy as np

from tf_deepemd.data.registry import load_split
from tf_deepemd.run_folder import TRAINING_STAGES, StageFiles
from tf_deepemd.training.launch import configuration_checks
from tf_deepemd.training.run_settings import restore_run_model, run_settings
from tf_deepemd.visualization.episode import plot_episode, predict_episode, sample_episode
from tf_deepemd.visualization.matching import match_images, plot_matching
from tf_deepemd.visualization.training_curves import plot_training_curves

log = logging.getLogger(__name__)

FIGURES = ("matching", "episode", "accuracy")


def stage_logs(model_dir: Optional[str]) -> list[str]:
    """The ``log.csv`` files of the run's training stages that exist, in stage order."""
    if not model_dir:
        return []
    paths = [StageFiles(model_dir, stage).log_csv for stage in TRAINING_STAGES]
    return [path for path in paths if os.path.isfile(path)]


def visualize_run(
    output_dir: str,
    model_dir: Optional[str] = None,
    *,
    figures: Optional[Sequence[str]] = None,
    weights: Optional[str] = None,
    split: Optional[str] = None,
    way: Optional[int] = None,
    shot: Optional[int] = None,
    query: int = 3,
    seed: int = 0,
    query_index: int = 0,
    support_index: Optional[int] = None,
    node_weights: Optional[str] = None,
    num_flows: int = 10,
    csv_paths: Optional[Sequence[str]] = None,
) -> dict[str, str]:
    """Writes ``matching.png``, ``episode.png`` and ``accuracy.png`` into ``output_dir``.

    Args:
      output_dir: folder of the PNG files (created).
      model_dir: the run's folder (default ``run_experiment.model_dir``).
      figures: any of ``FIGURES``; default all, skipping ``'accuracy'`` when
        the run has no training log (asked for explicitly, that is an error).
      weights: draw with this ``.weights.h5`` instead of the run's best.
      split, way, shot: the episode (default: the run's test split, way
        and shot).
      query: queries per class (3: a readable grid).
      seed: which episode.
      query_index: the episode query of the matching figure.
      support_index: its support image (default: the first one of the
        query's true class).
      node_weights: matching weights (default: the model head's).
      num_flows: flow lines in the matching figure.
      csv_paths: training logs to plot (default: the run's stage logs).

    Returns:
      ``{figure name: PNG path}``.

    Raises:
      ValueError: naming the bad argument or setting.
    """
    with configuration_checks():
        explicit = figures is not None
        figures = tuple(FIGURES if figures is None else figures)
        unknown = [name for name in figures if name not in FIGURES]
        if unknown or not figures:
            raise ValueError(f"`figures` must be names from {FIGURES}, got {figures}.")
        run = run_settings(model_dir)
        logs = []
        if "accuracy" in figures:
            logs = list(csv_paths) if csv_paths else stage_logs(run.model_dir)
            missing = [path for path in logs if not os.path.isfile(path)]
            if missing:
                raise ValueError(f"`csv_paths`: no such file(s) {missing}.")
            if not logs and explicit:
                raise ValueError(
                    f"No training log in {run.model_dir!r} (<stage>/log.csv): train first, or pass csv_paths."
                )
        episode = None
        if "matching" in figures or "episode" in figures:
            if not run.dataset:
                raise ValueError("No dataset: bind run_experiment.dataset (the run's gin files do).")
            way, shot, query = int(way or run.way), int(shot or run.shot), int(query)
            if "matching" in figures:
                check_index("query_index", query_index, way * query)
                if support_index is not None:
                    check_index("support_index", support_index, way * shot)
            images = load_split(run.dataset, split or run.test_split, run.data_dir, **run.dataset_options)
            episode = sample_episode(images, way, shot, query, run.image_size, seed)
            model, trained = restore_run_model(run, weights)
    if "accuracy" in figures and not logs:  # warned once the configuration is known to work
        log.warning("No training log in %r: accuracy.png not written.", run.model_dir)

    written = {}
    if logs:
        written["accuracy"] = os.path.join(output_dir, "accuracy.png")
        plot_training_curves(logs, written["accuracy"], title=f"Training of {run.model_dir or 'the run'}")
    if episode is not None:
        note = "" if trained else " (UNTRAINED model)"
        predicted = predict_episode(model, episode).argmax(-1)
        names = [name.replace("_", " ") for name in episode.class_names]
        if "episode" in figures:
            written["episode"] = os.path.join(output_dir, "episode.png")
            correct = predicted == episode.query_labels
            plot_episode(
                episode, predicted, path=written["episode"],
                title=(f"{way}-way {shot}-shot {run.dataset} episode: {int(correct.sum())}/{len(correct)} "
                       f"queries correct ({100 * correct.mean():.0f} %){note}"),
            )
        if "matching" in figures:
            true_class = int(episode.query_labels[query_index])
            if support_index is None:
                support_index = int(np.flatnonzero(episode.support_labels == true_class)[0])
            support_class = int(episode.support_labels[support_index])
            match = match_images(
                model, episode.query_images[query_index], episode.support_images[support_index], node_weights
            )
            written["matching"] = os.path.join(output_dir, "matching.png")
            plot_matching(
                episode.query_display[query_index], episode.support_display[support_index], match,
                num_flows=num_flows,
                query_title=f"query: {names[true_class]} (predicted: {names[predicted[query_index]]})",
                support_title=f"support: {names[support_class]}",
                title=(f"DeepEMD matching, {match.node_weights.replace('_', '-')} weights: score "
                       f"{match.score:.3f} (flow-weighted mean cosine){note}"),
                path=written["matching"],
            )
    return written


def check_index(name, index, size):
    if not 0 <= int(index) < size:
        raise ValueError(f"`{name}` must be in [0, {size}), got {index}.")
