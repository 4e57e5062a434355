"""The test stage, resumable: per-episode accuracies saved as they come.

A test of thousands of episodes takes long enough to be interrupted. Each
episode's accuracy is appended to ``<model_dir>/test/<results name>.json``
(rewritten atomically every few episodes) together with what was tested
(weights file, split, episode shape, seed); a rerun that tests the same
thing skips the episodes already scored and scores the rest, so its result
is the uninterrupted one. Episode i is a pure function of the seed and i,
so the skipped ones are exactly those already scored. A finished test is
kept: rerunning the command returns the same result without evaluating.

The run's extra callbacks see each test episode through their predict
hooks (``on_predict_begin``, ``on_predict_batch_end(episode index)``,
``on_predict_end``), one batch per episode.
"""

from __future__ import annotations

import logging
import os
import time

import gin
import keras
import numpy as np

from tf_deepemd.run_folder import TEST, read_json, write_json_atomically
from tf_deepemd.training.evaluate import EpisodeAccuracy, EpisodeEvaluator, confidence_interval
from tf_deepemd.progress import Progress

log = logging.getLogger(__name__)


def progress_path(root, results_file):
    """``<root>/test/<results_file without .json>.json``: the test's progress."""
    return os.path.join(root, TEST, os.path.splitext(os.path.basename(results_file))[0] + ".json")


def weights_identity(weights):
    """What identifies a weights file's content cheaply: path, size, modification time."""
    status = os.stat(weights)
    return {"weights": os.path.abspath(weights), "size": status.st_size, "mtime_ns": status.st_mtime_ns}


class TestProgress:
    """The saved state of one test: what is tested and the accuracies so far.

    Args:
      path: the progress file (`progress_path`).
      identity: JSON-able dict of what is tested; saved progress of
        anything else is ignored (and replaced).
    """

    def __init__(self, path, identity):
        self.path = path
        self.identity = identity
        self.accuracies, self.steady_episodes, self.steady_seconds = [], 0, 0.0
        if os.path.isfile(path):
            saved = read_json(path)
            if saved.get("identity") == identity:
                self.accuracies = [float(a) for a in saved["accuracies"]]
                self.steady_episodes = int(saved["steady_episodes"])
                self.steady_seconds = float(saved["steady_seconds"])
            else:
                log.info("test: %s holds another test's progress; starting over", path)

    def save(self):
        write_json_atomically(self.path, {
            "identity": self.identity,
            "accuracies": self.accuracies,
            "steady_episodes": self.steady_episodes,
            "steady_seconds": self.steady_seconds,
        })

    def result(self):
        accuracy, ci95 = confidence_interval(self.accuracies)
        return EpisodeAccuracy(
            accuracy=accuracy,
            ci95=ci95,
            episodes=len(self.accuracies),
            seconds=self.steady_seconds,
            episodes_per_second=self.steady_episodes / max(self.steady_seconds, 1e-9),
            per_episode=np.asarray(self.accuracies),
        )


@gin.configurable(allowlist=["episodes_per_call"])
def run_test(model, episodes, num_episodes, progress, callbacks=(), save_every=None, show_progress=False,
             episodes_per_call=None):
    """Scores ``model`` on the first ``num_episodes`` episodes, continuing ``progress``.

    Args:
      model: the episode model with the weights to test.
      episodes: the test episodes (unbatched; episode i the same every time).
      num_episodes: how many.
      progress: a `TestProgress` (saved every ``save_every`` episodes and at the end).
      callbacks: Keras callbacks seeing each episode as a predict batch.
      save_every: default every 1 % of the episodes.
      show_progress: show the count, rate, time left and running accuracy
        (`tf_deepemd.progress.Progress`), updated after every call.
      episodes_per_call: episodes the model scores per compiled call
        (`EpisodeEvaluator`; None: chosen from the image count and size;
        gin: ``run_test.episodes_per_call``). Each episode's accuracy is the
        one it gets alone.

    Returns:
      The `EpisodeAccuracy` of all ``num_episodes`` episodes; ``seconds``
      and ``episodes_per_second`` exclude each run's first (tracing) call.
    """
    done = len(progress.accuracies)
    if done >= num_episodes:
        log.info("test: all %d episodes already scored in %s", num_episodes, progress.path)
        return progress.result()
    if done:
        log.info("test: resuming after %d of %d episodes (%s)", done, num_episodes, progress.path)
    save_every = save_every or max(1, num_episodes // 100)
    callbacks = keras.callbacks.CallbackList(list(callbacks), model=model)
    evaluator = EpisodeEvaluator(model, episodes_per_call)
    display = Progress(num_episodes, "test", start=done) if show_progress else None
    callbacks.on_predict_begin()
    start = warm = time.perf_counter()
    first, index = True, done
    for call_accuracies in evaluator.calls(episodes.skip(done).take(num_episodes - done)):
        now = time.perf_counter()
        if not first:  # the first call of each run includes tracing
            progress.steady_episodes += len(call_accuracies)
            progress.steady_seconds += now - warm
        first, warm = False, now
        for accuracy in call_accuracies:
            progress.accuracies.append(float(accuracy))
            index += 1
            if index % save_every == 0:
                progress.save()
            callbacks.on_predict_batch_end(index - 1, {"accuracy": float(accuracy)})
        if display:
            display.update(index, **{"accuracy (%)": float(np.mean(progress.accuracies))})
    if progress.steady_episodes == 0:  # one call only: count it, tracing included
        progress.steady_episodes = len(progress.accuracies) - done
        progress.steady_seconds = time.perf_counter() - start
    progress.save()
    callbacks.on_predict_end()
    return progress.result()
