"""Stage 2, meta-training: the episode model trained episode by episode.

As the official ``train_meta.py`` (METHOD.md 6.2): 5-way 1-shot 15-query
training episodes, 50 per epoch, 100 epochs, one episode per update
(``-bs 1``), SGD lr 5e-4 (momentum 0.9, Nesterov, wd 5e-4) halved every 10
epochs, batch norm in training mode on the episode's images, NaN gradients
zeroed; validation on the SAME 1,000 val episodes after every epoch, and
the best model kept for the test.

It is plain ``model.fit`` over the episode dataset. The dataset is batched
by the number of replicas, so each replica trains on its own episode and
the gradients are averaged; several episodes per update on fewer replicas
are accumulated (``gradient_accumulation_steps``), the official ``-bs``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

import gin
import keras
import tensorflow as tf

from tf_deepemd.training import checkpointing, run_logs
from tf_deepemd.training.objectives import episode_accuracy, episode_cross_entropy
from tf_deepemd.training.optimizers import make_optimizer, step_decay

log = logging.getLogger(__name__)

STAGE = "meta_train"
MONITOR = "val_episode_accuracy"


@gin.configurable("meta_train")
@dataclasses.dataclass
class MetaTrainSettings:
    """Meta-training hyperparameters (defaults: the official ones).

    Attributes:
      epochs: epochs (0 skips the stage).
      episodes_per_epoch: training episodes per epoch (official 50).
      episodes_per_update: episodes whose gradients make one update
        (official ``-bs`` 1); a multiple of the number of replicas.
      way: classes per training episode; None = the run's way.
      shot: support images per class in training (official: 1, also for
        the 5-shot results, which use SFC at test time only).
      query: queries per class.
      learning_rate, lr_step_epochs, lr_gamma: StepLR schedule by epoch.
      val_episodes: validation episodes after each epoch (the same ones).
      val_shot: their shot; None = the run's (test) shot.
    """

    epochs: int = 100
    episodes_per_epoch: int = 50
    episodes_per_update: int = 1
    way: Optional[int] = None
    shot: int = 1
    query: int = 15
    learning_rate: float = 5e-4
    lr_step_epochs: int = 10
    lr_gamma: float = 0.5
    val_episodes: int = 1000
    val_shot: Optional[int] = 1

    def check(self, num_replicas=1):
        if int(self.epochs) < 0:
            raise ValueError(f"meta_train.epochs must be >= 0, got {self.epochs}.")
        for name in ("episodes_per_epoch", "episodes_per_update", "shot", "query", "val_episodes",
                     "lr_step_epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"meta_train.{name} must be >= 1, got {getattr(self, name)}.")
        if self.episodes_per_update % num_replicas:
            raise ValueError(
                f"meta_train.episodes_per_update={self.episodes_per_update} must be a multiple of "
                f"the {num_replicas} replicas (each replica trains on whole episodes)."
            )
        if self.episodes_per_epoch % self.episodes_per_update:
            raise ValueError(
                f"meta_train.episodes_per_epoch={self.episodes_per_epoch} must be a multiple of "
                f"meta_train.episodes_per_update={self.episodes_per_update}."
            )


@dataclasses.dataclass
class MetaTrainData:
    """The pipelines of the stage (built early so bad settings fail early)."""

    episodes: object  # finite, unbatched: epochs * episodes_per_epoch training episodes
    val_episodes: object  # finite, unbatched


def build_data(settings, data_source, way, shot):
    """Builds (and thereby checks) the stage's pipelines for a run of ``way``/``shot``."""
    train_way = settings.way or way
    episodes = data_source.episodes(
        "train", train_way, settings.shot, settings.query,
        num_episodes=max(1, settings.epochs * settings.episodes_per_epoch),
        training=True, seed_offset=2,
    )
    val_episodes = data_source.episodes(
        "val", way, settings.val_shot or shot, settings.query,
        num_episodes=settings.val_episodes, seed_offset=3,
    )
    return MetaTrainData(episodes, val_episodes)


