"""ResNet-12 of DeepEMD (official `resnet.py`, docs/method.md, "Backbone"), NHWC."""

import keras
import tensorflow as tf

from tf_deepemd.backbones.dropblock import DropBlock2D
from tf_deepemd.ops.checks import check_image_shape, check_images


def kaiming_fan_out():
    """PyTorch ``kaiming_normal_(mode='fan_out', nonlinearity='leaky_relu')``.

    The official code passes no slope, so the gain is sqrt(2) (a = 0):
    std = sqrt(2 / (k * k * out_channels)), untruncated normal. Keras'
    `HeNormal` differs (fan_in, truncated).
    """
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


def batch_norm(name):
    # PyTorch defaults: momentum 0.1 (running = 0.9 old + 0.1 new), eps 1e-5.
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


@keras.saving.register_keras_serializable(package="tf_deepemd")
class ResNetBlock(keras.layers.Layer):
    """One ResNet-12 residual block.

    ``3 x [conv3x3 (no bias) -> BN]`` with LeakyReLU after BN1 and BN2, a
    1x1 conv + BN shortcut, add, LeakyReLU, then 2x2/2 max-pool (floor, so
    21 -> 10) and optional regularisation.

    Args:
      filters: output channels.
      pool: whether to end with the 2x2 max-pool.
      leaky_slope: negative slope of the LeakyReLUs (0.1 officially).
      drop_rate: dropout rate after the block (0 = off).
      drop_block: use `DropBlock2D` instead of plain dropout when
        ``drop_rate > 0``.
      drop_block_size: DropBlock square side.
      seed: int seed of the dropout stream.

    Input ``[B, H, W, C_in]`` -> ``[B, H', W', filters]`` with
    ``H' = floor(H / 2)`` if ``pool`` else ``H``.
    """

    def __init__(
        self,
        filters,
        pool=True,
        leaky_slope=0.1,
        drop_rate=0.0,
        drop_block=False,
        drop_block_size=5,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.pool = bool(pool)
        self.leaky_slope = float(leaky_slope)
        self.drop_rate = float(drop_rate)
        self.drop_block = bool(drop_block)
        self.drop_block_size = int(drop_block_size)
        self.seed = seed

        def conv(kernel, name):
            return keras.layers.Conv2D(
                self.filters,
                kernel,
                padding="same",
                use_bias=False,
                kernel_initializer=kaiming_fan_out(),
                name=name,
            )

        self.convs = [conv(3, f"conv{i}") for i in (1, 2, 3)]
        self.bns = [batch_norm(f"bn{i}") for i in (1, 2, 3)]
        self.shortcut_conv = conv(1, "shortcut_conv")
        self.shortcut_bn = batch_norm("shortcut_bn")
        self.max_pool = keras.layers.MaxPooling2D(2, strides=2, padding="valid")
        self.dropout = None
        if self.drop_rate > 0.0:
            if self.drop_block:
                self.dropout = DropBlock2D(self.drop_rate, self.drop_block_size, seed=seed)
            else:
                self.dropout = keras.layers.Dropout(self.drop_rate, seed=seed)

    def build(self, input_shape):
        shape = tuple(input_shape)
        out_shape = shape[:-1] + (self.filters,)
        for conv, bn in zip(self.convs, self.bns):
            conv.build(shape)
            bn.build(out_shape)
            shape = out_shape
        self.shortcut_conv.build(tuple(input_shape))
        self.shortcut_bn.build(out_shape)
        self.built = True

    def call(self, inputs, training=False):
        x = inputs
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            x = bn(conv(x), training=training)
            if i < 2:
                x = tf.nn.leaky_relu(x, alpha=self.leaky_slope)
        residual = self.shortcut_bn(self.shortcut_conv(inputs), training=training)
        x = tf.nn.leaky_relu(x + residual, alpha=self.leaky_slope)
        if self.pool:
            x = self.max_pool(x)
        if self.dropout is not None:
            x = self.dropout(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        batch, height, width = tuple(input_shape)[:3]
        if self.pool:
            height = None if height is None else height // 2
            width = None if width is None else width // 2
        return (batch, height, width, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            pool=self.pool,
            leaky_slope=self.leaky_slope,
            drop_rate=self.drop_rate,
            drop_block=self.drop_block,
            drop_block_size=self.drop_block_size,
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="tf_deepemd")
class ResNet12(keras.Model):
    """ResNet-12 feature extractor (no stem, no head).

    Four `ResNetBlock`s of widths 64-160-320-640 by default: an 84x84
    image gives a 5x5x640 map (84 -> 42 -> 21 -> 10 -> 5) and the network
    has 12,424,320 trainable parameters, as the official model.

    Args:
      widths: channels of the four blocks.
      last_pool: keep the 4th max-pool. ``False`` gives a finer map, e.g.
        ``widths=(32, 64, 96, 128), last_pool=False`` maps 32x32 to 4x4x128
        (the "resnet12_small" CPU backbone).
      leaky_slope: LeakyReLU slope.
      drop_rate: regularisation rate (0 = off, the official behaviour).
        When on, blocks 1-2 use dropout and blocks 3-4 DropBlock, the
        layout of the MetaOptNet ResNet-12 the official code derives from
        (with a constant rate; the official linear warm-up of the keep
        probability is not reproduced).
      drop_block_size: DropBlock square side (5 officially).
      seed: int seed of the dropout streams.

    Input: float images ``[B, H, W, 3]`` (already normalised).
    Output: feature map ``[B, h, w, widths[-1]]``.
    """

    def __init__(
        self,
        widths=(64, 160, 320, 640),
        last_pool=True,
        leaky_slope=0.1,
        drop_rate=0.0,
        drop_block_size=5,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"`widths` must be 4 positive ints, got {widths}.")
        self.widths = widths
        self.last_pool = bool(last_pool)
        self.leaky_slope = float(leaky_slope)
        self.drop_rate = float(drop_rate)
        self.drop_block_size = int(drop_block_size)
        self.seed = seed
        self.blocks = [
            ResNetBlock(
                width,
                pool=(i < 3 or self.last_pool),
                leaky_slope=self.leaky_slope,
                drop_rate=self.drop_rate,
                drop_block=i >= 2,
                drop_block_size=self.drop_block_size,
                seed=None if seed is None else seed + i,
                name=f"block{i + 1}",
            )
            for i, width in enumerate(widths)
        ]

    def build(self, input_shape):
        shape = check_image_shape(input_shape)
        for block in self.blocks:
            block.build(shape)
            shape = block.compute_output_shape(shape)
        self.built = True

    def call(self, images, training=False):
        check_images(images)
        x = images
        for block in self.blocks:
            x = block(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for block in self.blocks:
            shape = block.compute_output_shape(shape)
        return shape

    def get_config(self):
        config = super().get_config()
        config.update(
            widths=list(self.widths),
            last_pool=self.last_pool,
            leaky_slope=self.leaky_slope,
            drop_rate=self.drop_rate,
            drop_block_size=self.drop_block_size,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
