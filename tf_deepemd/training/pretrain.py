"""Stage 1, pre-training: the backbone as a classifier over the training classes.

As the official ``train_pretrain.py`` (docs/method.md, "Protocol"): cross-entropy over
all training classes with a GAP + linear head, SGD (lr 0.1, momentum 0.9,
Nesterov, wd 5e-4), batch 128, 120 epochs, lr x0.2 every 30 epochs; after
every epoch the few-shot model that shares the backbone is validated on the
SAME 100 val episodes (5-way 1-shot 15-query), and the episode model's
weights at the best validation accuracy are kept. The classifier's linear
layer is discarded afterwards. The official options ``-random_val_task``,
``-save_all`` and the author's cosine schedule are settings, off by default.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import gin
import keras

from tf_deepemd.models import make_pretrain_model
from tf_deepemd.training.data_source import (
    PRETRAIN_VALIDATION_SEED_OFFSET,
    DataFit,
    ValidationEpisodes,
)
from tf_deepemd.training.optimizers import check_lr_schedule, epoch_schedule, make_optimizer
from tf_deepemd.training.stage import StageFit


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
      learning_rate: the initial learning rate.
      lr_schedule: ``'step'`` (official StepLR) or ``'cosine'`` (cosine
        annealing over ``epochs``, no restarts: the author's preference).
      lr_step_epochs, lr_gamma: the step schedule's period and factor.
      val_episodes: validation episodes after each epoch.
      val_way, val_shot, val_query: their shape.
      random_val_episodes: new random validation episodes every epoch
        (official ``-random_val_task``), else the same ones.
      keep_epoch_weights: keep the episode model's weights of every epoch
        (official ``-save_all``), ``pretrain/epochs/epoch-<n>.weights.h5``.
    """

    epochs: int = 120
    batch_size: int = 128
    steps_per_epoch: Optional[int] = None
    learning_rate: float = 0.1
    lr_schedule: str = "step"
    lr_step_epochs: int = 30
    lr_gamma: float = 0.2
    val_episodes: int = 100
    val_way: int = 5
    val_shot: int = 1
    val_query: int = 15
    random_val_episodes: bool = False
    keep_epoch_weights: bool = False

    def check(self):
        for name in ("epochs",):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"pretrain.{name} must be >= 0, got {getattr(self, name)}.")
        for name in ("batch_size", "val_episodes", "val_way", "val_shot", "val_query", "lr_step_epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"pretrain.{name} must be >= 1, got {getattr(self, name)}.")
        if self.steps_per_epoch is not None and int(self.steps_per_epoch) < 1:
            raise ValueError(f"pretrain.steps_per_epoch must be >= 1 or None, got {self.steps_per_epoch}.")
        check_lr_schedule("pretrain.lr_schedule", self.lr_schedule)


@dataclasses.dataclass
class PretrainData:
    """The pipelines of the stage (built early so bad settings fail early)."""

    batches: object  # endless (images, labels) batches with .num_classes/.steps_per_epoch
    val_episodes: ValidationEpisodes


def build_data(settings, data_source, fit=None):
    """Builds (and thereby checks) the stage's pipelines.

    ``fit``: a `DataFit` collecting the settings the data cannot hold
    (None: the first one raises).
    """
    fit = fit or DataFit(collect=False)
    batches = val_episodes = None
    with fit.setting(f"pretrain.batch_size={settings.batch_size}"):
        batches = data_source.pretrain_batches(settings.batch_size)
    with fit.setting(f"pretrain.val_way={settings.val_way}, pretrain.val_shot={settings.val_shot}, "
                     f"pretrain.val_query={settings.val_query}"):
        val_episodes = ValidationEpisodes(
            data_source, settings.val_way, settings.val_shot, settings.val_query, settings.val_episodes,
            seed_offset=PRETRAIN_VALIDATION_SEED_OFFSET, new_each_epoch=settings.random_val_episodes,
        )
    return PretrainData(batches, val_episodes)


def compile_fit(settings, data, episode_model, strategy, fresh_start):
    """The stage's `StageFit`: a classifier over the episode model's backbone, compiled.

    The classifier trains the backbone the episode model shares; its
    linear layer is discarded when the stage ends. ``fresh_start`` changes
    nothing: the backbone starts from its initialisation.
    """
    del fresh_start
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
    steps_per_epoch = int(settings.steps_per_epoch or data.batches.steps_per_epoch)
    return StageFit(
        model=classifier,
        optimizer=optimizer,
        # The stream is a pure function of its position: a resumed run
        # continues where the interrupted one stopped.
        batches=lambda epoch: data.batches.skip(epoch * steps_per_epoch),
        steps_per_epoch=steps_per_epoch,
        schedule=epoch_schedule(settings.lr_schedule, settings.learning_rate, settings.epochs,
                                settings.lr_step_epochs, settings.lr_gamma),
        description=(f"{steps_per_epoch} steps of {settings.batch_size} images each, "
                     f"{data.batches.num_classes} classes"),
    )
