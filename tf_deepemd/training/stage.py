"""One training stage, start to finish: the skeleton pre-training and meta-training share.

`run_stage` skips a finished stage (loading its best weights), otherwise
has the stage compile what it trains (`StageFit`), restores the resume
checkpoint, fits the remaining epochs with the stage's callbacks and marks
the stage done with the best weights loaded. The two stages differ only in
their `StageFit`: which model ``fit`` trains, on which stream, with which
optimizer and schedule (`tf_deepemd.training.pretrain`,
`tf_deepemd.training.meta_train`).

Both stages are validated the same way, after every epoch, on the stage's
validation episodes of that epoch (`EpisodeValidation`; the same episodes
every epoch unless new ones are asked for,
`tf_deepemd.training.data_source.ValidationEpisodes`): the episode model's
accuracy is the score that picks the best epoch. Optionally the episode
model's weights of every epoch are kept too (`checkpointing.EpochWeights`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Sequence

import keras
import tensorflow as tf

from tf_deepemd.training import checkpointing, run_logs
from tf_deepemd.training.evaluate import EpisodeEvaluator
from tf_deepemd.training.strategy import SyncMovingStatistics

log = logging.getLogger(__name__)

MONITOR = "val_episode_accuracy"


class EpisodeValidation(keras.callbacks.Callback):
    """Adds the few-shot accuracy of ``episode_model`` on the epoch's episodes to the epoch logs.

    Every worker of a distributed run evaluates all the episodes with the
    same weights, so every worker logs the same score.

    Args:
      stage: the stage's name (log lines).
      episode_model: the episode model (for pre-training: sharing the
        trained backbone).
      episodes: ``epoch -> finite dataset of unbatched episodes``, the
        episodes evaluated after that epoch (from 0).
      key: name of the log entry (accuracy as a fraction, like Keras' own);
        ``<key>_ci95`` holds the half-width of its 95 % interval.
    """

    def __init__(self, stage, episode_model, episodes, key=MONITOR):
        super().__init__()
        self.stage = stage
        self.evaluator = EpisodeEvaluator(episode_model)
        self.episodes = episodes
        self.key = key

    def on_epoch_end(self, epoch, logs=None):
        result = self.evaluator(self.episodes(epoch), progress=f"{self.stage} validation")
        if logs is not None:
            logs[self.key] = result.accuracy / 100.0
            logs[self.key + "_ci95"] = result.ci95 / 100.0
        log.info(
            "%s: validation %.2f +- %.2f %% over %d episodes (%.1f episodes/s)",
            self.stage, result.accuracy, result.ci95, result.episodes, result.episodes_per_second,
        )


@dataclasses.dataclass
class StageFit:
    """What a stage trains, compiled (the part where the two stages differ).

    Attributes:
      model: the compiled model ``fit`` trains.
      optimizer: its optimizer (saved in the resume checkpoints).
      batches: ``epoch -> dataset``: the training stream from the start of
        that epoch on (a resumed run continues where it stopped).
      steps_per_epoch: ``fit`` steps per epoch.
      schedule: ``epoch -> learning rate`` (`epoch_schedule`).
      description: what one epoch is, for the log.
    """

    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    batches: Callable[[int], tf.data.Dataset]
    steps_per_epoch: int
    schedule: Callable[[int], float]
    description: str


def run_stage(
    files,
    episode_model,
    epochs: int,
    compile_fit: Callable[[bool], StageFit],
    val_episodes,
    strategy,
    *,
    keep_epoch_weights=False,
    verbose=1,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    stage_callbacks: Callable[[object], Sequence[keras.callbacks.Callback]] = lambda files: (),
):
    """Runs (or resumes, or skips when done) one training stage.

    Args:
      files: the stage's `tf_deepemd.run_folder.StageFiles`.
      episode_model: the built episode model; it holds the stage's best
        weights afterwards.
      epochs: the stage's epochs.
      compile_fit: ``fresh_start -> StageFit`` (``fresh_start``: no resume
        checkpoint exists), called only when the stage is not done yet.
      val_episodes: ``epoch -> finite dataset of unbatched validation
        episodes`` (`ValidationEpisodes`).
      strategy: the `tf.distribute.Strategy` the models live in.
      keep_epoch_weights: also keep the episode model's weights of every
        epoch (`checkpointing.EpochWeights`).
      verbose: Keras ``fit`` verbosity.
      callbacks: extra Keras callbacks (after the stage's own).
      stage_callbacks: ``files -> callbacks`` run after the stage's logs
        are written each epoch (e.g. the tools' accuracy plot).

    Returns:
      ``dict`` summary (``done.json``): epochs, best epoch and validation
      accuracy (%), weights path.
    """
    if files.is_done():
        info = files.done_info()
        log.info("%s: already done (best epoch %s); loading %s", files.stage, info.get("best_epoch"),
                 files.best_weights)
        episode_model.load_weights(files.best_weights)
        return info

    fit = compile_fit(not files.has_resume_checkpoint())
    resume = checkpointing.ResumeState(files, fit.model, fit.optimizer)
    initial_epoch = resume.restore()
    if initial_epoch < epochs:
        log.info("%s: epochs %d..%d of %d, %s", files.stage, initial_epoch + 1, epochs, epochs, fit.description)
        fit.model.fit(
            fit.batches(initial_epoch),
            epochs=epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=fit.steps_per_epoch,
            shuffle=False,
            verbose=verbose,
            callbacks=[
                keras.callbacks.LearningRateScheduler(fit.schedule),
                SyncMovingStatistics(strategy),
                EpisodeValidation(files.stage, episode_model, val_episodes),
                checkpointing.BestCheckpoint(episode_model, files, MONITOR),
                *([checkpointing.EpochWeights(episode_model, files)] if keep_epoch_weights else []),
                *run_logs.logging_callbacks(files, epochs, verbose),
                *stage_callbacks(files),
                checkpointing.ResumeCheckpoint(resume),
                *callbacks,
            ],
        )
    return checkpointing.finish_stage(episode_model, files, epochs)
