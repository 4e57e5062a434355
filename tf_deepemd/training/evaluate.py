"""Few-shot evaluation: accuracy over N episodes with a 95 % confidence interval.

The official protocol (METHOD.md 6.3): per-episode accuracy in %, reported
as ``mean +- 1.96 * std / sqrt(n)`` with NumPy's population std, over 5,000
test episodes (600 for 5-shot in the README).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Optional

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EpisodeAccuracy:
    """Result of `evaluate_episodes`.

    Attributes:
      accuracy: mean per-episode accuracy, in %.
      ci95: half-width of the 95 % confidence interval, in %.
      episodes: number of episodes evaluated.
      seconds: wall time of the loop (first episode's tracing included).
      episodes_per_second: steady-state rate, measured after the first
        episode (which includes tracing the model).
      per_episode: accuracy of each episode in %, float64 ``[episodes]``.
    """

    accuracy: float
    ci95: float
    episodes: int
    seconds: float
    episodes_per_second: float
    per_episode: np.ndarray = dataclasses.field(repr=False)

    def summary(self):
        """The JSON-ready numbers (no per-episode array)."""
        return {
            "accuracy": self.accuracy,
            "ci95": self.ci95,
            "episodes": self.episodes,
            "seconds": round(self.seconds, 3),
            "episodes_per_second": round(self.episodes_per_second, 3),
        }


def confidence_interval(per_episode_accuracy):
    """``(mean, 1.96 * std / sqrt(n))`` of per-episode accuracies (population std).

    Args:
      per_episode_accuracy: array-like ``[n]``, n >= 1.
    """
    values = np.asarray(per_episode_accuracy, np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"Expected a non-empty 1-D array of accuracies, got shape {values.shape}.")
    return float(values.mean()), float(1.96 * values.std() / np.sqrt(values.size))


class EpisodeEvaluator:
    """Scores a model on episode datasets; one compiled step, reused across calls.

    Args:
      model: a callable ``model((support_images, support_labels,
        query_images), training=False) -> logits [Q, way]`` (e.g. `DeepEMD`).
    """

    def __init__(self, model):
        self.model = model

        @tf.function(reduce_retracing=True)
        def correct_fraction(inputs, query_labels):
            logits = model(inputs, training=False)
            predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
            correct = tf.equal(predicted, tf.cast(query_labels, tf.int32))
            return tf.reduce_mean(tf.cast(correct, tf.float64))

        self._correct_fraction = correct_fraction

    def accuracies(self, episodes):
        """Yields the accuracy (in %) of each episode of ``episodes`` (as `__call__`'s)."""
        for inputs, query_labels in episodes:
            yield 100.0 * float(self._correct_fraction(inputs, query_labels))

    def __call__(self, episodes, num_episodes: Optional[int] = None, log_every=0):
        """Evaluates (inference mode) and returns an `EpisodeAccuracy`.

        Args:
          episodes: a dataset of UNBATCHED episodes ``((support_images [S, H,
            W, 3], support_labels [S], query_images [Q, H, W, 3]),
            query_labels [Q])`` (`tf_deepemd.data.make_episode_dataset`).
          num_episodes: stop after this many (None: the whole dataset).
          log_every: log the running accuracy every this many episodes (0: no).
        """
        if num_episodes is not None:
            if int(num_episodes) < 1:
                raise ValueError(f"`num_episodes` must be >= 1, got {num_episodes}.")
            episodes = episodes.take(int(num_episodes))
        accuracies = []
        start = time.perf_counter()
        warm = None  # after the first episode, which includes tracing
        for accuracy in self.accuracies(episodes):
            accuracies.append(accuracy)
            if warm is None:
                warm = time.perf_counter()
            if log_every and len(accuracies) % log_every == 0:
                elapsed = time.perf_counter() - start
                log.info(
                    "episode %d: accuracy %.2f %%, %.2f episodes/s",
                    len(accuracies), np.mean(accuracies), len(accuracies) / elapsed,
                )
        end = time.perf_counter()
        if not accuracies:
            raise ValueError("The episode dataset is empty.")
        accuracy, ci95 = confidence_interval(accuracies)
        if len(accuracies) > 1:
            rate = (len(accuracies) - 1) / max(end - warm, 1e-9)
        else:
            rate = 1 / max(end - start, 1e-9)
        return EpisodeAccuracy(
            accuracy=accuracy,
            ci95=ci95,
            episodes=len(accuracies),
            seconds=end - start,
            episodes_per_second=rate,
            per_episode=np.asarray(accuracies),
        )


def evaluate_episodes(model, episodes, num_episodes: Optional[int] = None, log_every=0):
    """One-off `EpisodeEvaluator(model)(episodes, num_episodes, log_every)`."""
    return EpisodeEvaluator(model)(episodes, num_episodes, log_every)
