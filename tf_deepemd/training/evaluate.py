"""Few-shot evaluation: accuracy over N episodes with a 95 % confidence interval.

The official protocol (docs/method.md, "Protocol"): per-episode accuracy in %, reported
as ``mean +- 1.96 * std / sqrt(n)`` with NumPy's population std, over 5,000
test episodes (600 for 5-shot, as the official README reports them).
"""

from __future__ import annotations

import dataclasses
import inspect
import time
import weakref
from typing import Optional

import numpy as np
import tensorflow as tf

from tf_deepemd.data.reader import pipeline_options
from tf_deepemd.progress import Progress


@dataclasses.dataclass(frozen=True)
class EpisodeAccuracy:
    """Result of `evaluate_episodes`.

    Attributes:
      accuracy: mean per-episode accuracy, in %.
      ci95: half-width of the 95 % confidence interval, in %.
      episodes: number of episodes evaluated.
      seconds: wall time of the loop (first episode's tracing included).
      episodes_per_second: steady-state rate, measured after the first
        call (which includes tracing the model).
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


# Images x height x width one evaluation call may take when the number of episodes
# per call is chosen automatically: 12 5-way 1-shot 15-query episodes of
# 32 x 32 images, one at 84 x 84 (where a batch would hold gigabytes of
# activations and gains little).
AUTO_PIXELS_PER_CALL = 1_000_000
MAX_AUTO_EPISODES_PER_CALL = 16


def auto_episodes_per_call(element_spec):
    """Episodes per call for episodes of ``element_spec`` (see `AUTO_PIXELS_PER_CALL`).

    1 when the image shapes are not static.
    """
    (support, _, query), _ = element_spec
    sizes = [np.prod(spec.shape[:-1].as_list()) if spec.shape.is_fully_defined() else None
             for spec in (support, query)]
    if None in sizes:
        return 1
    return int(np.clip(AUTO_PIXELS_PER_CALL // sum(sizes), 1, MAX_AUTO_EPISODES_PER_CALL))


# One traced scoring function per model and input form (one episode or a
# batch of them), shared by all its evaluators: each stage's validation and
# the test stage score the same model, and tracing DeepEMD's inference graph
# takes seconds. A traced function reads the weights the model has when called.
_SCORING_FUNCTIONS = weakref.WeakKeyDictionary()


def _scoring_function(model, batched):
    """``(inputs, query_labels) -> [episodes]`` fraction of queries right."""
    try:
        functions = _SCORING_FUNCTIONS.setdefault(model, {})
        # Weak, so that the cache does not keep the model alive.
        get_model = weakref.WeakMethod(model) if inspect.ismethod(model) else weakref.ref(model)
    except TypeError:  # not weakly referenceable: not shared
        functions, get_model = {}, lambda: model
    if batched not in functions:
        functions[batched] = _traced_scoring(get_model)
    return functions[batched]


def _traced_scoring(get_model):
    @tf.function(reduce_retracing=True)
    def correct_fraction(inputs, query_labels):
        logits = get_model()(inputs, training=False)
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        correct = tf.equal(predicted, tf.cast(query_labels, tf.int32))
        return tf.reduce_mean(tf.cast(correct, tf.float64), axis=-1)

    return correct_fraction


class EpisodeEvaluator:
    """Scores a model on episode datasets with one compiled step per model and
    input form, shared by every evaluator of that model (it reads the model's
    weights at each call).

    Several episodes go through each call (a leading episode dim): one
    encoder pass, one solver call for all their EMD problems, their SFC fits
    in one loop (`tf_deepemd.DeepEMD`), so the per-call and per-solver-op
    overheads are paid once for all of them. Each episode's result is the
    one it gets alone.

    Args:
      model: a callable ``model((support_images, support_labels,
        query_images), training=False) -> logits [Q, way]`` (e.g. `DeepEMD`);
        with ``episodes_per_call`` other than 1 it must also take a batch of
        episodes (``[E, S, H, W, 3]``, ``[E, S]``, ``[E, Q, H, W, 3]`` ->
        ``[E, Q, way]``), as `DeepEMD` does in inference.
      episodes_per_call: episodes per compiled call; None: from the image
        count and size of the episodes (`auto_episodes_per_call`: 12 for
        5-way 1-shot 15-query episodes of 32 x 32 images, 1 at 84 x 84). The
        last call is padded with copies of its last episode, so the
        function is traced once.
    """

    def __init__(self, model, episodes_per_call: Optional[int] = None):
        if episodes_per_call is not None and int(episodes_per_call) < 1:
            raise ValueError(f"`episodes_per_call` must be >= 1 or None, got {episodes_per_call}.")
        self.model = model
        self.episodes_per_call = None if episodes_per_call is None else int(episodes_per_call)

    def calls(self, episodes):
        """Yields the accuracies (in %, float64 ``[episodes of the call]``) of each call.

        Args:
          episodes: as `__call__`'s.
        """
        per_call = self.episodes_per_call or auto_episodes_per_call(episodes.element_spec)
        # Each run makes a short-lived iterator: see `pipeline_options`.
        episodes = episodes.with_options(pipeline_options())
        correct_fraction = _scoring_function(self.model, batched=per_call > 1)
        if per_call == 1:
            for inputs, query_labels in episodes:
                yield 100.0 * correct_fraction(inputs, query_labels).numpy()[None]
            return
        for batch in episodes.batch(per_call).prefetch(1):
            count = int(tf.shape(batch[1])[0])
            if count < per_call:
                batch = tf.nest.map_structure(
                    lambda t: tf.concat([t, tf.repeat(t[-1:], per_call - count, axis=0)], 0), batch
                )
            yield 100.0 * correct_fraction(*batch).numpy()[:count]

    def __call__(self, episodes, num_episodes: Optional[int] = None, progress: Optional[str] = None):
        """Evaluates (inference mode) and returns an `EpisodeAccuracy`.

        Args:
          episodes: a dataset of UNBATCHED episodes ``((support_images [S, H,
            W, 3], support_labels [S], query_images [Q, H, W, 3]),
            query_labels [Q])`` (`tf_deepemd.data.make_episode_dataset`).
          num_episodes: stop after this many (None: the whole dataset).
          progress: show the count, rate, time left and running accuracy,
            labelled with this (`tf_deepemd.progress.Progress`);
            None: nothing.
        """
        if num_episodes is not None:
            if int(num_episodes) < 1:
                raise ValueError(f"`num_episodes` must be >= 1, got {num_episodes}.")
            episodes = episodes.take(int(num_episodes))
        total = int(episodes.cardinality()) if num_episodes is None else int(num_episodes)
        display = Progress(total, progress) if progress and total > 0 else None
        accuracies = []
        start = time.perf_counter()
        warm, warm_count = None, 0  # after the first call, which includes tracing
        for call_accuracies in self.calls(episodes):
            accuracies.extend(call_accuracies)
            if warm is None:
                warm, warm_count = time.perf_counter(), len(accuracies)
            if display:
                display.update(len(accuracies), **{"accuracy (%)": float(np.mean(accuracies))})
        end = time.perf_counter()
        if not accuracies:
            raise ValueError("The episode dataset is empty.")
        accuracy, ci95 = confidence_interval(accuracies)
        if len(accuracies) > warm_count:
            rate = (len(accuracies) - warm_count) / max(end - warm, 1e-9)
        else:
            rate = len(accuracies) / max(end - start, 1e-9)
        return EpisodeAccuracy(
            accuracy=accuracy,
            ci95=ci95,
            episodes=len(accuracies),
            seconds=end - start,
            episodes_per_second=rate,
            per_episode=np.asarray(accuracies),
        )


def evaluate_episodes(model, episodes, num_episodes: Optional[int] = None, progress: Optional[str] = None,
                      episodes_per_call: Optional[int] = None):
    """One-off `EpisodeEvaluator(model, episodes_per_call)(episodes, num_episodes, progress)`."""
    return EpisodeEvaluator(model, episodes_per_call)(episodes, num_episodes, progress)
