"""Decoding, augmentation and normalisation of single images (docs/method.md, "Data").

* training: random resized crop with torchvision's defaults (area scale
  (0.08, 1), aspect ratio (3/4, 4/3), 10 attempts then a centre-crop
  fallback) to ``image_size``, then a random horizontal flip;
* evaluation: resize to ``round(image_size * 92 / 84)`` square (92 for 84),
  then a centre crop of ``image_size``;
* both: per-channel ``(x / 255 - mean) / std``.

All randomness uses stateless ops keyed by an explicit ``[2]`` int seed, so
an augmented image is a pure function of (image, seed): a training run is
reproducible, whatever the parallelism of the pipeline.
"""

from __future__ import annotations

import math

import tensorflow as tf

from tf_deepemd.data.image_split import Normalization

RESIZE_RATIO = 92 / 84
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
_CROP_ATTEMPTS = 10


def decode_image_file(path: tf.Tensor) -> tf.Tensor:
    """Reads and decodes a JPEG/PNG/GIF/BMP file.

    Args:
      path: scalar string tensor.

    Returns:
      uint8 ``[H, W, 3]`` (grey or RGBA images are converted to RGB; for an
      animated GIF, the first frame).
    """
    image = tf.io.decode_image(
        tf.io.read_file(path), channels=3, expand_animations=False, dtype=tf.uint8
    )
    image.set_shape([None, None, 3])
    return image


