"""Stage 1, pre-training: the backbone as a classifier over the training classes.

As the official ``train_pretrain.py`` (METHOD.md 6.1): cross-entropy over
all training classes with a GAP + linear head, SGD (lr 0.1, momentum 0.9,
Nesterov, wd 5e-4), batch 128, 120 epochs, lr x0.2 every 30 epochs; after
every epoch the few-shot model that shares the backbone is validated on the
SAME 100 val episodes (5-way 1-shot 15-query), and the episode model's
weights at the best validation accuracy are kept. The classifier's linear
layer is discarded afterwards.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

import gin
import keras

from tf_deepemd.models import make_pretrain_model
from tf_deepemd.training import checkpointing, run_logs
from tf_deepemd.training.evaluate import EpisodeEvaluator
from tf_deepemd.training.optimizers import make_optimizer, step_decay

log = logging.getLogger(__name__)

STAGE = "pretrain"
MONITOR = "val_episode_accuracy"


@gin.configurable("pretrain")
@dataclasses.dataclass
class PretrainSettings:
    """Pre-training hyperparameters (defaults: the official ones).

    Attributes:
      epochs: passes over the training split (0 skips the stage).
      batch_size: images per step (global, across replicas).
      steps_per_epoch: steps per epoch; None = one pass over the split
        (``floor(images / batch_size)``). Smaller values make CPU-scale
        epochs (validation and checkpoints) more frequent.
      learning_rate, lr_step_epochs, lr_gamma: StepLR schedule by epoch.
      val_episodes: validation episodes after each epoch (the same ones).
      val_way, val_shot, val_query: their shape.
    """

    epochs: int = 120
    batch_size: int = 128
    steps_per_epoch: Optional[int] = None
    learning_rate: float = 0.1
    lr_step_epochs: int = 30
    lr_gamma: float = 0.2
    val_episodes: int = 100
    val_way: int = 5
    val_shot: int = 1
    val_query: int = 15

    def check(self):
        for name in ("epochs",):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"pretrain.{name} must be >= 0, got {getattr(self, name)}.")
        for name in ("batch_size", "val_episodes", "val_way", "val_shot", "val_query", "lr_step_epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"pretrain.{name} must be >= 1, got {getattr(self, name)}.")
        if self.steps_per_epoch is not None and int(self.steps_per_epoch) < 1:
            raise ValueError(f"pretrain.steps_per_epoch must be >= 1 or None, got {self.steps_per_epoch}.")


class EpisodeValidation(keras.callbacks.Callback):
    """Adds the few-shot accuracy of ``episode_model`` on fixed episodes to the epoch logs.

    Args:
      episode_model: the episode model (sharing the trained backbone).
      episodes: a finite dataset of unbatched episodes; the same episodes
        are evaluated after every epoch.
      key: name of the log entry (accuracy as a fraction, like Keras' own).
    """

    def __init__(self, episode_model, episodes, key=MONITOR):
        super().__init__()
        self.evaluator = EpisodeEvaluator(episode_model)
        self.episodes = episodes
        self.key = key

    def on_epoch_end(self, epoch, logs=None):
        result = self.evaluator(self.episodes)
        if logs is not None:
            logs[self.key] = result.accuracy / 100.0
            logs[self.key + "_ci95"] = result.ci95 / 100.0
        log.info(
            "%s: validation %.2f +- %.2f %% over %d episodes (%.1f episodes/s)",
            STAGE, result.accuracy, result.ci95, result.episodes, result.episodes_per_second,
        )


@dataclasses.dataclass
class PretrainData:
    """The pipelines of the stage (built early so bad settings fail early)."""

    batches: object  # endless (images, labels) batches with .num_classes/.steps_per_epoch
    val_episodes: object  # finite, unbatched


def build_data(settings, data_source):
    """Builds (and thereby checks) the stage's pipelines."""
    batches = data_source.pretrain_batches(settings.batch_size)
    val_episodes = data_source.episodes(
        "val", settings.val_way, settings.val_shot, settings.val_query,
        num_episodes=settings.val_episodes, seed_offset=1,
    )
    return PretrainData(batches, val_episodes)


def run_pretraining(
    settings, data, episode_model, files, strategy, verbose=1, callbacks=()
):
    """Runs (or resumes, or skips when done) pre-training.

    Args:
      settings: `PretrainSettings`.
      data: `PretrainData`.
      episode_model: the built episode model (its backbone is trained;
        created under ``strategy.scope()``).
      files: the stage's `checkpointing.StageFiles`.
      strategy: the `tf.distribute.Strategy` the model lives in.
      verbose: Keras ``fit`` verbosity.
      callbacks: extra Keras callbacks (e.g. tests that interrupt a run).

    Returns:
      ``dict`` summary: best epoch/accuracy, epochs run, weights path.
      The episode model holds the best weights afterwards.
    """
    if files.is_done():
        info = files.done_info()
        log.info("%s: already done (best epoch %s); loading %s", STAGE, info.get("best_epoch"), files.best_weights)
        episode_model.load_weights(files.best_weights)
        return info

    steps_per_epoch = int(settings.steps_per_epoch or data.batches.steps_per_epoch)
    with strategy.scope():
        classifier = make_pretrain_model(episode_model.backbone, data.batches.num_classes)
        classifier.build(tuple(data.batches.element_spec[0].shape))
        optimizer = make_optimizer(settings.learning_rate)
        optimizer.build(classifier.trainable_variables)
        classifier.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    manager, epochs_done = files.resume_manager(classifier, optimizer)
    initial_epoch = files.restore(manager, epochs_done)

    if initial_epoch < settings.epochs:
        log.info(
            "%s: epochs %d..%d of %d, %d steps of %d images each, %d classes",
            STAGE, initial_epoch + 1, settings.epochs, settings.epochs, steps_per_epoch,
            settings.batch_size, data.batches.num_classes,
        )
        # The stream is a pure function of its position: continue where the
        # interrupted run stopped instead of replaying its first batches.
        batches = data.batches.skip(initial_epoch * steps_per_epoch)
        schedule = step_decay(settings.learning_rate, settings.lr_step_epochs, settings.lr_gamma)
        classifier.fit(
            batches,
            epochs=settings.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            shuffle=False,
            verbose=verbose,
            callbacks=[
                keras.callbacks.LearningRateScheduler(schedule),
                EpisodeValidation(episode_model, data.val_episodes),
                checkpointing.BestCheckpoint(episode_model, files, MONITOR),
                *run_logs.logging_callbacks(files.dir, STAGE, settings.epochs),
                checkpointing.ResumeCheckpoint(manager, epochs_done),
                *callbacks,
            ],
        )
    return checkpointing.finish_stage(STAGE, episode_model, files, settings.epochs)
