"""Base of the patch encoders: image crops -> backbone -> one node per crop."""

import tensorflow as tf

from tf_deepemd.encoders.base import RegionEncoder
from tf_deepemd.ops.crops import crop_and_resize_boxes


class CropEncoder(RegionEncoder):
    """Runs every crop of every image through the backbone in ONE batch.

    Subclasses define the crops (`crop_boxes`) and their number
    (`num_patches`). Each crop is resized to ``crop_size`` and its feature
    map is globally average-pooled to one node (official `encode`, 5-D
    input branch).

    Args:
      backbone: layer/model ``[B, h_c, w_c, 3] -> [B, h, w, C]``.
      crop_size: int or ``(h, w)`` crop resolution; ``None`` keeps the
        input image size (needs static image sizes).

    Input: images ``[B, H, W, 3]``. Output: nodes ``[B, P, C]``.
    """

    def __init__(self, backbone, crop_size=None, **kwargs):
        super().__init__(backbone, **kwargs)
        if crop_size is not None:
            crop_size = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
            crop_size = tuple(int(s) for s in crop_size)
            if len(crop_size) != 2 or min(crop_size) < 1:
                raise ValueError(f"`crop_size` must be a positive int or pair, got {crop_size}.")
        self.crop_size = crop_size

    @property
    def num_patches(self):
        raise NotImplementedError

    def crop_boxes(self, images, training, seed=None):
        """Returns (int ``[B, P, 4]`` pixel boxes, bool ``[B, P]`` flips or None)."""
        raise NotImplementedError

    def _crop_shape(self, image_shape):
        if self.crop_size is not None:
            return self.crop_size
        height, width = tuple(image_shape)[1:3]
        if height is None or width is None:
            raise ValueError(
                "`crop_size` is required when the image size is not static, got "
                f"image shape {tuple(image_shape)}."
            )
        return (int(height), int(width))

    def build(self, input_shape):
        shape = self._check_input_shape(input_shape)
        self._build_backbone((None,) + self._crop_shape(shape) + (shape[-1],))
        self.built = True

    def _encode_crops(self, images, boxes, flip, training):
        crops = crop_and_resize_boxes(images, boxes, self._crop_shape(images.shape), flip)
        feature_map = self.backbone(crops, training=training)  # [B * P, h, w, C]
        nodes = tf.reduce_mean(feature_map, axis=[1, 2])
        channels = nodes.shape[-1] if nodes.shape[-1] is not None else tf.shape(nodes)[-1]
        return tf.reshape(nodes, [tf.shape(images)[0], self.num_patches, channels])

    def call(self, images, training=False):
        self._check_images(images)
        boxes, flip = self.crop_boxes(images, training)
        return self._encode_crops(images, boxes, flip, training)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        crop_shape = (shape[0],) + self._crop_shape(shape) + (shape[-1],)
        channels = self.backbone.compute_output_shape(crop_shape)[-1]
        return (shape[0], self.num_patches, channels)

    def get_config(self):
        config = super().get_config()
        config["crop_size"] = None if self.crop_size is None else list(self.crop_size)
        return config
