"""DropBlock (Ghiasi et al., NeurIPS 2018) for NHWC feature maps."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tf_deepemd")
class DropBlock2D(keras.layers.Layer):
    """Drops contiguous ``block_size x block_size`` squares of a feature map.

    Seeds are drawn only where a whole block fits, with the seed rate
    ``gamma`` chosen so that about ``rate`` of the units are dropped; the
    kept units are rescaled by the inverse of the kept fraction (as in
    dropout). Identity at inference.

    The official DeepEMD ResNet-12 stores DropBlock arguments but never
    applies them (docs/method.md, "Backbone"), so it is off by default everywhere here.

    Args:
      rate: fraction of units to drop, in ``[0, 1)``.
      block_size: side of the dropped squares; clipped to the (static)
        feature-map size.
      seed: int seed of the layer's random stream.

    Input: float ``[B, H, W, C]``. Output: same shape and dtype.
    """

    def __init__(self, rate, block_size=5, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"`rate` must be in [0, 1), got {rate}.")
        if int(block_size) < 1:
            raise ValueError(f"`block_size` must be >= 1, got {block_size}.")
        self.rate = float(rate)
        self.block_size = int(block_size)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0.0:
            return inputs
        if inputs.shape.rank != 4:
            raise ValueError(
                f"`inputs` must have rank 4 ([B, H, W, C]), got shape {inputs.shape}."
            )
        block = self.block_size
        static_hw = [d for d in inputs.shape[1:3] if d is not None]
        if static_hw:
            block = min(block, *static_hw)
        shape = tf.shape(inputs)
        height, width = shape[1], shape[2]
        h = tf.cast(height, tf.float32)
        w = tf.cast(width, tf.float32)
        b = float(block)
        # Seed rate such that the expected dropped fraction equals `rate`.
        gamma = self.rate / b**2 * h * w / ((h - b + 1.0) * (w - b + 1.0))
        rows = tf.range(height)[:, None]
        cols = tf.range(width)[None, :]
        half, rest = block // 2, (block - 1) // 2
        valid = (
            (rows >= half) & (rows < height - rest) & (cols >= half) & (cols < width - rest)
        )
        noise = keras.random.uniform(shape, seed=self.seed_generator, dtype="float32")
        seeds = tf.logical_and(noise < gamma, valid[None, :, :, None])
        dropped = tf.nn.max_pool2d(
            tf.cast(seeds, tf.float32), ksize=block, strides=1, padding="SAME"
        )
        keep = 1.0 - dropped
        kept_fraction = tf.reduce_sum(keep) / tf.cast(tf.size(keep), tf.float32)
        scale = keep / tf.maximum(kept_fraction, 1e-6)
        return inputs * tf.cast(scale, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, block_size=self.block_size, seed=self.seed)
        return config
