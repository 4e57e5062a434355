"""Interoperability with the official PyTorch DeepEMD (icoz69/DeepEMD).

`load_official_checkpoint` loads its ``max_acc.pth`` files into tf_deepemd
models; `load_pth` reads any plain tensor ``.pth`` file as NumPy arrays.
Neither needs PyTorch, and neither executes code from the file.
"""

from tf_deepemd.official.checkpoint import load_official_checkpoint, official_backbone_names
from tf_deepemd.official.torch_pickle import CheckpointFormatError, load_pth

__all__ = [
    "CheckpointFormatError",
    "load_official_checkpoint",
    "load_pth",
    "official_backbone_names",
]
