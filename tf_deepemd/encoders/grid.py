"""Grid region encoder: an image pyramid of enlarged grid cells (docs/method.md, "Region encoders")."""

import keras
import tensorflow as tf

from tf_deepemd.encoders.crop_encoder import CropEncoder
from tf_deepemd.ops.crops import grid_boxes


@keras.saving.register_keras_serializable(package="tf_deepemd")
class GridEncoder(CropEncoder):
    """One node per grid cell, over several grid levels.

    For each ``n`` in ``patch_list`` the image is split into an ``n x n``
    grid whose cells are enlarged around their centres by a context ratio
    (exact integer arithmetic in `tf_deepemd.ops.crops.grid_intervals`);
    patches are row-major and levels concatenated, so ``(2, 3)`` gives
    4 + 9 = 13 nodes. The ratio is ``patch_ratio`` at inference and uniform
    in ``train_ratio_range`` per image and level in training, where each
    crop is also flipped horizontally with probability 1/2 (``random_flip``).

    Args:
      backbone: layer/model ``[B, h_c, w_c, 3] -> [B, h, w, C]``.
      patch_list: grid sizes, e.g. ``(2, 3)``.
      patch_ratio: inference context ratio (2 officially).
      train_ratio_range: ``(low, high)`` of the training ratio ([1, 3)).
      random_flip: flip crops at random in training.
      crop_size: crop resolution (official: 84); ``None`` = image size.
      seed: int seed of the training random stream.

    Input: images ``[B, H, W, 3]``. Output: nodes ``[B, sum(n**2), C]``.
    """

    def __init__(
        self,
        backbone,
        patch_list=(2, 3),
        patch_ratio=2.0,
        train_ratio_range=(1.0, 3.0),
        random_flip=True,
        crop_size=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(backbone, crop_size=crop_size, **kwargs)
        patch_list = tuple(int(n) for n in patch_list)
        if not patch_list or min(patch_list) < 1:
            raise ValueError(f"`patch_list` must be positive ints, got {patch_list}.")
        if float(patch_ratio) <= 0:
            raise ValueError(f"`patch_ratio` must be > 0, got {patch_ratio}.")
        low, high = (float(r) for r in train_ratio_range)
        if not 0 < low <= high:
            raise ValueError(
                f"`train_ratio_range` must be 0 < low <= high, got {train_ratio_range}."
            )
        self.patch_list = patch_list
        self.patch_ratio = float(patch_ratio)
        self.train_ratio_range = (low, high)
        self.random_flip = bool(random_flip)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def num_patches(self):
        return sum(n * n for n in self.patch_list)

    def crop_boxes(self, images, training, seed=None):
        """Pixel boxes ``[B, P, 4]`` and flips ``[B, P]`` (None at inference)."""
        shape = tf.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        levels = len(self.patch_list)
        flip = None
        if training:
            # One draw per call: ratios for each (image, level), then flips.
            u = keras.random.uniform(
                tf.stack([batch, levels + self.num_patches]),
                seed=self.seed_generator,
                dtype="float64",
            )
            low, high = self.train_ratio_range
            ratios = low + (high - low) * u[:, :levels]  # [B, L]
            if self.random_flip:
                flip = u[:, levels:] < 0.5
        else:
            ratios = tf.fill(tf.stack([batch, levels]), tf.constant(self.patch_ratio, tf.float64))
        boxes = [
            grid_boxes(height, width, n, ratios[:, i]) for i, n in enumerate(self.patch_list)
        ]
        return tf.concat(boxes, axis=1), flip

    def get_config(self):
        config = super().get_config()
        config.update(
            patch_list=list(self.patch_list),
            patch_ratio=self.patch_ratio,
            train_ratio_range=list(self.train_ratio_range),
            random_flip=self.random_flip,
            seed=self.seed,
        )
        return config
