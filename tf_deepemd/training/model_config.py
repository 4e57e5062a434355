"""The gin-bindable episode model of a run (`make_model`).

The tools build their model through this one configurable; the Keras
layers keep plain constructor arguments.
"""

import gin

from tf_deepemd.backbones.registry import available_backbones
from tf_deepemd.models import factory
from tf_deepemd.models.deepemd import HEADS, K_SHOT_MODES
from tf_deepemd.ops.matching import GRADIENT_MODES, NODE_WEIGHTS


@gin.configurable
def make_model(
    backbone="resnet12",
    encoder="fcn",
    head="deepemd",
    backbone_options=None,
    encoder_options=None,
    node_weights="cross_reference",
    gradient_mode="kkt",
    temperature=None,
    l2_strength=0.0,
    solver_tolerance=None,
    solver_max_iterations=100,
    k_shot="sfc",
    sfc_steps=100,
    sfc_lr=100.0,
    sfc_batch_size=4,
    sfc_gradient_mode="stop_flow",
):
    """The episode model of a run (`tf_deepemd.models.make_model`), gin-bindable.

    The method is chosen by ``encoder`` (``'fcn'``, ``'grid'``,
    ``'sampling'``), ``head`` (``'deepemd'``, or the ``'protonet'`` /
    ``'cosine'`` baselines) and ``node_weights`` (``'cross_reference'`` or
    ``'uniform'``), one binding each. The other arguments are `DeepEMD`'s.
    Every name is checked first (`check_model_settings`).
    """
    check_model_settings(backbone, encoder, head, node_weights, gradient_mode, k_shot)
    return factory.make_model(
        backbone=backbone,
        encoder=encoder,
        head=head,
        backbone_options=backbone_options,
        encoder_options=encoder_options,
        node_weights=node_weights,
        gradient_mode=gradient_mode,
        temperature=temperature,
        l2_strength=l2_strength,
        solver_tolerance=solver_tolerance,
        solver_max_iterations=solver_max_iterations,
        k_shot=k_shot,
        sfc_steps=sfc_steps,
        sfc_lr=sfc_lr,
        sfc_batch_size=sfc_batch_size,
        sfc_gradient_mode=sfc_gradient_mode,
    )


def check_model_settings(backbone, encoder, head, node_weights, gradient_mode, k_shot):
    """ValueError naming the binding for an unknown method component."""
    choices = (
        ("make_model.backbone", backbone, tuple(available_backbones())),
        ("make_model.encoder", encoder, tuple(factory.ENCODERS)),
        ("make_model.head", head, HEADS),
        ("make_model.node_weights", node_weights, NODE_WEIGHTS),
        ("make_model.gradient_mode", gradient_mode, GRADIENT_MODES),
        ("make_model.k_shot", k_shot, K_SHOT_MODES),
    )
    for binding, value, allowed in choices:
        if isinstance(value, str) and value not in allowed:
            raise ValueError(f"Unknown {binding} {value!r}; expected one of {sorted(allowed)}.")
