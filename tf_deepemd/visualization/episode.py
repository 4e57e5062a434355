"""Pictures of one few-shot episode: query images with predicted and true classes.

`sample_episode` draws an episode from a split (`tf_deepemd.data.
sample_episodes`, the episode sampler of the pipelines) and keeps, beside
the preprocessed model inputs, the display images and the class names;
`predict_episode` runs the model; `plot_episode` draws the support images
(one per class) above a grid of the queries, each titled with its predicted
and true class and framed green (correct) or red (wrong).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

from tf_deepemd.data.image_split import ImageSplit
from tf_deepemd.data.preprocessing import decode_image_file, normalize, resize_center_crop
from tf_deepemd.data.sampling import EpisodeShape, sample_episodes
from tf_deepemd.visualization.figures import as_display_image, new_figure, save_figure

__all__ = ["EpisodeImages", "plot_episode", "predict_episode", "sample_episode"]

CORRECT, WRONG = "#1a9850", "#d73027"


@dataclasses.dataclass(frozen=True)
class EpisodeImages:
    """One episode, as model input and for display (S support, Q query images).

    Attributes:
      support_images: float32 ``[S, H, W, 3]`` preprocessed (model input).
      support_labels: int32 ``[S]`` in ``[0, way)``.
      query_images: float32 ``[Q, H, W, 3]``.
      query_labels: int32 ``[Q]``.
      support_display, query_display: uint8 ``[S|Q, H, W, 3]``, the same
        crops before normalisation.
      class_names: ``[way]`` name of each episode class.
    """

    support_images: np.ndarray
    support_labels: np.ndarray
    query_images: np.ndarray
    query_labels: np.ndarray
    support_display: np.ndarray
    query_display: np.ndarray
    class_names: tuple

    @property
    def way(self) -> int:
        return len(self.class_names)


def sample_episode(split: ImageSplit, way: int, shot: int, query: int, image_size: int, seed: int = 0) -> EpisodeImages:
    """Draws one evaluation episode (resize + centre crop, no augmentation).

    Raises:
      ValueError: the split has fewer than ``way`` classes or a class fewer
        than ``shot + query`` images (`sample_episodes`' messages).
    """
    shape = EpisodeShape(int(way), int(shot), int(query))
    classes, image_indices = sample_episodes(split.indices_by_class(), shape, 1, int(seed))
    indices = image_indices[0]
    display, model_input = [], []
    for index in indices:
        raw = split.images[index] if split.in_memory else decode_image_file(tf.constant(split.paths[index]))
        crop = resize_center_crop(tf.convert_to_tensor(raw), int(image_size))
        display.append(np.clip(np.round(crop.numpy()), 0, 255).astype(np.uint8))
        model_input.append(normalize(crop, split.normalization).numpy())
    display, model_input = np.stack(display), np.stack(model_input)
    # Interleaved layout: position p holds class p % way (`tf_deepemd.data.sampling`).
    labels = (np.arange(len(indices)) % shape.way).astype(np.int32)
    support = slice(0, shape.num_support)
    queries = slice(shape.num_support, None)
    return EpisodeImages(
        support_images=model_input[support],
        support_labels=labels[support],
        query_images=model_input[queries],
        query_labels=labels[queries],
        support_display=display[support],
        query_display=display[queries],
        class_names=tuple(split.class_names[c] for c in classes[0]),
    )


def predict_episode(model, episode: EpisodeImages) -> np.ndarray:
    """The model's logits ``[Q, way]`` for the episode's queries (inference mode)."""
    logits = model(
        (tf.constant(episode.support_images), tf.constant(episode.support_labels), tf.constant(episode.query_images)),
        training=False,
    )
    return np.asarray(logits)


def plot_episode(
    episode: EpisodeImages,
    predicted,
    *,
    max_queries: Optional[int] = None,
    columns: Optional[int] = None,
    title: Optional[str] = None,
    path: Optional[str] = None,
):
    """Support images per class, then the queries with predicted / true classes.

    Args:
      episode: from `sample_episode`.
      predicted: int ``[Q]`` predicted labels (or float ``[Q, way]`` logits).
      max_queries: draw at most this many queries (default all).
      columns: grid width (default: ``way``).
      title: figure title (default: the episode and its accuracy).
      path: write a PNG there.

    Returns:
      The matplotlib `Figure`.
    """
    from matplotlib.patches import Patch

    predicted = np.asarray(predicted)
    if predicted.ndim == 2:
        predicted = predicted.argmax(-1)
    num_queries = len(episode.query_labels)
    if predicted.shape != (num_queries,):
        raise ValueError(f"`predicted` must have shape [{num_queries}] or [{num_queries}, way], got {predicted.shape}.")
    correct = predicted == episode.query_labels
    shown = num_queries if max_queries is None else min(int(max_queries), num_queries)
    if shown < 1:
        raise ValueError(f"`max_queries` must be >= 1, got {max_queries}.")
    way = episode.way
    columns = int(columns or way)
    query_rows = -(-shown // columns)
    names = [name.replace("_", " ") for name in episode.class_names]

    figure = new_figure(2.0 * max(columns, way), 2.3 * (query_rows + 1) + 0.6)
    grid = figure.add_gridspec(query_rows + 1, max(columns, way))
    # Support row: the first support image of each class.
    for c in range(way):
        axes = figure.add_subplot(grid[0, c])
        first = int(np.flatnonzero(episode.support_labels == c)[0])
        axes.imshow(as_display_image(episode.support_display[first]), interpolation="nearest")
        axes.set_title(f"support: class {c}\n{names[c]}", fontsize=9, fontweight="bold")
        if c == 0:
            axes.set_ylabel("support", fontsize=10, fontweight="bold")
        axes.set_xticks([])
        axes.set_yticks([])
    for q in range(shown):
        axes = figure.add_subplot(grid[1 + q // columns, q % columns])
        axes.imshow(as_display_image(episode.query_display[q]), interpolation="nearest")
        colour = CORRECT if correct[q] else WRONG
        axes.set_title(
            f"pred: {names[predicted[q]]}\ntrue: {names[episode.query_labels[q]]}", fontsize=8, color=colour
        )
        if q % columns == 0:
            axes.set_ylabel("queries", fontsize=10, fontweight="bold")
        axes.set_xticks([])
        axes.set_yticks([])
        for spine in axes.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(3)
    shots = len(episode.support_labels) // way
    figure.suptitle(title or (
        f"{way}-way {shots}-shot episode: {int(correct.sum())}/{num_queries} queries correct "
        f"({100.0 * correct.mean():.0f} %)" + (f", {shown} shown" if shown < num_queries else "")
    ))
    figure.legend(
        handles=[Patch(facecolor="white", edgecolor=CORRECT, linewidth=3, label="correct"),
                 Patch(facecolor="white", edgecolor=WRONG, linewidth=3, label="wrong")],
        loc="outside lower center", ncols=2, fontsize=9,
    )
    if path:
        save_figure(figure, path)
    return figure
