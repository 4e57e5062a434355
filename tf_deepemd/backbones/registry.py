"""Backbones by name, for configs and tools (`make_backbone("resnet12")`)."""

from tf_deepemd.backbones.conv4 import Conv4
from tf_deepemd.backbones.resnet12 import ResNet12

_BACKBONES = {}


def register_backbone(name):
    """Decorator registering ``factory(**kwargs) -> backbone`` under ``name``."""

    def decorator(factory):
        if name in _BACKBONES:
            raise ValueError(f"Backbone {name!r} is already registered.")
        _BACKBONES[name] = factory
        return factory

    return decorator


def available_backbones():
    """Sorted names accepted by `make_backbone`."""
    return sorted(_BACKBONES)


def make_backbone(name, **kwargs):
    """Builds a registered backbone; ``kwargs`` go to its constructor.

    Registered: ``resnet12`` (official, 84x84 -> 5x5x640), ``resnet12_small``
    (widths 32-64-96-128, no 4th pool: 32x32 -> 4x4x128), ``conv4``
    (64 channels, 3 pools: 32x32 -> 4x4x64).
    """
    if name not in _BACKBONES:
        raise ValueError(
            f"Unknown backbone {name!r}; available: {available_backbones()}."
        )
    return _BACKBONES[name](**kwargs)


@register_backbone("resnet12")
def _resnet12(**kwargs):
    return ResNet12(**kwargs)


@register_backbone("resnet12_small")
def _resnet12_small(**kwargs):
    kwargs.setdefault("widths", (32, 64, 96, 128))
    kwargs.setdefault("last_pool", False)
    return ResNet12(**kwargs)


@register_backbone("conv4")
def _conv4(**kwargs):
    return Conv4(**kwargs)
