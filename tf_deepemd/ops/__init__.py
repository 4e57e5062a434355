"""Pure tensor math of DeepEMD: no Keras state. Shapes are documented per function."""

from tf_deepemd.ops.adaptive_pool import adaptive_avg_pool2d, adaptive_pool_matrix
from tf_deepemd.ops.checks import check_support_labels
from tf_deepemd.ops.crops import (
    crop_and_resize_boxes,
    grid_boxes,
    grid_intervals,
    random_resized_crop_boxes,
)
from tf_deepemd.ops.cross_reference import (
    cross_reference_weights,
    normalize_mass,
    uniform_weights,
)
from tf_deepemd.ops.emd import (
    EMDResult,
    default_num_shards,
    emd,
    kernel_available,
    solve_emd,
    stock_ops_only,
)
from tf_deepemd.ops.matching import DeepEMDMatch, deepemd_match
from tf_deepemd.ops.sfc import fit_sfc
from tf_deepemd.ops.prototypes import class_means
from tf_deepemd.ops.similarity import (
    center_nodes,
    cosine_similarity_map,
    l2_normalize_nodes,
    pairwise_squared_distance,
)

__all__ = [
    "DeepEMDMatch",
    "EMDResult",
    "adaptive_avg_pool2d",
    "adaptive_pool_matrix",
    "center_nodes",
    "check_support_labels",
    "class_means",
    "cosine_similarity_map",
    "crop_and_resize_boxes",
    "cross_reference_weights",
    "deepemd_match",
    "default_num_shards",
    "emd",
    "fit_sfc",
    "grid_boxes",
    "grid_intervals",
    "kernel_available",
    "l2_normalize_nodes",
    "normalize_mass",
    "pairwise_squared_distance",
    "random_resized_crop_boxes",
    "solve_emd",
    "stock_ops_only",
    "uniform_weights",
]
