"""Stage 2, meta-training: the episode model trained episode by episode.

As the official ``train_meta.py`` (docs/method.md, "Protocol"): 5-way 1-shot 15-query
training episodes, 50 per epoch, 100 epochs, one episode per update
(``-bs 1``), SGD lr 5e-4 (momentum 0.9, Nesterov, wd 5e-4) halved every 10
epochs, batch norm in training mode on the episode's images, NaN gradients
zeroed; validation on the SAME 1,000 val episodes after every epoch, and
the best model kept for the test. The official options ``-random_val_task``,
``-save_all`` and the author's cosine schedule are settings, off by default.

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

from tf_deepemd.run_folder import META_TRAIN as STAGE
from tf_deepemd.training.objectives import episode_accuracy, episode_cross_entropy
from tf_deepemd.training.data_source import (
    META_TRAIN_EPISODES_SEED_OFFSET,
    META_TRAIN_VALIDATION_SEED_OFFSET,
    DataFit,
    ValidationEpisodes,
)
from tf_deepemd.training.optimizers import check_lr_schedule, epoch_schedule, make_optimizer
from tf_deepemd.training.stage import StageFit

log = logging.getLogger(__name__)


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
      learning_rate: the initial learning rate.
      lr_schedule: ``'step'`` (official StepLR) or ``'cosine'`` (cosine
        annealing over ``epochs``, no restarts: the author's preference).
      lr_step_epochs, lr_gamma: the step schedule's period and factor.
      val_episodes: validation episodes after each epoch.
      val_shot: their shot; None = the run's (test) shot.
      random_val_episodes: new random validation episodes every epoch
        (official ``-random_val_task``), else the same ones.
      keep_epoch_weights: keep the model's weights of every epoch (official
        ``-save_all``), ``meta_train/epochs/epoch-<n>.weights.h5``.
    """

    epochs: int = 100
    episodes_per_epoch: int = 50
    episodes_per_update: int = 1
    way: Optional[int] = None
    shot: int = 1
    query: int = 15
    learning_rate: float = 5e-4
    lr_schedule: str = "step"
    lr_step_epochs: int = 10
    lr_gamma: float = 0.5
    val_episodes: int = 1000
    val_shot: Optional[int] = 1
    random_val_episodes: bool = False
    keep_epoch_weights: bool = False

    def check(self, num_replicas=1):
        if int(self.epochs) < 0:
            raise ValueError(f"meta_train.epochs must be >= 0, got {self.epochs}.")
        for name in ("episodes_per_epoch", "episodes_per_update", "shot", "query", "val_episodes",
                     "lr_step_epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"meta_train.{name} must be >= 1, got {getattr(self, name)}.")
        check_lr_schedule("meta_train.lr_schedule", self.lr_schedule)
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
    val_episodes: ValidationEpisodes


def build_data(settings, data_source, way, shot, fit=None):
    """Builds (and thereby checks) the stage's pipelines for a run of ``way``/``shot``.

    ``fit``: a `DataFit` collecting the settings the data cannot hold
    (None: the first one raises).
    """
    fit = fit or DataFit(collect=False)
    train_way = settings.way or way
    way_name = "meta_train.way" if settings.way else "run_experiment.way"
    episodes = val_episodes = None
    with fit.setting(f"{way_name}={train_way}, meta_train.shot={settings.shot}, meta_train.query={settings.query}"):
        episodes = data_source.episodes(
            "train", train_way, settings.shot, settings.query,
            num_episodes=max(1, settings.epochs * settings.episodes_per_epoch),
            training=True, seed_offset=META_TRAIN_EPISODES_SEED_OFFSET,
        )
    val_shot_name = "meta_train.val_shot" if settings.val_shot else "run_experiment.shot"
    with fit.setting(f"run_experiment.way={way}, {val_shot_name}={settings.val_shot or shot}, "
                     f"meta_train.query={settings.query}"):
        val_episodes = ValidationEpisodes(
            data_source, way, settings.val_shot or shot, settings.query, settings.val_episodes,
            seed_offset=META_TRAIN_VALIDATION_SEED_OFFSET, new_each_epoch=settings.random_val_episodes,
        )
    return MetaTrainData(episodes, val_episodes)


def compile_fit(settings, data, model, strategy, init_weights, fresh_start):
    """The stage's `StageFit`: the episode model compiled with the episode loss.

    On a fresh start the model first loads ``init_weights`` (the
    pre-training result), if any; a resumed run restores its checkpoint
    instead.
    """
    replicas = strategy.num_replicas_in_sync
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
        model.compile(optimizer=optimizer, loss=episode_cross_entropy, metrics=[episode_accuracy])

    def batches(epoch):
        # Episode i of the run is a pure function of (seed, i): skipping the
        # episodes of finished epochs resumes exactly where the run stopped.
        episodes = data.episodes.skip(epoch * settings.episodes_per_epoch)
        return episodes.batch(replicas, drop_remainder=True)

    return StageFit(
        model=model,
        optimizer=optimizer,
        batches=batches,
        steps_per_epoch=settings.episodes_per_epoch // replicas,
        schedule=epoch_schedule(settings.lr_schedule, settings.learning_rate, settings.epochs,
                                settings.lr_step_epochs, settings.lr_gamma),
        description=(f"{settings.episodes_per_epoch} episodes each on {replicas} replica(s), "
                     f"{settings.episodes_per_update} per update"),
    )
