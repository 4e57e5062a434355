"""Which data an experiment reads, and the datasets each stage takes from it.

`DataSource` holds the settings every pipeline of a run shares (dataset
name, ``data_dir``, image size, reader options, seed), so the data location
is ONE binding (``run_experiment.data_dir``) for pre-training, validation
and test alike. Building a pipeline reads the split's metadata and checks
the episode shape against it (classes, images per class) without decoding
images, which is why `run_experiment` builds every dataset it will need
before any training starts.

`DataFit` collects, while those pipelines are built, every setting the
data cannot hold (a batch larger than the split, a way above its classes,
classes smaller than shot + query), so that a run reports them all in one
error instead of one per attempt.

`ValidationEpisodes` are a training stage's validation episodes by epoch:
the same ones every epoch (official default) or new ones each epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Mapping, Optional

import tensorflow as tf

from tf_deepemd.data import dataset_info, make_episode_dataset, make_pretrain_dataset
from tf_deepemd.data.checked_split import PIPELINE_OPTION_VALUES, PIPELINE_OPTIONS

# Datasets that work without a data_dir: generated (and cached) data.
DATASETS_WITHOUT_DATA_DIR = ("demo",)

# Each pipeline of a run draws from ``run seed + its offset``, so that no two
# of them sample the same classes and images in the same order.
PRETRAIN_BATCHES_SEED_OFFSET = 0
PRETRAIN_VALIDATION_SEED_OFFSET = 1
META_TRAIN_EPISODES_SEED_OFFSET = 2
META_TRAIN_VALIDATION_SEED_OFFSET = 3
TEST_EPISODES_SEED_OFFSET = 4

SMALL_CLASS_HINT = "run_experiment.dataset_options={'on_small_class': 'exclude'} leaves small classes out."
# Epoch e > 0 of new validation episodes each epoch is seeded with the
# stage's offset + e * this: clear of the offsets above.
EPOCH_SEED_STRIDE = 1000


@dataclasses.dataclass(frozen=True)
class DataSource:
    """Shared pipeline settings of one run.

    Attributes:
      name: registered dataset name (`tf_deepemd.data.list_datasets()`).
      data_dir: where the data is; None only for generated datasets or a
        ``source='tfds'`` option.
      image_size: side of the images fed to the model.
      options: reader options (e.g. ``{'images_per_class': 60}`` for demo,
        ``{'class_split': (0.6, 0.2, 0.2)}`` for image_folder) and the
        pipelines' `PIPELINE_OPTIONS` (``{'on_small_class': 'exclude'}``
        leaves out the classes smaller than an episode's shot + query).
      seed: base seed; each pipeline derives its own from it.
    """

    name: str
    data_dir: Optional[str] = None
    image_size: int = 84
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    seed: int = 1

    def check(self):
        """Raises ValueError for an unknown dataset or option, or a missing data_dir."""
        info = dataset_info(self.name)  # ValueError naming the known datasets
        needs_dir = self.name not in DATASETS_WITHOUT_DATA_DIR and self.options.get("source") != "tfds"
        if needs_dir and not self.data_dir:
            tfds_default = (
                " (or run_experiment.dataset_options={'source': 'tfds'} for TFDS's default data dir)"
                if "source" in info.options() else ""
            )
            raise ValueError(
                f"Dataset {self.name!r} needs a data_dir (expected layout: {info.layout}); "
                f"bind run_experiment.data_dir='/path/to/data'{tfds_default}."
            )
        accepted = info.options() + PIPELINE_OPTIONS
        unknown = sorted(set(self.options) - set(accepted))
        if unknown:
            raise ValueError(
                f"Unknown run_experiment.dataset_options {unknown} for dataset {self.name!r}; "
                f"it accepts {list(accepted)}."
            )
        for name, values in PIPELINE_OPTION_VALUES.items():
            if name in self.options and self.options[name] not in values:
                raise ValueError(
                    f"run_experiment.dataset_options['{name}'] must be one of {values}, got {self.options[name]!r}."
                )

    def episodes(self, split, way, shot, query, num_episodes, training=False, seed_offset=0):
        """Unbatched episodes (`tf_deepemd.data.make_episode_dataset`)."""
        dataset = make_episode_dataset(
            self.name,
            split,
            data_dir=self.data_dir,
            way=way,
            shot=shot,
            query=query,
            image_size=self.image_size,
            seed=self.seed + seed_offset,
            training=training,
            num_episodes=num_episodes,
            **dict(self.options),
        )
        return with_data_sharding(dataset)

    def pretrain_batches(self, batch_size, seed_offset=PRETRAIN_BATCHES_SEED_OFFSET):
        """Endless shuffled, augmented ``(images, labels)`` batches of the train split.

        The returned dataset carries ``num_classes`` and ``steps_per_epoch``
        (`tf_deepemd.data.make_pretrain_dataset`).
        """
        dataset = make_pretrain_dataset(
            self.name,
            "train",
            data_dir=self.data_dir,
            batch_size=batch_size,
            image_size=self.image_size,
            seed=self.seed + seed_offset,
            training=True,
            # Pre-training uses every class, small ones included.
            **{key: value for key, value in self.options.items() if key != "on_small_class"},
        )
        sharded = with_data_sharding(dataset)
        for attribute in ("num_classes", "class_names", "num_images", "steps_per_epoch"):
            setattr(sharded, attribute, getattr(dataset, attribute))
        return sharded


class DataFit:
    """Collects the settings the data cannot hold while a run's pipelines are built.

    Build each pipeline under ``with fit.setting("pretrain.batch_size=64"):``
    (the settings that shape it), then call `raise_misfits`, which raises
    one ValueError listing every setting to change. A `DataFit` made with
    ``collect=False`` raises at once instead (a single pipeline's error).
    Missing data (FileNotFoundError) always raises at once.
    """

    def __init__(self, collect=True):
        self.collect = collect
        self.misfits = []

    @contextlib.contextmanager
    def setting(self, description):
        try:
            yield
        except FileNotFoundError:
            raise
        except ValueError as error:
            if not self.collect:
                raise
            misfit = f"[{description}] {error}"
            if misfit not in self.misfits:
                self.misfits.append(misfit)

    def raise_misfits(self):
        """ValueError listing every setting the data cannot hold, if any."""
        if not self.misfits:
            return
        hint = f" {SMALL_CLASS_HINT}" if any("on_small_class" in m for m in self.misfits) else ""
        raise ValueError(
            f"The data cannot hold {len(self.misfits)} setting(s); change them: "
            + " ".join(f"({number}) {misfit}" for number, misfit in enumerate(self.misfits, 1)) + hint
        )


class ValidationEpisodes:
    """A training stage's validation episodes by epoch: ``episodes(epoch)``.

    By default the same episodes every epoch, as officially. With
    ``new_each_epoch`` (the official ``-random_val_task``) each epoch gets
    new random episodes, epoch ``e`` seeded by the run's seed, the stage's
    ``seed_offset`` and ``e``: reproducible, and the same at every resume.
    Epoch 0 gets the episodes of the default.

    Args:
      data_source: the run's `DataSource`.
      way, shot, query: the episodes' shape.
      num_episodes: episodes per epoch.
      seed_offset: the stage's seed offset (`DataSource.episodes`).
      new_each_epoch: new random episodes every epoch.
    """

    def __init__(self, data_source, way, shot, query, num_episodes, seed_offset, new_each_epoch=False):
        self.data_source = data_source
        self.shape = (way, shot, query)
        self.num_episodes = num_episodes
        self.seed_offset = seed_offset
        self.new_each_epoch = bool(new_each_epoch)
        # Built now: a shape the split cannot hold fails before training.
        self.first = self._episodes(seed_offset)

    def _episodes(self, seed_offset):
        return self.data_source.episodes("val", *self.shape, num_episodes=self.num_episodes,
                                         seed_offset=seed_offset)

    def __call__(self, epoch):
        """The finite dataset of unbatched episodes validating epoch ``epoch`` (from 0)."""
        if not self.new_each_epoch or epoch == 0:
            return self.first
        return self._episodes(self.seed_offset + EPOCH_SEED_STRIDE * int(epoch))


def with_data_sharding(dataset):
    """Multi-worker runs split these in-memory pipelines by element, not by file."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
