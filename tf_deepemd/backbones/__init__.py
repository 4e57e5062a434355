"""Feature extractors: images ``[B, H, W, 3]`` -> feature maps ``[B, h, w, C]``."""

from tf_deepemd.backbones.conv4 import Conv4
from tf_deepemd.backbones.dropblock import DropBlock2D
from tf_deepemd.backbones.registry import (
    available_backbones,
    make_backbone,
    register_backbone,
)
from tf_deepemd.backbones.resnet12 import ResNet12, ResNetBlock

__all__ = [
    "Conv4",
    "DropBlock2D",
    "ResNet12",
    "ResNetBlock",
    "available_backbones",
    "make_backbone",
    "register_backbone",
]
