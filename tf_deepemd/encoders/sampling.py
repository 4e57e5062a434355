"""Sampling region encoder: random resized crops as nodes (docs/method.md, "Region encoders")."""

import keras
import tensorflow as tf

from tf_deepemd.encoders.crop_encoder import CropEncoder
from tf_deepemd.ops.crops import random_resized_crop_boxes

# torchvision RandomResizedCrop draws up to 10 (area, aspect) candidates.
_ATTEMPTS = 10


@keras.saving.register_keras_serializable(package="tf_deepemd")
class SamplingEncoder(CropEncoder):
    """``num_patches`` random resized crops per image, one node each.

    Crops follow torchvision's ``RandomResizedCrop`` (``scale``, ``ratio``)
    plus a random horizontal flip, at training AND inference, as the
    official loaders do. The randomness differs by mode:

    * training: a stateful stream (``keras.random.SeedGenerator(seed)``),
      new crops every call;
    * inference: stateless, seeded by ``(seed, call_seed)``, so the same
      images, ``seed`` and ``call_seed`` give the same nodes. Pass e.g. the
      episode index as ``call_seed`` to vary crops between episodes
      reproducibly (the official evaluation is simply unseeded).

    Args:
      backbone: layer/model ``[B, h_c, w_c, 3] -> [B, h, w, C]``.
      num_patches: crops per image (9 officially); may differ between a
        training and an evaluation encoder sharing the backbone.
      scale: crop area range as a fraction of the image.
      ratio: crop aspect range (width / height).
      random_flip: flip each crop with probability 1/2.
      crop_size: crop resolution (official: 84); ``None`` = image size.
      seed: int seed of both streams.

    Input: images ``[B, H, W, 3]``. Output: nodes ``[B, num_patches, C]``.
    """

    def __init__(
        self,
        backbone,
        num_patches=9,
        scale=(0.08, 1.0),
        ratio=(3.0 / 4.0, 4.0 / 3.0),
        random_flip=True,
        crop_size=None,
        seed=0,
        **kwargs,
    ):
        super().__init__(backbone, crop_size=crop_size, **kwargs)
        if int(num_patches) < 1:
            raise ValueError(f"`num_patches` must be >= 1, got {num_patches}.")
        scale = tuple(float(s) for s in scale)
        ratio = tuple(float(r) for r in ratio)
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"`scale` must be 0 < min <= max, got {scale}.")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"`ratio` must be 0 < min <= max, got {ratio}.")
        self._num_patches = int(num_patches)
        self.scale = scale
        self.ratio = ratio
        self.random_flip = bool(random_flip)
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    @property
    def num_patches(self):
        return self._num_patches

    def crop_boxes(self, images, training, seed=None):
        """Pixel boxes ``[B, P, 4]`` and flips ``[B, P]`` (or None)."""
        shape = tf.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        # One draw per call: 4 numbers per attempt, then one for the flip.
        draw_shape = tf.stack([batch, self.num_patches, 4 * _ATTEMPTS + 1])
        if training:
            u = keras.random.uniform(draw_shape, seed=self.seed_generator, dtype="float64")
        else:
            call_seed = tf.cast(0 if seed is None else seed, tf.int64)
            u = tf.random.stateless_uniform(
                draw_shape,
                seed=tf.stack([tf.constant(self.seed, tf.int64), call_seed]),
                dtype=tf.float64,
            )
        attempts = tf.reshape(
            u[..., : 4 * _ATTEMPTS], tf.stack([batch, self.num_patches, _ATTEMPTS, 4])
        )
        boxes = random_resized_crop_boxes(attempts, height, width, self.scale, self.ratio)
        flip = u[..., -1] < 0.5 if self.random_flip else None
        return boxes, flip

    def call(self, images, training=False, call_seed=None):
        self._check_images(images)
        boxes, flip = self.crop_boxes(images, training, seed=call_seed)
        return self._encode_crops(images, boxes, flip, training)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_patches=self.num_patches,
            scale=list(self.scale),
            ratio=list(self.ratio),
            random_flip=self.random_flip,
            seed=self.seed,
        )
        return config