def resize_bilinear(image: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """PIL-style bilinear resize (what torchvision's Resize uses): float32 ``[height, width, 3]``.

    Antialiased when shrinking an axis, as PIL is. When enlarging, the
    antialiased kernel equals plain bilinear interpolation (to 1e-4 on
    0-255), and plain bilinear is about 3x faster, so it is used instead.
    """
    static_height, static_width = image.shape[0], image.shape[1]
    if static_height is not None and static_width is not None:
        shrinking = static_height > height or static_width > width
        return tf.image.resize(image, [height, width], antialias=shrinking)
    shape = tf.shape(image)
    return tf.cond(
        (shape[0] > height) | (shape[1] > width),
        lambda: tf.image.resize(image, [height, width], antialias=True),
        lambda: tf.image.resize(image, [height, width]),
    )


def eval_resize_size(image_size: int) -> int:
    """The side the evaluation transform resizes to before its centre crop."""
    return int(round(image_size * RESIZE_RATIO))


def resize_center_crop(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """Evaluation transform: square resize to `eval_resize_size`, centre crop.

    Args:
      image: uint8 or float ``[H, W, 3]``.
      image_size: output side.

    Returns:
      float32 ``[image_size, image_size, 3]`` in [0, 255].
    """
    resized_size = eval_resize_size(image_size)
    resized = resize_bilinear(image, resized_size, resized_size)
    # torchvision's CenterCrop rounds the offset half-to-even, as Python does.
    offset = int(round((resized_size - image_size) / 2.0))
    return resized[offset : offset + image_size, offset : offset + image_size, :]


def random_resized_crop_window(
    height: tf.Tensor,
    width: tf.Tensor,
    seed: tf.Tensor,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """torchvision's `RandomResizedCrop.get_params`, with stateless randomness.

    Ten candidate windows of area ``uniform(*scale) * H * W`` and aspect ratio
    ``exp(uniform(log ratio))`` are drawn; the first that fits is placed
    uniformly at random. If none fits, the whole image is cropped to the
    nearest allowed aspect ratio, centred.

    Args:
      height, width: int32 scalars, image size.
      seed: int ``[2]``.
      scale, ratio: ranges of area fraction and aspect ratio (width / height).

    Returns:
      (top, left, crop_height, crop_width), int32 scalars.
    """
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    area_seed, ratio_seed, offset_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=3)
    )
    height_f = tf.cast(height, tf.float32)
    width_f = tf.cast(width, tf.float32)
    target_area = height_f * width_f * tf.random.stateless_uniform(
        [_CROP_ATTEMPTS], area_seed, minval=scale[0], maxval=scale[1]
    )
    aspect = tf.exp(
        tf.random.stateless_uniform(
            [_CROP_ATTEMPTS], ratio_seed, minval=math.log(ratio[0]), maxval=math.log(ratio[1])
        )
    )
    # tf.round rounds half to even, like Python's round() in torchvision.
    crop_widths = tf.cast(tf.round(tf.sqrt(target_area * aspect)), tf.int32)
    crop_heights = tf.cast(tf.round(tf.sqrt(target_area / aspect)), tf.int32)
    fits = (crop_widths > 0) & (crop_widths <= width) & (crop_heights > 0) & (crop_heights <= height)
    first_fit = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    any_fit = tf.reduce_any(fits)

    # Fallback: the whole image, trimmed to the nearest allowed aspect ratio.
    image_ratio = width_f / height_f
    fallback_width = tf.where(
        image_ratio > ratio[1], tf.cast(tf.round(height_f * ratio[1]), tf.int32), width
    )
    fallback_height = tf.where(
        image_ratio < ratio[0], tf.cast(tf.round(width_f / ratio[0]), tf.int32), height
    )

    crop_height = tf.where(any_fit, crop_heights[first_fit], fallback_height)
    crop_width = tf.where(any_fit, crop_widths[first_fit], fallback_width)
    # torchvision: randint(0, H - h + 1), i.e. uniform over all valid offsets.
    top_left_fraction = tf.random.stateless_uniform([2], offset_seed)
    random_top = tf.cast(
        tf.floor(top_left_fraction[0] * tf.cast(height - crop_height + 1, tf.float32)), tf.int32
    )
    random_left = tf.cast(
        tf.floor(top_left_fraction[1] * tf.cast(width - crop_width + 1, tf.float32)), tf.int32
    )
    top = tf.where(any_fit, tf.minimum(random_top, height - crop_height), (height - crop_height) // 2)
    left = tf.where(any_fit, tf.minimum(random_left, width - crop_width), (width - crop_width) // 2)
    return top, left, crop_height, crop_width


def random_resized_crop_flip(image: tf.Tensor, image_size: int, seed: tf.Tensor) -> tf.Tensor:
    """Training transform: random resized crop then random horizontal flip.

    Args:
      image: uint8 or float ``[H, W, 3]``.
      image_size: output side.
      seed: int ``[2]``.

    Returns:
      float32 ``[image_size, image_size, 3]`` in [0, 255].
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    shape = tf.shape(image)
    top, left, crop_height, crop_width = random_resized_crop_window(shape[0], shape[1], crop_seed)
    crop = tf.slice(image, tf.stack([top, left, 0]), tf.stack([crop_height, crop_width, 3]))
    resized = resize_bilinear(crop, image_size, image_size)
    return tf.image.stateless_random_flip_left_right(resized, flip_seed)


def normalize(image: tf.Tensor, normalization: Normalization) -> tf.Tensor:
    """float32 ``(image / 255 - mean) / std`` per channel; `image` in [0, 255]."""
    mean, std = normalization
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def preprocess_image(
    image: tf.Tensor,
    image_size: int,
    training: bool,
    normalization: Normalization,
    seed: tf.Tensor | None = None,
) -> tf.Tensor:
    """Full per-image transform (docs/method.md, "Data").

    Args:
      image: uint8 ``[H, W, 3]``.
      image_size: output side.
      training: random resized crop + flip if True, resize + centre crop if
        False.
      normalization: ``(mean, std)`` in [0, 1] units.
      seed: int ``[2]``; required if `training`.

    Returns:
      float32 ``[image_size, image_size, 3]``, normalised.
    """
    if training:
        if seed is None:
            raise ValueError("`seed` is required when `training` is True.")
        image = random_resized_crop_flip(image, image_size, seed)
    else:
        image = resize_center_crop(image, image_size)
    image = normalize(image, normalization)
    image.set_shape([image_size, image_size, 3])
    return image
