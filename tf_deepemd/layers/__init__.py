"""Keras layers of DeepEMD: the EMD solver layer, matching heads, prototype layers."""

from tf_deepemd.layers.baselines import CosineHead, ProtoNetHead
from tf_deepemd.layers.deepemd_head import DeepEMDHead
from tf_deepemd.layers.emd_layer import EMDLayer
from tf_deepemd.layers.prototypes import ClassMeanPrototypes
from tf_deepemd.layers.sfc import SFC

__all__ = ["ClassMeanPrototypes", "CosineHead", "DeepEMDHead", "EMDLayer", "ProtoNetHead", "SFC"]
