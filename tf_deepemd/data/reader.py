"""From a stream of image indices to batches of preprocessed images.

Shared by the episode and pre-training pipelines. The input is a
`tf.data.Dataset` of ``(position, index)`` int64 pairs, where ``position``
counts the stream from 0 and ``index`` points into an `ImageSplit`. Each image
is loaded (file: `tf.io.read_file` + `tf.io.decode_image`; in memory: a
gather from the uint8 array), transformed (`preprocessing.preprocess_image`,
augmentation seeded by ``(seed, position)``) in parallel, and batched in
stream order.

A file that cannot be read or decoded must never go unnoticed nor shift a
label: the decode errors are dropped with `ignore_errors`, and each batch then
checks that it holds exactly the expected consecutive positions. The first
missing position names the file, through `index_at_position`, in an
`InvalidArgumentError`.
"""

from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf

from tf_deepemd.data.image_split import ImageSplit
from tf_deepemd.data.preprocessing import decode_image_file, preprocess_image

BAD_IMAGE_MESSAGE = (
    "Could not read or decode this image file (missing, unreadable or corrupt). "
    "Fix or remove it, or pass on_bad_image='skip' to leave out such files:"
)


def pipeline_options() -> tf.data.Options:
    """The options of the library's pipelines: deterministic order, no autotuning.

    Deleting an autotuned iterator waits for tf.data's tuning thread, which
    may first sleep out its optimisation period (up to a minute): 16-53 s of
    nothing after the last test episode in about one run in three on 2 cores,
    and after the last step of a stage (the end of `fit`). Untuned, parallel
    maps run one call per core (at most 16) and prefetch buffers still adapt;
    decoding keeps ahead of the model.
    """
    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = False
    return options


def preprocessed_batches(
    split: ImageSplit,
    stream: tf.data.Dataset,
    index_at_position: Callable[[tf.Tensor], tf.Tensor],
    batch_size: int,
    image_size: int,
    training: bool,
    seed: int,
    total: Optional[int],
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Loads, transforms and batches a stream of images.

    Args:
      split: where the indices point.
      stream: dataset of ``(position, index)`` int64 scalars, positions
        ``0, 1, 2, ...`` in order.
      index_at_position: graph function int64 position -> int64 index, the
        inverse of the stream, used only to name a file that failed.
      batch_size: images per batch.
      image_size: output side of each image.
      training: augment (True) or evaluation transform (False).
      seed: the augmentation of position ``p`` is keyed by ``(seed, p)``.
      total: number of elements of a finite stream, None if endless.
      drop_remainder: drop a final batch smaller than `batch_size`.

    Returns:
      A dataset of ``(images, indices)``: float32 ``[B, S, S, 3]`` and int64
      ``[B]``, ``B = batch_size`` except for a final partial batch (the
      static shape is set when every batch is full).
    """
    if split.in_memory:
        all_images = tf.constant(split.images)
        load = lambda index: tf.gather(all_images, index)  # noqa: E731
    else:
        paths = tf.constant(list(split.paths))
        load = lambda index: decode_image_file(tf.gather(paths, index))  # noqa: E731
    normalization = split.normalization

    def load_and_transform(position, index):
        image = preprocess_image(
            load(index),
            image_size,
            training,
            normalization,
            seed=tf.stack([tf.constant(seed, tf.int64), position]),
        )
        return position, image, index

    images = stream.map(
        load_and_transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    if split.in_memory:
        batches = images.batch(batch_size, drop_remainder=drop_remainder)
        batches = batches.map(lambda positions, images, indices: (images, indices))
    else:
        # Batch without dropping: the check must see a short final batch.
        batches = images.ignore_errors().batch(batch_size).enumerate()
        batches = batches.map(
            _checked_batch(batch_size, total, lambda p: tf.gather(paths, index_at_position(p)))
        )
        if drop_remainder:
            batches = batches.filter(lambda images, indices: tf.size(indices) == batch_size)
    if drop_remainder or (total is not None and total % batch_size == 0):
        batches = batches.map(
            lambda images, indices: (
                tf.ensure_shape(images, [batch_size, image_size, image_size, 3]),
                tf.ensure_shape(indices, [batch_size]),
            )
        )
    return batches


def _checked_batch(batch_size, total, path_at_position):
    """Batch map function that fails, naming the file, if an image was dropped."""

    def check(batch_number, batch):
        positions, images, indices = batch
        start = batch_number * batch_size
        expected_len = tf.constant(batch_size, tf.int64)
        if total is not None:
            expected_len = tf.minimum(expected_len, total - start)
        expected = start + tf.range(expected_len, dtype=tf.int64)
        padded = tf.concat([positions, tf.fill([batch_size], tf.constant(-1, tf.int64))], 0)
        mismatch = tf.not_equal(padded[:expected_len], expected)
        complete = tf.logical_not(tf.reduce_any(mismatch))
        # The name lookup may be costly (a reshuffle): only on failure.
        missing_path = tf.cond(
            complete,
            lambda: tf.constant(""),
            lambda: path_at_position(
                tf.gather(expected, tf.argmax(tf.cast(mismatch, tf.int32), output_type=tf.int32))
            ),
        )
        assertion = tf.debugging.Assert(complete, [BAD_IMAGE_MESSAGE, missing_path])
        with tf.control_dependencies([assertion]):
            return tf.identity(images), tf.identity(indices)

    return check
