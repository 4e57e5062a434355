"""FCN region encoder: every position of the backbone's map is a node."""

import keras
import tensorflow as tf

from tf_deepemd.encoders.base import RegionEncoder
from tf_deepemd.ops.adaptive_pool import adaptive_avg_pool2d


@keras.saving.register_keras_serializable(package="tf_deepemd")
class FCNEncoder(RegionEncoder):
    """Nodes = positions of the dense feature map (docs/method.md, "Region encoders").

    The ``h x w`` map is flattened row-major into ``h * w`` nodes. With a
    ``feature_pyramid`` ``(s1, s2, ...)``, the map is also adaptive-average
    pooled (PyTorch bins) to each ``s x s``; those levels come first, in
    the given order, and the original map is ALWAYS appended last, so
    ``K = sum(s**2) + h * w``. As in the official code, passing the map's
    own size (e.g. ``5`` for a 5x5 map) duplicates it: the paper's
    "5,2,1" pyramid is ``feature_pyramid=(2, 1)``.

    Args:
      backbone: layer/model ``[B, H, W, 3] -> [B, h, w, C]``.
      feature_pyramid: optional sequence of positive ints.

    Input: images ``[B, H, W, 3]``. Output: nodes ``[B, K, C]``.
    """

    def __init__(self, backbone, feature_pyramid=None, **kwargs):
        super().__init__(backbone, **kwargs)
        pyramid = tuple(int(s) for s in (feature_pyramid or ()))
        if any(s < 1 for s in pyramid):
            raise ValueError(
                f"`feature_pyramid` sizes must be positive ints, got {feature_pyramid}."
            )
        self.feature_pyramid = pyramid

    def build(self, input_shape):
        self._build_backbone(self._check_input_shape(input_shape))
        self.built = True

    def call(self, images, training=False):
        self._check_images(images)
        feature_map = self.backbone(images, training=training)  # [B, h, w, C]
        shape = tf.shape(feature_map)
        channels = feature_map.shape[-1] if feature_map.shape[-1] is not None else shape[-1]
        levels = [adaptive_avg_pool2d(feature_map, s) for s in self.feature_pyramid]
        levels.append(feature_map)
        nodes = [tf.reshape(level, [shape[0], -1, channels]) for level in levels]
        return tf.concat(nodes, axis=1) if len(nodes) > 1 else nodes[0]

    def compute_output_shape(self, input_shape):
        batch, h, w, channels = self.backbone.compute_output_shape(tuple(input_shape))
        dense = None if h is None or w is None else h * w
        num_nodes = None if dense is None else dense + sum(s * s for s in self.feature_pyramid)
        return (batch, num_nodes, channels)

    def get_config(self):
        config = super().get_config()
        config["feature_pyramid"] = list(self.feature_pyramid) or None
        return config
