"""Loading the official DeepEMD PyTorch checkpoints (icoz69/DeepEMD ``max_acc.pth``).

The official code saves ``{'params': state_dict}`` (docs/official_weights.md) in one of
three key layouts, all accepted:

* meta-training: ``encoder.layer1.0.conv1.weight``, ...
* the same saved from ``nn.DataParallel``: ``module.encoder.layer1...``
  (the released meta-trained models);
* pre-training: ``layer1.0.conv1.weight``, ... without prefix, possibly
  with the base-class classifier ``fc.weight`` / ``fc.bias``.

The ResNet-12 tensors map onto the Keras weights of
`tf_deepemd.backbones.resnet12.ResNet12` by name: ``layerK.0.convJ`` ->
``blockK/convJ`` (kernels OIHW -> HWIO), ``layerK.0.bnJ`` -> ``blockK/bnJ``
(weight, bias, running mean and variance -> gamma, beta, moving mean and
variance; both use PyTorch's epsilon 1e-5), ``downsample.0`` / ``.1`` ->
``shortcut_conv`` / ``shortcut_bn``. ``num_batches_tracked`` has no Keras
counterpart and is skipped.
"""

from __future__ import annotations

import logging
import os
from typing import Union

import keras
import numpy as np

from tf_deepemd.backbones.resnet12 import ResNet12
from tf_deepemd.models.deepemd import DeepEMD
from tf_deepemd.models.pretrain import PretrainClassifier
from tf_deepemd.official.torch_pickle import load_pth

log = logging.getLogger(__name__)

# The image side the official models take; unbuilt models are built for it.
OFFICIAL_IMAGE_SIZE = 84
_NUM_BLOCKS = 4  # ResNet-12: four residual blocks
_KEY_PREFIXES = ("module.", "encoder.")
_CLASSIFIER_KEYS = ("fc.weight", "fc.bias")
_CONVS = {"conv1": "conv1", "conv2": "conv2", "conv3": "conv3", "downsample.0": "shortcut_conv"}
_BATCH_NORMS = {"bn1": "bn1", "bn2": "bn2", "bn3": "bn3", "downsample.1": "shortcut_bn"}
_BATCH_NORM_TENSORS = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}


def official_backbone_names():
    """Official ResNet-12 state-dict keys (no prefix) -> Keras weight names ``blockK/layer/var``."""
    names = {}
    for k in range(1, _NUM_BLOCKS + 1):
        for official, keras_layer in _CONVS.items():
            names[f"layer{k}.0.{official}.weight"] = f"block{k}/{keras_layer}/kernel"
        for official, keras_layer in _BATCH_NORMS.items():
            for tensor, variable in _BATCH_NORM_TENSORS.items():
                names[f"layer{k}.0.{official}.{tensor}"] = f"block{k}/{keras_layer}/{variable}"
    return names


def _model_parts(model):
    """``(ResNet12 backbone, Dense classifier or None)`` of a supported model, built.

    The only place that knows the model classes: a `DeepEMD` (any encoder)
    and a `PretrainClassifier` expose ``.backbone``.
    """
    size = OFFICIAL_IMAGE_SIZE
    if isinstance(model, DeepEMD):
        if not model.built:
            model.build([(None, size, size, 3), (None,), (None, size, size, 3)])
        backbone, classifier = model.backbone, None
    elif isinstance(model, PretrainClassifier):
        if not model.built:
            model.build((None, size, size, 3))
        backbone, classifier = model.backbone, model.classifier
    elif isinstance(model, ResNet12):
        backbone, classifier = model, None
    else:
        raise ValueError(
            "`model` must be a DeepEMD model, a PretrainClassifier or a ResNet12 backbone, got "
            f"{type(model).__name__}."
        )
    if not isinstance(backbone, ResNet12):
        raise ValueError(
            "The official checkpoints hold a ResNet-12: `model`'s backbone must be "
            f"tf_deepemd.backbones.resnet12.ResNet12 ('resnet12'), got {type(backbone).__name__}."
        )
    if not backbone.built:
        backbone.build((None, size, size, 3))
    return backbone, classifier


def _keras_weights(backbone):
    """``{'blockK/layer/var': variable}`` of the backbone, through its layer and weight paths."""
    weights = {}
    for k in range(1, _NUM_BLOCKS + 1):
        block = backbone.get_layer(f"block{k}")
        for variable in block.weights:
            weights["/".join([f"block{k}"] + variable.path.split("/")[-2:])] = variable
    return weights


def _state_dict(checkpoint, path):
    state = checkpoint.get("params", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, np.ndarray) for key, value in state.items()
    ):
        raise ValueError(
            f"{path} is not an official DeepEMD checkpoint: expected {{'params': state_dict}} "
            "(or a state dict) of tensors."
        )
    return state


def _bare_key(key):
    for prefix in _KEY_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _shape_error(key, stored, needed, name, layout=""):
    return ValueError(
        f"Checkpoint tensor {key!r} has shape {stored}, but the model's {name} needs "
        f"{needed}{layout}."
    )


