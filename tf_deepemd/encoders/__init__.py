"""Region encoders: images ``[B, H, W, 3]`` -> node features ``[B, K, C]``."""

from tf_deepemd.encoders.base import RegionEncoder
from tf_deepemd.encoders.crop_encoder import CropEncoder
from tf_deepemd.encoders.fcn import FCNEncoder
from tf_deepemd.encoders.grid import GridEncoder
from tf_deepemd.encoders.sampling import SamplingEncoder

__all__ = ["CropEncoder", "FCNEncoder", "GridEncoder", "RegionEncoder", "SamplingEncoder"]
