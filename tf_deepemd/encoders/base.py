"""Common base of the region encoders: a backbone plus how to make nodes."""

import keras

from tf_deepemd.ops.checks import check_image_shape, check_images


class RegionEncoder(keras.layers.Layer):
    """Images ``[B, H, W, 3]`` -> node features ``[B, K, C]``.

    Subclasses decide which regions become nodes. The backbone (any Keras
    layer or model mapping ``[B, H, W, 3]`` to ``[B, h, w, C]``) is a
    tracked sublayer, so its weights train, save and load with the encoder,
    and it is (de)serialized inside the encoder's config.
    """

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(backbone, keras.layers.Layer):
            raise ValueError(
                f"`backbone` must be a Keras layer or model, got {type(backbone).__name__}."
            )
        self.backbone = backbone

    def _check_input_shape(self, input_shape):
        return check_image_shape(input_shape)

    def _build_backbone(self, backbone_input_shape):
        if not self.backbone.built:
            self.backbone.build(backbone_input_shape)

    def _check_images(self, images):
        check_images(images)

    def get_config(self):
        config = super().get_config()
        config["backbone"] = keras.saving.serialize_keras_object(self.backbone)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
