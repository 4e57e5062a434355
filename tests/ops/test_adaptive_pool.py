"""adaptive_avg_pool2d vs a NumPy transcription of PyTorch's bin rule."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tf_deepemd.ops.adaptive_pool import adaptive_avg_pool2d


def np_adaptive_avg_pool2d(x, out_h, out_w):
    """PyTorch adaptive_avg_pool2d on NHWC, loop form."""
    b, h, w, c = x.shape
    out = np.zeros((b, out_h, out_w, c), x.dtype)
    for i in range(out_h):
        h0, h1 = math.floor(i * h / out_h), math.ceil((i + 1) * h / out_h)
        for j in range(out_w):
            w0, w1 = math.floor(j * w / out_w), math.ceil((j + 1) * w / out_w)
            out[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
    return out


@pytest.mark.parametrize(
    "in_hw,out_hw",
    [((5, 5), (1, 1)), ((5, 5), (2, 2)), ((5, 5), (3, 3)), ((5, 5), (5, 5)),
     ((5, 5), (7, 7)), ((10, 7), (3, 4)), ((4, 4), (2, 2))],
)
def test_matches_pytorch_bins(rng, in_hw, out_hw):
    x = rng.normal(size=(2,) + in_hw + (3,))
    out = adaptive_avg_pool2d(tf.constant(x), out_hw).numpy()
    np.testing.assert_allclose(out, np_adaptive_avg_pool2d(x, *out_hw), atol=1e-12)


def test_overlapping_bins_on_5_to_2():
    # PyTorch: 5 -> 2 uses rows [0, 3) and [2, 5): row 2 is in both bins.
    x = np.arange(5, dtype=np.float64).reshape(1, 5, 1, 1) * np.ones((1, 5, 5, 1))
    out = adaptive_avg_pool2d(x, 2).numpy()[0, :, 0, 0]
    np.testing.assert_allclose(out, [1.0, 3.0])


def test_dynamic_shape_under_tf_function(rng):
    fn = tf.function(
        lambda t: adaptive_avg_pool2d(t, 3),
        input_signature=[tf.TensorSpec([None, None, None, 2], tf.float32)],
    )
    x = rng.normal(size=(1, 7, 8, 2)).astype(np.float32)
    np.testing.assert_allclose(fn(x).numpy(), np_adaptive_avg_pool2d(x, 3, 3), atol=1e-6)


def test_rejects_low_rank():
    with pytest.raises(ValueError, match="feature_map"):
        adaptive_avg_pool2d(tf.zeros([5, 5]), 2)
