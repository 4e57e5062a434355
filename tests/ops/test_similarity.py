"""center_nodes / cosine_similarity_map / pairwise_squared_distance vs NumPy."""

import collections
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_deepemd.ops import checks
from tf_deepemd.ops.matching import deepemd_match
from tf_deepemd.ops.similarity import (
    center_nodes,
    cosine_similarity_map,
    pairwise_squared_distance,
)


def np_cosine(u, v, eps=1e-8):
    # PyTorch F.cosine_similarity: each norm clamped at eps separately.
    nu = max(np.linalg.norm(u), eps)
    nv = max(np.linalg.norm(v), eps)
    return float(np.dot(u, v) / (nu * nv))


def test_center_subtracts_each_nodes_own_channel_mean(rng):
    nodes = rng.normal(size=(3, 5, 7)) + rng.normal(size=(3, 5, 1)) * 4.0
    out = center_nodes(tf.constant(nodes)).numpy()
    expected = np.empty_like(nodes)
    for i in range(3):
        for a in range(5):
            expected[i, a] = nodes[i, a] - nodes[i, a].mean()
    np.testing.assert_allclose(out, expected, atol=1e-12)
    # The mean over NODES is untouched when it is not zero: not a node-wise centring.
    assert np.abs(out.mean(axis=1)).max() > 1e-3


def test_cosine_map_all_pairs_matches_loop_reference(rng):
    q = rng.normal(size=(3, 4, 6)).astype(np.float32)
    p = rng.normal(size=(2, 5, 6)).astype(np.float32)
    s = cosine_similarity_map(q, p).numpy()
    assert s.shape == (3, 2, 4, 5) and s.dtype == np.float32
    expected = np.array(
        [[[[np_cosine(q[i, a], p[j, b]) for b in range(5)] for a in range(4)]
          for j in range(2)] for i in range(3)]
    )
    np.testing.assert_allclose(s, expected, atol=1e-6)


def test_cosine_of_centred_nodes_is_pearson_correlation(rng):
    q = rng.normal(size=(1, 3, 10)) + 2.0
    p = rng.normal(size=(1, 2, 10)) - 1.0
    s = cosine_similarity_map(center_nodes(q), center_nodes(p)).numpy()[0, 0]
    for a in range(3):
        for b in range(2):
            np.testing.assert_allclose(s[a, b], np.corrcoef(q[0, a], p[0, b])[0, 1], atol=1e-12)


def test_cosine_map_leading_batch_dims_and_float64(rng):
    q = rng.normal(size=(2, 3, 4, 5))
    p = rng.normal(size=(2, 6, 2, 5))
    s = cosine_similarity_map(q, p).numpy()
    assert s.shape == (2, 3, 6, 4, 2) and s.dtype == np.float64
    for e in range(2):
        np.testing.assert_allclose(s[e], cosine_similarity_map(q[e], p[e]).numpy(), atol=1e-12)
    np.testing.assert_allclose(s[1, 2, 5, 3, 1], np_cosine(q[1, 2, 3], p[1, 5, 1]), atol=1e-12)


def test_cosine_eps_makes_zero_nodes_similarity_zero_not_nan(rng):
    q = np.zeros((1, 2, 4), np.float32)
    q[0, 1] = rng.normal(size=4)
    p = rng.normal(size=(1, 3, 4)).astype(np.float32)
    s = cosine_similarity_map(q, p).numpy()
    assert np.all(np.isfinite(s))
    np.testing.assert_array_equal(s[0, 0, 0], 0.0)
    # Tiny but non-zero vectors keep their direction with eps only clamping norms below it.
    tiny = np.full((1, 1, 4), 1e-3, np.float32)
    np.testing.assert_allclose(cosine_similarity_map(tiny, tiny).numpy(), 1.0, atol=1e-6)


def test_bad_node_sets_name_the_argument_at_the_boundary():
    """The similarity is a step of `deepemd_match`, which checks its node sets."""
    with pytest.raises(ValueError, match="proto_nodes"):
        deepemd_match(tf.zeros([2, 3, 4]), tf.zeros([2, 3, 5]))
    with pytest.raises(ValueError, match="query_nodes"):
        deepemd_match(tf.zeros([3, 4]), tf.zeros([2, 3, 4]))
    with pytest.raises(ValueError, match="query_nodes"):
        deepemd_match(tf.zeros([2, 3, 4], tf.int32), tf.zeros([2, 3, 4]))


def test_one_match_checks_each_node_set_once():
    """`deepemd_match` is the boundary: its steps do not re-enter tf_deepemd/ops/checks.py."""
    calls = collections.Counter()

    def count(frame, event, _):
        if event == "call" and frame.f_code.co_filename == checks.__file__:
            calls[frame.f_code.co_name] += 1

    query, protos = tf.ones([3, 4, 6]), tf.ones([2, 5, 6])
    sys.setprofile(count)
    try:
        deepemd_match(query, protos)
    finally:
        sys.setprofile(None)
    assert calls["check_node_sets"] == 1
    assert calls["check_nodes"] == 2  # query_nodes, proto_nodes
    assert calls["check_same_channels"] == 1


def test_cosine_map_gradient_matches_finite_differences(rng):
    q = tf.constant(rng.normal(size=(2, 3, 4)))
    p = tf.constant(rng.normal(size=(2, 2, 4)))
    # delta 1e-6 (default ~1e-3): central differences on float64 then carry
    # ~1e-10 error, well below the tolerance, even where centring leaves a
    # short vector of high curvature.
    theoretical, numerical = tf.test.compute_gradient(
        lambda x: cosine_similarity_map(center_nodes(x), p), [q], delta=1e-6
    )
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)


def test_pairwise_squared_distance_matches_numpy(rng):
    x = rng.normal(size=(4, 6)) * 10
    y = rng.normal(size=(3, 6)) * 10
    d = pairwise_squared_distance(x, y).numpy()
    expected = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(d, expected, rtol=1e-10, atol=1e-9)
    # Identical rows: exactly zero, never negative from cancellation.
    assert pairwise_squared_distance(x, x).numpy().min() >= 0.0
