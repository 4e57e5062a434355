"""The models by name: `make_model` (a `DeepEMD` episode model), `make_pretrain_model`."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Union

import keras

from tf_deepemd.backbones.registry import make_backbone
from tf_deepemd.encoders import FCNEncoder, GridEncoder, SamplingEncoder
from tf_deepemd.layers.baselines import CosineHead, ProtoNetHead
from tf_deepemd.layers.deepemd_head import DeepEMDHead
from tf_deepemd.layers.prototypes import ClassMeanPrototypes
from tf_deepemd.layers.sfc import SFC
from tf_deepemd.models.deepemd import DeepEMD
from tf_deepemd.models.pretrain import PretrainClassifier

ENCODERS = {"fcn": FCNEncoder, "grid": GridEncoder, "sampling": SamplingEncoder}
HEADS = {"deepemd": DeepEMDHead, "protonet": ProtoNetHead, "cosine": CosineHead}
PROTOTYPES = {"sfc": SFC, "mean": ClassMeanPrototypes}

#: A layer given by name (a key of the tables above) or as a layer.
LayerChoice = Union[str, keras.layers.Layer]
#: ``(layer_class, *args, **options) -> layer``.
LayerBuilder = Callable[..., keras.layers.Layer]


def _construct(layer_class, *args, **options):
    return layer_class(*args, **options)


def _layer(argument, choice, table, build_layer, *args, **options):
    """``choice`` if it is a layer, else ``table[choice]`` built with ``options``."""
    if isinstance(choice, keras.layers.Layer):
        if options:
            raise ValueError(
                f"Options {sorted(options)} apply to a `{argument}` given by name, not to a "
                f"{type(choice).__name__} layer."
            )
        return choice
    if choice not in table:
        raise ValueError(f"Unknown make_model.{argument} {choice!r}; available: {sorted(table)}.")
    return build_layer(table[choice], *args, **options)


def _backbone(backbone, backbone_options):
    if isinstance(backbone, keras.layers.Layer):
        if backbone_options:
            raise ValueError("`backbone_options` only apply to a backbone given by name.")
        return backbone
    return make_backbone(backbone, **(backbone_options or {}))


def make_encoder(encoder: LayerChoice = "fcn", backbone: LayerChoice = "resnet12", *,
                 backbone_options: Optional[Mapping[str, Any]] = None,
                 build_layer: LayerBuilder = _construct, **encoder_options: Any) -> keras.layers.Layer:
    """A region encoder by name.

    Args:
      encoder: ``'fcn'``, ``'grid'`` or ``'sampling'``.
      backbone: a registered backbone name (``make_backbone``) or a Keras
        layer to share (e.g. a pre-trained one).
      backbone_options: constructor arguments of a named backbone.
      build_layer: ``(layer_class, *args, **options) -> layer``, how a layer
        named here is constructed (see `make_model`).
      **encoder_options: constructor arguments of the encoder (e.g.
        ``feature_pyramid``, ``patch_list``, ``num_patches``).
    """
    return _layer(
        "encoder", encoder, ENCODERS, build_layer, _backbone(backbone, backbone_options),
        **encoder_options,
    )


def make_model(
    backbone: LayerChoice = "resnet12",
    encoder: LayerChoice = "fcn",
    head: LayerChoice = "deepemd",
    prototypes: Optional[LayerChoice] = None,
    *,
    way: Optional[int] = None,
    backbone_options: Optional[Mapping[str, Any]] = None,
    encoder_options: Optional[Mapping[str, Any]] = None,
    build_layer: LayerBuilder = _construct,
    **head_options: Any,
) -> DeepEMD:
    """A `DeepEMD` episode model from names or layers.

    Args:
      backbone: backbone name (``'resnet12'``, ``'resnet12_small'``,
        ``'conv4'``) or a Keras layer to share.
      encoder: ``'fcn'``, ``'grid'``, ``'sampling'``, or an encoder layer
        (then ``backbone`` arguments are ignored).
      head: ``'deepemd'`` (`DeepEMDHead`), ``'protonet'``, ``'cosine'``, or a
        head layer.
      prototypes: ``'sfc'`` (`SFC`), ``'mean'`` (`ClassMeanPrototypes`), a
        prototype layer, or None: SFC for a `DeepEMDHead` (the official
        k-shot method), the class mean for other heads.
      way: `DeepEMD`'s fixed way (None: per episode).
      backbone_options, encoder_options: constructor arguments of a
        backbone or encoder given by name.
      build_layer: ``(layer_class, *args, **options) -> layer``, how the
        encoder, head and prototype layers given by name are constructed;
        the tools pass gin's configurable constructors, so that bindings
        such as ``SFC.learning_rate = 100.0`` apply.
      **head_options: constructor arguments of a head given by name, e.g.
        ``node_weights='uniform'``, ``gradient_mode='kkt'``, ``temperature``.

    Example:

    >>> import tf_deepemd
    >>> model = tf_deepemd.make_model("conv4", "grid", "deepemd", node_weights="uniform")
    >>> type(model.encoder).__name__, model.head.node_weights, type(model.prototypes).__name__
    ('GridEncoder', 'uniform', 'SFC')
    >>> type(tf_deepemd.make_model("conv4", head="protonet").prototypes).__name__
    'ClassMeanPrototypes'
    """
    if not isinstance(encoder, keras.layers.Layer):
        encoder = make_encoder(encoder, backbone, backbone_options=backbone_options,
                               build_layer=build_layer, **(encoder_options or {}))
    head = _layer("head", head, HEADS, build_layer, **head_options)
    if prototypes is None:
        prototypes = "sfc" if isinstance(head, DeepEMDHead) else "mean"
    prototypes = _layer("prototypes", prototypes, PROTOTYPES, build_layer)
    return DeepEMD(encoder, head, prototypes, way=way)


def make_pretrain_model(backbone: LayerChoice = "resnet12", num_classes: int = 64, *,
                        backbone_options: Optional[Mapping[str, Any]] = None) -> PretrainClassifier:
    """A `PretrainClassifier`; pass ``model.backbone`` to share a DeepEMD model's."""
    return PretrainClassifier(_backbone(backbone, backbone_options), num_classes)
