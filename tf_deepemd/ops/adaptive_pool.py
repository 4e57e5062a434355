"""Adaptive average pooling with PyTorch's bin edges (docs/method.md, "Region encoders").

The FCN feature pyramid pools a ``h x w`` map to ``s x s``; to reproduce
the official nodes the bins must be PyTorch's ``adaptive_avg_pool2d`` bins,
which overlap when ``s`` does not divide ``h``:

  bin i covers rows [floor(i * h / s), ceil((i + 1) * h / s)).

Implemented as two small averaging matrices applied by one einsum, so it
works for dynamic ``h, w`` and is differentiable.
"""

import tensorflow as tf


def adaptive_pool_matrix(in_size, out_size, dtype=tf.float32):
    """Averaging matrix of 1-D adaptive average pooling.

    Args:
      in_size: int or scalar int tensor, input length ``L``.
      out_size: int, number of bins ``s``.
      dtype: float dtype of the result.

    Returns:
      ``[s, L]`` matrix whose row ``i`` averages bin ``i``.
    """
    if isinstance(out_size, int) and out_size < 1:
        raise ValueError(f"`out_size` must be >= 1, got {out_size}.")
    in_size = tf.cast(in_size, tf.int64)
    i = tf.range(out_size, dtype=tf.int64)[:, None]
    start = (i * in_size) // out_size
    end = ((i + 1) * in_size + out_size - 1) // out_size  # ceil division
    pos = tf.range(in_size, dtype=tf.int64)[None, :]
    inside = tf.cast((pos >= start) & (pos < end), dtype)
    return inside / tf.reduce_sum(inside, axis=1, keepdims=True)


def adaptive_avg_pool2d(feature_map, output_size):
    """NHWC adaptive average pooling (PyTorch ``adaptive_avg_pool2d``).

    Args:
      feature_map: float ``[..., H, W, C]``.
      output_size: int ``s`` or pair ``(s_h, s_w)``.

    Returns:
      ``[..., s_h, s_w, C]``, same dtype.
    """
    feature_map = tf.convert_to_tensor(feature_map)
    if feature_map.shape.rank is not None and feature_map.shape.rank < 3:
        raise ValueError(
            "`feature_map` must have rank >= 3 ([..., H, W, C]), got shape "
            f"{feature_map.shape}."
        )
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    out_h, out_w = (int(s) for s in output_size)
    shape = tf.shape(feature_map)
    pool_h = adaptive_pool_matrix(shape[-3], out_h, feature_map.dtype)
    pool_w = adaptive_pool_matrix(shape[-2], out_w, feature_map.dtype)
    return tf.einsum("ih,jw,...hwc->...ijc", pool_h, pool_w, feature_map)
