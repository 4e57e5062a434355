"""Few-shot datasets and episodic `tf.data` pipelines.

Entry points:

* `make_episode_dataset(name, split, data_dir=None, way=5, shot=1, query=15,
  image_size=84, seed=0, training=False, ...)`: episodes
  ``((support_images, support_labels, query_images), query_labels)``.
* `make_pretrain_dataset(name, split, data_dir, batch_size, image_size, seed,
  ...)`: ``(images, labels)`` batches over all classes of a split.
* `list_datasets()`, `dataset_info(name)`, `load_split(...)`,
  `register_dataset(...)`: the registry of dataset readers (``mini_imagenet``,
  ``tiered_imagenet``, ``cub``, ``cifar_fs``, ``fc100``, ``image_folder``,
  ``demo``).

How it is organised (one concept per module): `sampling` (which classes and
images form each episode, NumPy), one reader per on-disk format
(`mini_imagenet`, `folder`, `cub`, `cifar`, `demo`) returning an
`ImageSplit`, `registry` (name -> reader), `checked_split` (small classes,
unreadable files), `preprocessing` (decode, augment, normalise), `reader`
(indices -> preprocessed batches) and the two pipelines `episodes` and
`pretraining`.

`make_episode_dataset`, `make_pretrain_dataset` and `load_split` are
registered with gin (``gin.register``, module ``tf_deepemd.data``).
"""

from tf_deepemd.data.episodes import make_episode_dataset
from tf_deepemd.data.image_split import (
    CIFAR_FS_NORMALIZATION,
    FEAT_NORMALIZATION,
    ImageSplit,
)
from tf_deepemd.data.pretraining import make_pretrain_dataset
from tf_deepemd.data.registry import (
    DatasetInfo,
    dataset_info,
    list_datasets,
    load_split,
    register_dataset,
)
from tf_deepemd.data.sampling import EpisodeShape, sample_episodes

__all__ = [
    "CIFAR_FS_NORMALIZATION",
    "DatasetInfo",
    "EpisodeShape",
    "FEAT_NORMALIZATION",
    "ImageSplit",
    "dataset_info",
    "list_datasets",
    "load_split",
    "make_episode_dataset",
    "make_pretrain_dataset",
    "register_dataset",
    "sample_episodes",
]
