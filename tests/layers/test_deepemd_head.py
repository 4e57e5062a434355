"""DeepEMDHead vs a NumPy/HiGHS DeepEMD; identity matching; gradients; saving; errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_deepemd
from tests.reference import deepemd_logits
from tf_deepemd.ops import matching


def features(rng, *shape, dtype=np.float32):
    """Node features like the backbone's: LeakyReLU(0.1) outputs, mostly >= 0."""
    x = rng.normal(size=shape)
    return np.where(x > 0, x, 0.1 * x).astype(dtype)


@pytest.mark.parametrize(
    "node_weights,num_query_nodes,num_proto_nodes",
    [("cross_reference", 5, 5), ("uniform", 5, 5), ("cross_reference", 4, 6)],
)
def test_logits_match_numpy_highs_reference(rng, node_weights, num_query_nodes, num_proto_nodes):
    query = features(rng, 4, num_query_nodes, 16)
    proto = features(rng, 3, num_proto_nodes, 16)
    head = tf_deepemd.DeepEMDHead(node_weights=node_weights)
    match = head.match(query, proto)
    expected = deepemd_logits(query, proto, node_weights=node_weights)
    assert match["logits"].shape == (4, 3)
    assert match["flow"].shape == (4, 3, num_query_nodes, num_proto_nodes)
    np.testing.assert_allclose(match["logits"], expected["logits"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(match["similarity"], expected["similarity"], atol=1e-5)
    np.testing.assert_allclose(match["source_weights"], expected["source"], rtol=1e-5)
    np.testing.assert_allclose(match["target_weights"], expected["target"], rtol=1e-5)
    # The flow is feasible (its marginals: the smaller side is used up) and optimal
    # (HiGHS's vertex may differ where the LP is degenerate; the cost may not).
    flow = match["flow"].numpy().astype(np.float64)
    total = min(num_query_nodes, num_proto_nodes)
    np.testing.assert_allclose(flow.sum((-2, -1)), total, rtol=1e-5)
    cost = 1.0 - expected["similarity"]
    np.testing.assert_allclose(
        (cost * flow).sum((-2, -1)), (cost * expected["flow"]).sum((-2, -1)), atol=1e-4
    )
    np.testing.assert_array_equal(head(query, proto), match["logits"])


def test_identical_sets_give_identity_flow_and_logit_temperature(rng):
    nodes = features(rng, 3, 6, 10)
    head = tf_deepemd.DeepEMDHead(node_weights="uniform", temperature=7.0)
    match = head.match(nodes, nodes)
    flow = match["flow"].numpy()
    for i in range(3):
        np.testing.assert_allclose(flow[i, i], np.eye(6), atol=1e-5)
    np.testing.assert_allclose(np.diag(match["logits"]), 7.0, rtol=1e-5)
    # Any other pairing scores lower, and all logits are within [-T, T].
    logits = match["logits"].numpy()
    assert np.all(logits[~np.eye(3, dtype=bool)] < 7.0 - 1e-3)
    assert np.all(np.abs(logits) <= 7.0 + 1e-5)


def smooth_loss(logits, coefficients):
    return tf.reduce_sum(coefficients * logits)


def test_kkt_gradient_reaches_the_cross_reference_weights(rng):
    """The full gradient equals finite differences; dropping the weight path does not."""
    query = features(rng, 2, 5, 7, dtype=np.float64)
    proto = features(rng, 3, 5, 7, dtype=np.float64)
    coefficients = tf.constant(rng.normal(size=(2, 3)))
    head = tf_deepemd.DeepEMDHead(tolerance=1e-11, dtype="float64")

    def loss(q, p):
        return smooth_loss(head(q, p), coefficients)

    def loss_weights_from_constants(q, p):
        source, target = matching.matching_marginals(tf.stop_gradient(q), tf.stop_gradient(p))
        logits, _ = matching.flow_logits(
            matching.matching_similarity(q, p), source, target, tolerance=1e-11
        )
        return smooth_loss(logits, coefficients)

    q, p = tf.constant(query), tf.constant(proto)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([q, p])
        full = loss(q, p)
        partial = loss_weights_from_constants(q, p)
    np.testing.assert_allclose(full, partial, rtol=1e-12)  # same value, other gradient
    full_grads = [g.numpy() for g in tape.gradient(full, [q, p])]
    partial_grads = [g.numpy() for g in tape.gradient(partial, [q, p])]

    # The weight path is a real part of the derivative...
    weight_path = np.concatenate([(f - g).ravel() for f, g in zip(full_grads, partial_grads)])
    total = np.concatenate([f.ravel() for f in full_grads])
    assert np.linalg.norm(weight_path) > 0.01 * np.linalg.norm(total)
    # ...and the total (through the solver to cost AND weights) is the true one.
    # FD error: O(eps^2) truncation (the curvature near a change of optimal
    # basis can be large: eps = 1e-4 was 4e-4 off for seed 613097996) +
    # (solver accuracy ~1e-11 x logits ~10) / eps.
    eps = 1e-5
    for _ in range(3):
        dq, dp = rng.normal(size=query.shape), rng.normal(size=proto.shape)
        numeric = (
            float(loss(query + eps * dq, proto + eps * dp))
            - float(loss(query - eps * dq, proto - eps * dp))
        ) / (2 * eps)
        analytic = np.sum(full_grads[0] * dq) + np.sum(full_grads[1] * dp)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-5)


def test_stop_flow_gradient_is_temperature_over_n_times_flow(rng):
    query = features(rng, 3, 4, 9)
    proto = features(rng, 2, 4, 9)
    head = tf_deepemd.DeepEMDHead(gradient_mode="stop_flow")
    q, p = tf.constant(query), tf.constant(proto)
    coefficients = tf.constant(rng.normal(size=(3, 2)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([q, p])
        match = head.match(q, p)
        loss = smooth_loss(match["logits"], coefficients)
        # Same logits written as (T / N) * sum(S * constant flow).
        flow = tf.constant(match["flow"].numpy())
        similarity = matching.matching_similarity(q, p)
        explicit = smooth_loss(12.5 / 4 * tf.reduce_sum(similarity * flow, [-2, -1]), coefficients)
    np.testing.assert_allclose(loss, explicit, rtol=1e-5)
    for got, expected in zip(tape.gradient(loss, [q, p]), tape.gradient(explicit, [q, p])):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    # Nothing reaches the weights: the gradient of a weights-only path is None.
    sim = tf.constant(match["similarity"].numpy())
    source, target = tf.constant(match["source_weights"]), tf.constant(match["target_weights"])
    with tf.GradientTape() as tape:
        tape.watch([sim, source, target])
        logits, flow = matching.flow_logits(sim, source, target, gradient_mode="stop_flow")
    grads = tape.gradient(logits, [sim, source, target])
    np.testing.assert_allclose(grads[0], 12.5 / 4 * flow.numpy(), rtol=1e-6)
    assert grads[1] is None and grads[2] is None


def test_dynamic_shapes_under_tf_function(rng):
    head = tf_deepemd.DeepEMDHead()
    fn = tf.function(
        head, input_signature=[tf.TensorSpec([None, None, 8]), tf.TensorSpec([None, None, 8])]
    )
    for shape_q, shape_p in (((3, 4, 8), (5, 4, 8)), ((2, 6, 8), (2, 3, 8))):
        query, proto = features(rng, *shape_q), features(rng, *shape_p)
        np.testing.assert_allclose(fn(query, proto), head(query, proto), atol=1e-5)


def test_keras_round_trip(tmp_path, rng):
    head = tf_deepemd.DeepEMDHead(
        node_weights="uniform", temperature=5.0, gradient_mode="stop_flow", l2_strength=1e-3,
        tolerance=1e-6, max_iterations=40,
    )
    query, proto = features(rng, 3, 4, 8), features(rng, 2, 4, 8)
    expected = head(query, proto).numpy()
    path = str(tmp_path / "head.keras")
    keras.saving.save_model(head, path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, tf_deepemd.DeepEMDHead)
    assert loaded.get_config() == head.get_config()
    assert loaded.supports_jit is False
    np.testing.assert_allclose(loaded(query, proto), expected, rtol=1e-6)


def test_clear_errors(rng):
    head = tf_deepemd.DeepEMDHead()
    query, proto = features(rng, 3, 4, 8), features(rng, 2, 4, 8)
    with pytest.raises(ValueError, match="Channel mismatch.*query_nodes.*proto_nodes"):
        head(query, proto[..., :5])
    with pytest.raises(ValueError, match="`query_nodes` must have rank 3"):
        head(query[0], proto)
    with pytest.raises(ValueError, match="`proto_nodes` must have rank 3"):
        head(query, proto[None])
    with pytest.raises(ValueError, match="`proto_nodes` has no nodes"):
        head(query, proto[:, :0])
    for bad, pattern in (
        (dict(node_weights="cosine"), "node_weights"),
        (dict(gradient_mode="unrolled"), "gradient_mode"),
        (dict(temperature=0.0), "temperature"),
        (dict(l2_strength=-1.0), "l2_strength"),
        (dict(max_iterations=0), "max_iterations"),
    ):
        with pytest.raises(ValueError, match=pattern):
            tf_deepemd.DeepEMDHead(**bad)


def test_kkt_gradient_with_uniform_weights_and_few_nodes_is_finite(rng):
    prototypes = np.maximum(rng.normal(size=(3, 4, 16)), 0.0).astype(np.float32)
    query = np.repeat(prototypes, 2, axis=0) + 0.6 * rng.normal(size=(6, 4, 16))
    q, p = tf.constant(query, tf.float32), tf.constant(prototypes)
    head = tf_deepemd.DeepEMDHead(node_weights="uniform")
    with tf.GradientTape() as tape:
        tape.watch([q, p])
        loss = tf.reduce_sum(head(q, p) * rng.normal(size=(6, 3)))
    for grad in tape.gradient(loss, [q, p]):
        assert np.all(np.isfinite(grad.numpy()))


def test_a_batch_of_episodes_gives_each_episode_its_own_logits(rng):
    head = tf_deepemd.DeepEMDHead()
    query, proto = features(rng, 3, 4, 6, 8), features(rng, 3, 2, 5, 8)
    batched = head(query, proto).numpy()
    assert batched.shape == (3, 4, 2)
    assert head.compute_output_shape((3, 4, 6, 8), (3, 2, 5, 8)) == (3, 4, 2)
    for e in range(3):
        np.testing.assert_allclose(batched[e], head(query[e], proto[e]), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="`proto_nodes` must have rank 4"):
        head(query, proto[0])