def _match_backbone(state, weights, path):
    """``[(checkpoint key, variable, value)]`` for every backbone weight, all checked."""
    names = official_backbone_names()
    if set(names.values()) != set(weights):
        raise ValueError(
            "The model's ResNet-12 weights do not match the official layout: "
            f"{sorted(set(names.values()) ^ set(weights))}."
        )
    by_bare_key = {}
    for key in state:
        bare = _bare_key(key)
        if bare.endswith(".num_batches_tracked") or bare in _CLASSIFIER_KEYS:
            continue
        if bare not in names:
            raise ValueError(
                f"Unexpected checkpoint tensor {key!r} of shape {state[key].shape}: no weight of "
                "the model's ResNet-12 corresponds to it (official keys are like "
                "'layer1.0.conv1.weight', optionally prefixed by 'encoder.' or "
                "'module.encoder.')."
            )
        if bare in by_bare_key:
            raise ValueError(
                f"Checkpoint tensors {by_bare_key[bare]!r} and {key!r} both map to the model's "
                f"{names[bare]}."
            )
        by_bare_key[bare] = key
    prefixes = {key[: len(key) - len(bare)] for bare, key in by_bare_key.items()}
    prefix = prefixes.pop() if len(prefixes) == 1 else ""
    matched = []
    for bare, name in names.items():
        variable = weights[name]
        if bare not in by_bare_key:
            raise ValueError(
                f"Checkpoint {path} lacks the tensor {prefix + bare!r} for the model's {name} "
                f"of shape {tuple(variable.shape)}."
            )
        key = by_bare_key[bare]
        value = state[key]
        if name.endswith("/kernel"):
            height, width, inputs, outputs = variable.shape
            needed_oihw = (outputs, inputs, height, width)
            if value.shape != needed_oihw:
                raise _shape_error(
                    key, value.shape, needed_oihw, name,
                    f" (OIHW; the Keras kernel is HWIO {tuple(variable.shape)})",
                )
            value = value.transpose(2, 3, 1, 0)
        elif value.shape != tuple(variable.shape):
            raise _shape_error(key, value.shape, tuple(variable.shape), name)
        matched.append((key, variable, value))
    return matched


def _match_classifier(state, classifier, path):
    """``[(key, variable, value)]`` for the Dense classifier from ``fc.*``, or []."""
    keys = {_bare_key(key): key for key in state if _bare_key(key) in _CLASSIFIER_KEYS}
    if not keys:
        if classifier is not None:
            log.warning(
                "%s holds no classifier (fc.weight / fc.bias; official pre-training does not save "
                "it): only the backbone was loaded, the classifier keeps its weights.", path,
            )
        return []
    if classifier is None:
        log.info("%s: %s ignored (the model has no base-class classifier).", path, sorted(keys.values()))
        return []
    missing = [key for key in _CLASSIFIER_KEYS if key not in keys]
    if missing:
        raise ValueError(
            f"Checkpoint {path} has {sorted(keys.values())} but lacks {missing[0]!r} for the "
            "classifier."
        )
    weight, bias = state[keys["fc.weight"]], state[keys["fc.bias"]]
    kernel_shape = tuple(classifier.kernel.shape)
    if weight.shape != kernel_shape[::-1]:
        raise _shape_error(
            keys["fc.weight"], weight.shape, kernel_shape[::-1], "classifier kernel",
            f" ([classes, features]; the Keras kernel is {kernel_shape})",
        )
    if bias.shape != tuple(classifier.bias.shape):
        raise _shape_error(keys["fc.bias"], bias.shape, tuple(classifier.bias.shape), "classifier bias")
    return [(keys["fc.weight"], classifier.kernel, weight.T), (keys["fc.bias"], classifier.bias, bias)]


def load_official_checkpoint(model: keras.Model, path: Union[str, os.PathLike]) -> dict[str, str]:
    """Loads an official DeepEMD checkpoint (``max_acc.pth``) into ``model``.

    Reads the file without PyTorch and without executing anything from it
    (`tf_deepemd.official.torch_pickle.load_pth`). Every weight of the
    model's ResNet-12 is filled exactly once, and every backbone tensor of
    the checkpoint is used; nothing is assigned unless all of them match.

    Args:
      model: a `tf_deepemd.DeepEMD` model (FCN, Grid or Sampling encoder:
        they share the backbone), a `tf_deepemd.PretrainClassifier` (whose
        classifier also receives ``fc.weight`` / ``fc.bias`` when the file
        has them), or a bare `ResNet12`; its backbone must be ``resnet12``
        (any widths, matching the file's). Unbuilt models are built first
        (84 x 84 images, the official size).
      path: the ``.pth`` file, in any of the three official key layouts
        (see module doc), zip or legacy (PyTorch < 1.6) format.

    Returns:
      ``{checkpoint key: Keras weight path}`` of every tensor loaded.

    Raises:
      ValueError: an unsupported model, or a checkpoint tensor that is
        missing, unexpected or mis-shaped (the message names the key and
        both shapes); `tf_deepemd.official.CheckpointFormatError` (a
        ValueError) for a file that is not a plain tensor checkpoint,
        e.g. one that would run code.
      OSError: the file cannot be read.

    Example (a released file; ``runs/``, ``max_acc.pth`` are yours):

    >>> import tf_deepemd
    >>> model = tf_deepemd.make_model("resnet12", "fcn", "deepemd")
    >>> loaded = tf_deepemd.load_official_checkpoint(model, "max_acc.pth")  # doctest: +SKIP
    >>> model.save_weights("runs/official/official.weights.h5")  # doctest: +SKIP

    The backbone must be the official ResNet-12:

    >>> tf_deepemd.load_official_checkpoint(tf_deepemd.make_model("conv4"), "max_acc.pth")
    Traceback (most recent call last):
      ...
    ValueError: The official checkpoints hold a ResNet-12: `model`'s backbone must be ...
    """
    path = os.fspath(path)
    backbone, classifier = _model_parts(model)
    state = _state_dict(load_pth(path), path)
    matched = _match_backbone(state, _keras_weights(backbone), path)
    matched += _match_classifier(state, classifier, path)
    for _, variable, value in matched:
        variable.assign(value.astype(variable.dtype))
    log.info("Loaded %d tensors of %s.", len(matched), path)
    return {key: variable.path for key, variable, _ in matched}
