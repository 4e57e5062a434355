"""Conv-4: the small CPU backbone (4 x [conv3x3 -> BN -> ReLU (-> pool)])."""

import keras
import tensorflow as tf

from tf_deepemd.backbones.resnet12 import batch_norm, kaiming_fan_out
from tf_deepemd.ops.checks import check_image_shape, check_images


@keras.saving.register_keras_serializable(package="tf_deepemd")
class Conv4(keras.Model):
    """The classic few-shot Conv-4, with a configurable number of pools.

    With the default 3 pools (not the usual 4) a 32x32 image keeps a 4x4
    spatial map (32 -> 16 -> 8 -> 4 -> 4), i.e. 16 nodes for DeepEMD's FCN
    encoder, which is what makes EMD matching meaningful at CPU scale.
    Pools are applied by the FIRST ``num_pools`` blocks (cheapest).

    Args:
      widths: channels of the four blocks.
      num_pools: how many blocks end with a 2x2/2 max-pool (0..4).

    Input: float images ``[B, H, W, 3]``.
    Output: ``[B, H / 2**num_pools, W / 2**num_pools, widths[-1]]`` (floor).
    """

    def __init__(self, widths=(64, 64, 64, 64), num_pools=3, **kwargs):
        super().__init__(**kwargs)
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1:
            raise ValueError(f"`widths` must be positive ints, got {widths}.")
        if not 0 <= int(num_pools) <= len(widths):
            raise ValueError(
                f"`num_pools` must be in [0, {len(widths)}], got {num_pools}."
            )
        self.widths = widths
        self.num_pools = int(num_pools)
        self.convs = [
            keras.layers.Conv2D(
                w,
                3,
                padding="same",
                use_bias=False,  # BN follows; a bias would be redundant.
                kernel_initializer=kaiming_fan_out(),
                name=f"conv{i + 1}",
            )
            for i, w in enumerate(widths)
        ]
        self.bns = [batch_norm(f"bn{i + 1}") for i in range(len(widths))]
        self.max_pool = keras.layers.MaxPooling2D(2, strides=2, padding="valid")

    def build(self, input_shape):
        shape = check_image_shape(input_shape)
        for conv, bn in zip(self.convs, self.bns):
            conv.build(shape)
            shape = shape[:-1] + (conv.filters,)
            bn.build(shape)
        self.built = True

    def call(self, images, training=False):
        check_images(images)
        x = images
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            x = tf.nn.relu(bn(conv(x), training=training))
            if i < self.num_pools:
                x = self.max_pool(x)
        return x

    def compute_output_shape(self, input_shape):
        batch, height, width = tuple(input_shape)[:3]
        for _ in range(self.num_pools):
            height = None if height is None else height // 2
            width = None if width is None else width // 2
        return (batch, height, width, self.widths[-1])

    def get_config(self):
        config = super().get_config()
        config.update(widths=list(self.widths), num_pools=self.num_pools)
        return config
