"""Cross-reference weights, mass normalisation and uniform weights vs NumPy."""

import numpy as np
import pytest
import tensorflow as tf

from tf_deepemd.ops.cross_reference import (
    cross_reference_weights,
    normalize_mass,
    uniform_weights,
)
from tf_deepemd.ops.matching import deepemd_match


def np_weights(u, v, floor):
    """Official get_weight_vector for one (query, prototype) pair."""
    source = np.array([max(np.dot(ua, v.mean(0)), 0.0) + floor for ua in u])
    target = np.array([max(np.dot(vb, u.mean(0)), 0.0) + floor for vb in v])
    return source, target


def test_weights_match_per_pair_reference_with_different_node_counts(rng):
    # Shifted features so that some dot products are negative and get clipped.
    q = rng.normal(size=(3, 4, 6)) - 0.2
    p = rng.normal(size=(2, 5, 6)) + 0.1
    source, target = cross_reference_weights(q, p, floor=1e-3)
    assert source.shape == (3, 2, 4) and target.shape == (3, 2, 5)
    for i in range(3):
        for j in range(2):
            s_ref, t_ref = np_weights(q[i], p[j], 1e-3)
            np.testing.assert_allclose(source[i, j], s_ref, atol=1e-12)
            np.testing.assert_allclose(target[i, j], t_ref, atol=1e-12)
    assert np.isclose(np.concatenate([source.numpy().ravel(), target.numpy().ravel()]), 1e-3).any()


def test_weights_use_raw_not_centred_features(rng):
    # Adding a constant to all channels changes dot products (raw features),
    # which a centred computation would not see.
    q = np.abs(rng.normal(size=(1, 3, 4)))
    p = np.abs(rng.normal(size=(1, 3, 4)))
    s1, _ = cross_reference_weights(q, p)
    s2, _ = cross_reference_weights(q + 1.0, p)
    assert np.abs(s1.numpy() - s2.numpy()).max() > 0.1


def test_weights_leading_dims_and_floor(rng):
    q = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    p = rng.normal(size=(2, 2, 4, 5)).astype(np.float32)
    source, target = cross_reference_weights(q, p, floor=0.5)
    assert source.shape == (2, 3, 2, 4) and target.shape == (2, 3, 2, 4)
    assert source.dtype == tf.float32 and source.numpy().min() >= 0.5
    s_ref, t_ref = np_weights(q[1, 2], p[1, 1], 0.5)
    np.testing.assert_allclose(source[1, 2, 1], s_ref, rtol=1e-5)
    np.testing.assert_allclose(target[1, 2, 1], t_ref, rtol=1e-5)


def test_normalize_mass_sums_to_node_count_and_keeps_proportions(rng):
    w = rng.uniform(0.01, 3.0, size=(3, 2, 7))
    out = normalize_mass(w).numpy()
    np.testing.assert_allclose(out.sum(-1), 7.0, rtol=1e-12)
    np.testing.assert_allclose(out, w * 7 / w.sum(-1, keepdims=True), rtol=1e-12)


def test_uniform_weights_shapes_and_values(rng):
    q = tf.constant(rng.normal(size=(2, 3, 4, 5)), tf.float32)
    p = tf.constant(rng.normal(size=(2, 6, 7, 5)), tf.float32)
    source, target = uniform_weights(q, p)
    assert source.shape == (2, 3, 6, 4) and target.shape == (2, 3, 6, 7)
    np.testing.assert_array_equal(source.numpy(), 1.0)
    np.testing.assert_array_equal(target.numpy(), 1.0)
    np.testing.assert_array_equal(normalize_mass(source).numpy(), 1.0)


@pytest.mark.parametrize("node_weights", ["cross_reference", "uniform"])
def test_bad_inputs_name_the_argument_at_the_boundary(node_weights):
    """The weights are a step of `deepemd_match`, which checks its node sets."""
    with pytest.raises(ValueError, match="proto_nodes"):
        deepemd_match(tf.zeros([2, 3, 4]), tf.zeros([2, 3, 6]), node_weights=node_weights)
    with pytest.raises(ValueError, match="proto_nodes"):
        deepemd_match(tf.zeros([2, 3, 4]), tf.zeros([3, 4]), node_weights=node_weights)
