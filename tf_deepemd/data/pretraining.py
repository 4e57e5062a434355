"""Pre-training pipeline: shuffled, augmented batches over all classes of a split.

The pre-training stage of DeepEMD (docs/method.md, "Protocol") trains the backbone as a
plain ``num_classes``-way classifier on the base classes. Here each epoch
visits every image once in an order given by a stateless shuffle keyed by
``(seed, epoch)``, and the augmentation of the image at stream position
``p`` is keyed by ``(seed, p)``: a run is reproducible, and the epochs of an
endless stream differ from each other.
"""

from __future__ import annotations

import math
from typing import Optional

import gin
import tensorflow as tf

from tf_deepemd.data.checked_split import prepare_split
from tf_deepemd.data.reader import pipeline_options, preprocessed_batches
from tf_deepemd.data.sampling import MAX_SEED, check_integer


@gin.register(module="tf_deepemd.data")
def make_pretrain_dataset(
    name: str,
    split: str = "train",
    data_dir: Optional[str] = None,
    batch_size: int = 128,
    image_size: int = 84,
    seed: int = 0,
    training: bool = True,
    num_epochs: Optional[int] = None,
    on_bad_image: str = "error",
    **dataset_options,
) -> tf.data.Dataset:
    """Batches of ``(images, labels)`` over all classes of a split.

    Args:
      name, split, data_dir, image_size, seed, on_bad_image,
        **dataset_options: as in `make_episode_dataset`.
      batch_size: images per batch.
      training: if True, an augmented stream reshuffled every epoch, in full
        batches only (``drop_remainder``); endless unless `num_epochs` is
        set, so pass ``steps_per_epoch`` (the dataset's attribute) to
        ``fit``. If False, one pass in split order with the evaluation
        transform, the last batch possibly smaller.
      num_epochs: passes over the split when `training`; None: endless.

    Returns:
      A `tf.data.Dataset` of ``(images, labels)``: float32 ``[B, S, S, 3]``
      and int32 ``[B]`` in ``0 .. num_classes-1``. The returned object also
      carries the Python attributes ``num_classes``, ``class_names``,
      ``num_images`` and ``steps_per_epoch`` (batches per pass), which
      further `tf.data` transformations do not keep.
    """
    check_integer("batch_size", batch_size, minimum=1)
    check_integer("image_size", image_size, minimum=1)
    check_integer("seed", seed, minimum=0, maximum=MAX_SEED)
    if num_epochs is not None:
        check_integer("num_epochs", num_epochs, minimum=1)
        if not training:
            raise ValueError("`num_epochs` applies to training streams; with training=False the dataset is one pass.")
    data = prepare_split(
        name, split, data_dir,
        min_images_per_class=1,
        min_classes=1,
        on_bad_image=on_bad_image,
        options=dataset_options,
    )
    num_images = data.num_images
    if training and batch_size > num_images:
        raise ValueError(
            f"`batch_size`={batch_size} is larger than the {num_images} images of {name}/{split}; "
            "training batches are full batches."
        )

    if training:
        def epoch_order(epoch):
            return tf.random.experimental.stateless_shuffle(
                tf.range(num_images, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
            )

        epochs = tf.data.Dataset.counter() if num_epochs is None else tf.data.Dataset.range(num_epochs)
        stream = epochs.flat_map(lambda epoch: tf.data.Dataset.from_tensor_slices(epoch_order(epoch)))

        def index_at_position(position):
            return tf.gather(epoch_order(position // num_images), position % num_images)

        total = None if num_epochs is None else num_epochs * num_images
        steps_per_epoch = num_images // batch_size
    else:
        stream = tf.data.Dataset.range(num_images)
        index_at_position = tf.identity
        total = num_images
        steps_per_epoch = math.ceil(num_images / batch_size)

    batches = preprocessed_batches(
        data,
        stream.enumerate(),
        index_at_position=index_at_position,
        batch_size=batch_size,
        image_size=image_size,
        training=training,
        seed=seed,
        total=total,
        drop_remainder=training,
    )
    labels = tf.constant(data.labels)
    dataset = batches.map(
        lambda images, indices: (images, tf.gather(labels, indices)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    dataset = dataset.with_options(pipeline_options()).prefetch(tf.data.AUTOTUNE)
    dataset.num_classes = data.num_classes
    dataset.class_names = data.class_names
    dataset.num_images = num_images
    dataset.steps_per_epoch = steps_per_epoch
    return dataset
