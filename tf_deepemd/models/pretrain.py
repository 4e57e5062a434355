"""`PretrainClassifier`: the pre-training model (backbone + GAP + linear)."""

import keras

from tf_deepemd.ops.checks import check_images


@keras.saving.register_keras_serializable(package="tf_deepemd")
class PretrainClassifier(keras.Model):
    """Standard classifier over the base classes (docs/method.md, "Protocol").

    ``call(images [B, H, W, 3]) -> logits [B, num_classes]``: the backbone's
    feature map, global average pooling, one Dense layer with bias (the
    official 'pre_train' mode: ``fc(adaptive_avg_pool2d(encode(x), 1))``).
    Pass the SAME backbone object to a `DeepEMD` model's encoder (e.g.
    ``PretrainClassifier(model.backbone, 64)``) and pre-training trains the
    backbone the episodes use; the Dense layer is discarded afterwards.

    Args:
      backbone: layer/model ``[B, H, W, 3] -> [B, h, w, C]``.
      num_classes: number of base classes (64 for mini-ImageNet).
    """

    def __init__(self, backbone: keras.layers.Layer, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(backbone, keras.layers.Layer):
            raise ValueError(
                f"`backbone` must be a Keras layer or model, got {type(backbone).__name__}."
            )
        if int(num_classes) < 1:
            raise ValueError(f"`num_classes` must be >= 1, got {num_classes}.")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.classifier = keras.layers.Dense(self.num_classes, name="classifier")

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 4:
            raise ValueError(
                f"`images` must have rank 4 ([batch, height, width, channels]), got shape {shape}."
            )
        if not self.backbone.built:
            self.backbone.build(shape)
        channels = self.backbone.compute_output_shape(shape)[-1]
        self.classifier.build((None, channels))
        self.built = True

    def call(self, images, training=False):
        check_images(images)
        features = self.backbone(images, training=training)
        return self.classifier(self.pool(features))

    def compute_output_shape(self, input_shape):
        return (tuple(input_shape)[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            num_classes=self.num_classes,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
