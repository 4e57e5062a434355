"""Episodic `tf.data` pipelines: ``make_episode_dataset``.

An episode is one element ``((support_images, support_labels, query_images),
query_labels)``, ready for ``model.fit`` / ``model.evaluate`` (one episode per
step, no extra batch dimension). Images are interleaved by class (see
`sampling`): support position ``p`` has label ``p % way``.

Which classes and images form episode ``i`` is drawn in NumPy by `sampling`
from ``(seed, i)``, once, when the dataset is built; the `tf.data` part only
loads, transforms and batches those images (`reader`). With
``training=False`` the dataset is a pure function of its arguments and the
data: the same episodes, image for image, in every run and process. With
``training=True`` the augmentation is stateless and keyed by ``(seed, image
position)``, so a training run is reproducible as well.
"""

from __future__ import annotations

from typing import Optional

import gin
import tensorflow as tf

from tf_deepemd.data.checked_split import prepare_split
from tf_deepemd.data.image_split import ImageSplit
from tf_deepemd.data.reader import pipeline_options, preprocessed_batches
from tf_deepemd.data.sampling import MAX_SEED, EpisodeShape, check_integer, sample_episodes

DEFAULT_NUM_EPISODES = 1000


@gin.register(module="tf_deepemd.data")
def make_episode_dataset(
    name: str,
    split: str,
    data_dir: Optional[str] = None,
    way: int = 5,
    shot: int = 1,
    query: int = 15,
    image_size: int = 84,
    seed: int = 0,
    training: bool = False,
    num_episodes: int = DEFAULT_NUM_EPISODES,
    on_small_class: str = "error",
    on_bad_image: str = "error",
    **dataset_options,
) -> tf.data.Dataset:
    """A dataset of `num_episodes` few-shot episodes of a registered dataset.

    Args:
      name: dataset name (`list_datasets()`), e.g. ``"mini_imagenet"``,
        ``"cifar_fs"``, ``"demo"``.
      split: ``"train"``, ``"val"`` or ``"test"`` (any folder or ``"all"``
        for ``image_folder``).
      data_dir: where the data is (see `dataset_info(name).layout`).
      way, shot, query: classes per episode, support and query images per
        class.
      image_size: output side S (84 in the paper, 32 for CPU-scale CIFAR).
      seed: non-negative int; fixes the episodes and the augmentation.
      training: random resized crop + flip (True) or resize + centre crop.
      num_episodes: number of episodes (the dataset is finite; for training,
        use the run's total number of steps, e.g. epochs x steps_per_epoch,
        and pass ``steps_per_epoch`` to ``fit``, which then keeps one iterator
        across epochs. ``repeat()`` replays the same episodes and
        augmentation).
      on_small_class: a class with fewer than ``shot + query`` images raises
        ValueError (``"error"``) or is left out with a warning
        (``"exclude"``).
      on_bad_image: an undecodable file fails the iteration with an error
        naming it (``"error"``), or all files are decoded once up front and
        bad ones left out with a counting warning (``"skip"``).
      **dataset_options: reader options, e.g. ``images_per_class=20`` for
        ``demo`` or ``source="tfds"`` for ``cifar_fs``.

    Returns:
      A `tf.data.Dataset` of ``((support_images, support_labels,
      query_images), query_labels)``: float32 ``[way*shot, S, S, 3]``, int32
      ``[way*shot]``, float32 ``[way*query, S, S, 3]``, int32
      ``[way*query]``, labels in ``0 .. way-1``, images normalised with the
      dataset's mean/std.

    Raises:
      ValueError: a bad argument (named), ``way`` above the number of
        classes (before reading the data when the split is known), or a small
        class with ``on_small_class="error"``.
      FileNotFoundError: missing data; the message names the expected layout.

    Example: the generated ``demo`` dataset needs no download (it is
    generated once and cached; ``images_per_class=20`` keeps it small).

    >>> from tf_deepemd.data import make_episode_dataset
    >>> episodes = make_episode_dataset("demo", "test", way=5, shot=1, query=2,
    ...                                 image_size=32, images_per_class=20)
    >>> (support, support_labels, queries), query_labels = next(iter(episodes))
    >>> support.shape, queries.shape, support_labels.numpy()
    (TensorShape([5, 32, 32, 3]), TensorShape([10, 32, 32, 3]), array([0, 1, 2, 3, 4], dtype=int32))
    """
    shape = EpisodeShape(way, shot, query)
    check_integer("image_size", image_size, minimum=1)
    check_integer("num_episodes", num_episodes, minimum=1)
    check_integer("seed", seed, minimum=0, maximum=MAX_SEED)
    data = prepare_split(
        name, split, data_dir,
        min_images_per_class=shape.images_per_class,
        min_classes=shape.way,
        on_small_class=on_small_class,
        on_bad_image=on_bad_image,
        options=dataset_options,
    )
    return episode_dataset(data, shape, num_episodes, image_size, seed, bool(training))


def episode_dataset(
    data: ImageSplit,
    shape: EpisodeShape,
    num_episodes: int,
    image_size: int,
    seed: int,
    training: bool,
) -> tf.data.Dataset:
    """The episodic pipeline over an already prepared `ImageSplit`.

    Same output as `make_episode_dataset`.
    """
    _, image_indices = sample_episodes(data.indices_by_class(), shape, num_episodes, seed)
    flat_indices = image_indices.reshape(-1)
    index_table = tf.constant(flat_indices)
    stream = tf.data.Dataset.from_tensor_slices(flat_indices).enumerate()
    batches = preprocessed_batches(
        data,
        stream,
        index_at_position=lambda position: tf.gather(index_table, position),
        batch_size=shape.num_images,
        image_size=image_size,
        training=training,
        seed=seed,
        total=len(flat_indices),
    )
    support_labels = tf.constant(shape.support_labels())
    query_labels = tf.constant(shape.query_labels())

    def to_episode(images, indices):
        del indices
        support, query = images[: shape.num_support], images[shape.num_support :]
        return (support, support_labels, query), query_labels

    episodes = batches.map(to_episode, num_parallel_calls=tf.data.AUTOTUNE)
    # `ignore_errors` in the reader hides the count from tf.data; restore it.
    episodes = episodes.apply(tf.data.experimental.assert_cardinality(num_episodes))
    return episodes.with_options(pipeline_options()).prefetch(tf.data.AUTOTUNE)

