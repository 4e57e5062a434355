"""Plain factories for the models, by name (gin-configurable later, by the tools)."""

import keras

from tf_deepemd.backbones.registry import make_backbone
from tf_deepemd.encoders import FCNEncoder, GridEncoder, SamplingEncoder
from tf_deepemd.models.deepemd import DeepEMD
from tf_deepemd.models.pretrain import PretrainClassifier

ENCODERS = {"fcn": FCNEncoder, "grid": GridEncoder, "sampling": SamplingEncoder}


def _backbone(backbone, backbone_options):
    if isinstance(backbone, keras.layers.Layer):
        if backbone_options:
            raise ValueError("`backbone_options` only apply to a backbone given by name.")
        return backbone
    return make_backbone(backbone, **(backbone_options or {}))


def make_encoder(encoder="fcn", backbone="resnet12", *, backbone_options=None, **encoder_options):
    """A region encoder by name.

    Args:
      encoder: ``'fcn'``, ``'grid'`` or ``'sampling'``.
      backbone: a registered backbone name (``make_backbone``) or a Keras
        layer to share (e.g. a pre-trained one).
      backbone_options: constructor arguments of a named backbone.
      **encoder_options: constructor arguments of the encoder (e.g.
        ``feature_pyramid``, ``patch_list``, ``num_patches``).
    """
    if encoder not in ENCODERS:
        raise ValueError(f"Unknown encoder {encoder!r}; available: {sorted(ENCODERS)}.")
    return ENCODERS[encoder](_backbone(backbone, backbone_options), **encoder_options)


def make_model(
    backbone="resnet12",
    encoder="fcn",
    head="deepemd",
    *,
    backbone_options=None,
    encoder_options=None,
    **model_options,
):
    """A `DeepEMD` episode model.

    Args:
      backbone: backbone name (``'resnet12'``, ``'resnet12_small'``,
        ``'conv4'``) or a Keras layer to share.
      encoder: ``'fcn'``, ``'grid'``, ``'sampling'``, or a built encoder
        layer (then ``backbone`` arguments are ignored).
      head: ``'deepemd'``, ``'protonet'`` or ``'cosine'``.
      backbone_options, encoder_options: constructor arguments.
      **model_options: `DeepEMD` arguments (``way``, ``temperature``,
        ``k_shot``, ``sfc_steps``, ``sfc_lr``, ...).
    """
    if not isinstance(encoder, keras.layers.Layer):
        encoder = make_encoder(
            encoder, backbone, backbone_options=backbone_options, **(encoder_options or {})
        )
    return DeepEMD(encoder, head=head, **model_options)


def make_pretrain_model(backbone="resnet12", num_classes=64, *, backbone_options=None):
    """A `PretrainClassifier`; pass ``model.backbone`` to share a DeepEMD model's."""
    return PretrainClassifier(_backbone(backbone, backbone_options), num_classes)