def build_compiled_state(model, episodes):
    """Builds the compiled loss and metrics from one local batch-of-one episode.

    Keras' ``fit`` builds them from the first element of the DISTRIBUTED
    dataset, whose per-replica values carry no dtype, so every input
    becomes float32 there, and `DeepEMD` (rightly) rejects float support
    labels. Building them first from a local element makes ``fit`` skip
    that step. Uses Keras' ``_symbolic_build(data_batch=...)`` (Keras 3).
    """
    symbolic_build = getattr(model, "_symbolic_build", None)
    if symbolic_build is None:
        return
    (inputs, labels), = episodes.batch(1).take(1)
    symbolic_build(data_batch=(inputs, labels))


def run_meta_training(
    settings, data, model, files, strategy, verbose=1, callbacks=(), init_weights=None
):
    """Runs (or resumes, or skips when done) meta-training.

    Args:
      settings: `MetaTrainSettings`.
      data: `MetaTrainData`.
      model: the built episode model (created under ``strategy.scope()``).
      files: the stage's `checkpointing.StageFiles`.
      strategy: the `tf.distribute.Strategy`.
      verbose: Keras ``fit`` verbosity.
      callbacks: extra Keras callbacks.
      init_weights: weights to start from on a fresh start (the
        pre-training result); ignored when resuming.

    Returns:
      ``dict`` summary; the model holds the best weights afterwards.
    """
    if files.is_done():
        info = files.done_info()
        log.info("%s: already done (best epoch %s); loading %s", STAGE, info.get("best_epoch"), files.best_weights)
        model.load_weights(files.best_weights)
        return info

    replicas = strategy.num_replicas_in_sync
    settings.check(replicas)
    fresh_start = tf.train.latest_checkpoint(files.resume_dir) is None
    if fresh_start and init_weights:
        # Before compiling: the file holds no optimizer state to match.
        log.info("%s: starting from %s", STAGE, init_weights)
        model.load_weights(init_weights)
    with strategy.scope():
        optimizer = make_optimizer(
            settings.learning_rate,
            gradient_accumulation_steps=settings.episodes_per_update // replicas,
        )
        optimizer.build(model.trainable_variables)
        model.compile(
            optimizer=optimizer,
            loss=episode_cross_entropy,
            metrics=[episode_accuracy],
        )
    manager, epochs_done = files.resume_manager(model, optimizer)
    initial_epoch = files.restore(manager, epochs_done)

    if initial_epoch < settings.epochs:
        steps_per_epoch = settings.episodes_per_epoch // replicas
        log.info(
            "%s: epochs %d..%d of %d, %d episodes each on %d replica(s), %d per update",
            STAGE, initial_epoch + 1, settings.epochs, settings.epochs,
            settings.episodes_per_epoch, replicas, settings.episodes_per_update,
        )
        # Episode i of the run is a pure function of (seed, i): skipping the
        # episodes of finished epochs resumes exactly where the run stopped.
        episodes = data.episodes.skip(initial_epoch * settings.episodes_per_epoch)
        episodes = episodes.batch(replicas, drop_remainder=True)
        schedule = step_decay(settings.learning_rate, settings.lr_step_epochs, settings.lr_gamma)
        if replicas > 1:
            build_compiled_state(model, data.val_episodes)
        model.fit(
            episodes,
            epochs=settings.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_data=data.val_episodes.batch(replicas, drop_remainder=True),
            shuffle=False,
            verbose=verbose,
            callbacks=[
                keras.callbacks.LearningRateScheduler(schedule),
                checkpointing.BestCheckpoint(model, files, MONITOR),
                *run_logs.logging_callbacks(files.dir, STAGE, settings.epochs),
                checkpointing.ResumeCheckpoint(manager, epochs_done),
                *callbacks,
            ],
        )
    return checkpointing.finish_stage(STAGE, model, files, settings.epochs)
