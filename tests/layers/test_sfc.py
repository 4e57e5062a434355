"""SFC: PyTorch SGD semantics, the official epoch/batch loop, fitting a toy episode, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_deepemd
from tf_deepemd.ops import matching
from tf_deepemd.ops.sfc import dampened_momentum_step, epoch_order, fit_sfc


def toy_episode(rng, way=3, shot=3, queries=4, nodes=4, channels=16, noise=0.6):
    """Classes = random node-set templates (ReLU features) plus per-image noise."""
    templates = np.maximum(rng.normal(size=(way, nodes, channels)), 0.0)

    def draw(count):
        labels = np.tile(np.arange(way, dtype=np.int32), count)
        x = templates[labels] + noise * rng.normal(size=(len(labels), nodes, channels))
        return x.astype(np.float32), labels

    support, support_labels = draw(shot)
    query, query_labels = draw(queries)
    return support, support_labels, query, query_labels


def support_loss(head, support, labels, prototypes):
    logits = head(support, prototypes)
    return float(
        tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    )


def test_dampened_momentum_matches_pytorch_sgd(rng):
    """torch.optim.SGD(momentum=m, dampening=d): buf = g on step 0, then m buf + (1 - d) g."""
    grads = rng.normal(size=(4, 3))
    params, buffer = tf.constant(rng.normal(size=3)), tf.zeros(3, tf.float64)
    expected_params, expected_buffer = params.numpy(), None
    for step, grad in enumerate(grads):
        params, buffer = dampened_momentum_step(
            params, buffer, tf.constant(grad), step, learning_rate=0.5, momentum=0.9,
            dampening=0.9,
        )
        expected_buffer = grad if step == 0 else 0.9 * expected_buffer + 0.1 * grad
        expected_params = expected_params - 0.5 * expected_buffer
        np.testing.assert_allclose(buffer, expected_buffer, rtol=1e-12)
        np.testing.assert_allclose(params, expected_params, rtol=1e-12)


@pytest.mark.parametrize("gradient_mode", ["stop_flow", "kkt"])
def test_fit_follows_the_official_loop(rng, gradient_mode):
    """Python re-implementation of `get_sfc`: epochs of shuffled batches of 4, last smaller."""
    way, shot, steps, lr = 2, 3, 3, 2.0  # 6 support images: batches of 4 and 2 per epoch
    support, labels, _, _ = toy_episode(rng, way=way, shot=shot, nodes=3, channels=6)
    head = tf_deepemd.DeepEMDHead(gradient_mode=gradient_mode)
    seed = tf.constant([5, 7], tf.int64)

    prototypes = np.stack([support[labels == k].mean(0) for k in range(way)])
    buffer, update = None, 0
    for epoch in range(steps):
        order = epoch_order(seed, epoch, len(labels)).numpy()
        assert sorted(order) == list(range(len(labels)))
        for start in range(0, len(labels), 4):
            batch = order[start : start + 4]
            params = tf.constant(prototypes)
            with tf.GradientTape() as tape:
                tape.watch(params)
                logits = head(support[batch], params)
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels[batch], logits)
                )
            grad = tape.gradient(loss, params).numpy()
            buffer = grad if update == 0 else 0.9 * buffer + 0.1 * grad
            prototypes = prototypes - lr * buffer
            update += 1
    assert update == steps * 2

    fitted = fit_sfc(
        support, labels, way, lambda q, p: head(q, p), steps=steps, learning_rate=lr,
        batch_size=4, seed=seed,
    )
    np.testing.assert_allclose(fitted, prototypes, rtol=1e-4, atol=1e-5)
    assert np.abs(prototypes - np.stack([support[labels == k].mean(0) for k in range(2)])).max() > 1e-3


def test_sfc_lowers_support_loss_and_classifies_queries(rng):
    # 3-way 5-shot: 4 SGD updates per epoch (4 + 4 + 4 + 3 images).
    support, labels, query, query_labels = toy_episode(rng, way=3, shot=5, queries=5, noise=0.4)
    sfc = tf_deepemd.SFC(steps=10, learning_rate=30.0)
    head = tf_deepemd.DeepEMDHead()
    means = np.stack([support[labels == k].mean(0) for k in range(3)])
    prototypes = sfc(support, labels, way=3, head=head)
    assert prototypes.shape == (3, 4, 16)
    before = support_loss(head, support, labels, means)
    after = support_loss(head, support, labels, prototypes)
    assert after < 0.8 * before, (before, after)
    predictions = np.argmax(head(query, prototypes), axis=1)
    np.testing.assert_array_equal(predictions, query_labels)
    # Deterministic for a seed; another call seed reorders the batches.
    np.testing.assert_array_equal(sfc(support, labels, way=3, head=head), prototypes)
    assert np.abs(sfc(support, labels, way=3, head=head, seed=1) - prototypes).max() > 1e-6


def test_dynamic_way_and_shot_under_tf_function(rng):
    sfc = tf_deepemd.SFC(steps=2, learning_rate=1.0, batch_size=3)
    head = tf_deepemd.DeepEMDHead()
    fn = tf.function(
        lambda s, y: sfc(s, y, head=head),
        input_signature=[tf.TensorSpec([None, 4, 16]), tf.TensorSpec([None], tf.int32)],
    )
    for way, shot in ((3, 2), (2, 5)):
        support, labels, _, _ = toy_episode(rng, way=way, shot=shot)
        got = fn(support, labels)
        assert got.shape == (way, 4, 16)
        np.testing.assert_allclose(got, sfc(support, labels, head=head), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gradient_mode", ["stop_flow", "kkt"])
def test_a_batch_of_episodes_is_fitted_as_each_alone(rng, gradient_mode):
    # 3-way 3-shot, 9 support images: batches of 4, 4, 1 per epoch; each
    # episode with its own label order.
    episodes = [toy_episode(rng, way=3, shot=3) for _ in range(3)]
    for support, labels, _, _ in episodes[1:]:
        order = rng.permutation(len(labels))
        support[:], labels[:] = support[order], labels[order]
    support, labels = np.stack([e[0] for e in episodes]), np.stack([e[1] for e in episodes])
    sfc = tf_deepemd.SFC(steps=3, learning_rate=30.0, gradient_mode=gradient_mode, seed=3)
    head = tf_deepemd.DeepEMDHead()
    batched = sfc(support, labels, head=head, seed=2).numpy()
    assert batched.shape == (3, 3, 4, 16)
    assert sfc.compute_output_shape((3, 9, 4, 16), (3, 9)) == (3, None, 4, 16)
    for e in range(3):
        alone = sfc(support[e], labels[e], head=head, seed=2).numpy()
        np.testing.assert_allclose(batched[e], alone, rtol=1e-5, atol=1e-6)
        means = np.stack([support[e][labels[e] == k].mean(0) for k in range(3)])
        assert np.abs(alone - means).max() > 1e-3  # fitted, not the class means
    # One image per class: the support nodes themselves, batched too.
    first = np.stack([[np.flatnonzero(y == k)[0] for k in range(3)] for y in labels])
    one_shot_support = np.take_along_axis(support, first[:, :, None, None], axis=1)
    one_shot = sfc(one_shot_support, np.tile(np.arange(3, dtype=np.int32), (3, 1)), head=head)
    np.testing.assert_array_equal(one_shot, one_shot_support)


def test_the_support_is_checked_once_outside_the_fit_loop(rng):
    """No run-time assert in the loop (or any function it calls); NaN nodes fail at the call."""
    support, labels, _, _ = toy_episode(rng, way=2, shot=2)
    sfc, head = tf_deepemd.SFC(steps=1), tf_deepemd.DeepEMDHead()
    fit = tf.function(lambda nodes, y: sfc(nodes, y, head=head))
    graph = fit.get_concrete_function(tf.constant(support), tf.constant(labels)).graph
    functions = graph.as_graph_def().library.function
    assert any("while_body" in function.signature.name for function in functions)
    for function in functions:
        assert "Assert" not in {node.op for node in function.node_def}, function.signature.name
    support[1, 2, 3] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="`support_nodes` must be finite"):
        sfc(support, labels, head=head)


def test_no_gradient_to_the_support_features(rng):
    support, labels, _, _ = toy_episode(rng, way=2, shot=2)
    x = tf.constant(support)
    with tf.GradientTape() as tape:
        tape.watch(x)
        prototypes = tf_deepemd.SFC(steps=1, learning_rate=1.0)(
            x, labels, head=tf_deepemd.DeepEMDHead()
        )
        loss = tf.reduce_sum(prototypes * rng.normal(size=prototypes.shape).astype(np.float32))
    grad = tape.gradient(loss, x)
    # Zeros (the 1-shot branch of the shot check is differentiable), not a path.
    assert grad is None or not np.any(grad.numpy())


def test_keras_round_trip(tmp_path, rng):
    sfc = tf_deepemd.SFC(steps=2, learning_rate=0.5, batch_size=2, seed=3, gradient_mode="kkt")
    head = tf_deepemd.DeepEMDHead(node_weights="uniform", temperature=10.0)
    support, labels, _, _ = toy_episode(rng, way=2, shot=2)
    expected = sfc(support, labels, head=head).numpy()
    path = str(tmp_path / "sfc.keras")
    keras.saving.save_model(sfc, path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, tf_deepemd.SFC)
    assert loaded.get_config() == sfc.get_config()
    np.testing.assert_allclose(loaded(support, labels, head=head), expected, rtol=1e-6)


def test_fits_with_the_matching_settings_of_its_head(rng):
    """The head's node weights and temperature score the fit; SFC's own gradient mode."""
    support, labels, _, _ = toy_episode(rng, way=2, shot=3, nodes=3, channels=6)
    sfc = tf_deepemd.SFC(steps=2, learning_rate=3.0, seed=1, gradient_mode="kkt")
    head = tf_deepemd.DeepEMDHead(node_weights="uniform", temperature=5.0, gradient_mode="stop_flow")
    fitting_head = tf_deepemd.DeepEMDHead(node_weights="uniform", temperature=5.0)  # kkt
    expected = fit_sfc(
        support, labels, 2, fitting_head, steps=2, learning_rate=3.0, seed=tf.constant([1, 0])
    )
    np.testing.assert_allclose(sfc(support, labels, head=head), expected, rtol=1e-5, atol=1e-6)
    other = sfc(support, labels, head=tf_deepemd.DeepEMDHead(temperature=5.0))
    assert np.abs(other - expected).max() > 1e-4


class OwnHead(keras.layers.Layer):
    """A user's head, not a DeepEMDHead: the contract SFC relies on is `matching_options()`."""

    def matching_options(self):
        return dict(node_weights="uniform", temperature=5.0, tolerance=1e-9)

    def call(self, query_nodes, proto_nodes):
        return matching.deepemd_match(query_nodes, proto_nodes, **self.matching_options()).logits


def test_a_users_own_head_gets_the_prototypes_of_its_matching_options(rng):
    support, labels, query, query_labels = toy_episode(rng, way=3, shot=3)
    sfc = tf_deepemd.SFC(steps=5, learning_rate=3.0, seed=2)
    same_options = tf_deepemd.DeepEMDHead(node_weights="uniform", temperature=5.0, tolerance=1e-9)
    own = sfc(support, labels, head=OwnHead())
    np.testing.assert_allclose(own, sfc(support, labels, head=same_options), rtol=1e-5, atol=1e-6)
    assert np.abs(own - sfc(support, labels, head=tf_deepemd.DeepEMDHead())).max() > 1e-4
    # The fitted prototypes classify the queries through the user's head.
    predictions = np.argmax(OwnHead()(query, own), axis=1)
    assert np.mean(predictions == query_labels) > 0.9


def test_one_shot_keeps_the_support_nodes_with_their_gradient(rng):
    support, labels, _, _ = toy_episode(rng, way=3, shot=1)
    x = tf.constant(support)
    weights = rng.normal(size=support.shape).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        prototypes = tf_deepemd.SFC(steps=3)(x, labels, head=tf_deepemd.DeepEMDHead())
        loss = tf.reduce_sum(prototypes * weights)
    np.testing.assert_array_equal(prototypes, support)
    np.testing.assert_allclose(tape.gradient(loss, x), weights, rtol=1e-6)


def test_clear_errors(rng):
    support, labels, _, _ = toy_episode(rng, way=3, shot=2)
    sfc = tf_deepemd.SFC(steps=1)
    head = tf_deepemd.DeepEMDHead()
    with pytest.raises(ValueError, match="Empty support"):
        sfc(support[:0], labels[:0], head=head)
    with pytest.raises(ValueError, match="`support_labels` has 5 entries"):
        sfc(support, labels[:5], head=head)
    with pytest.raises(ValueError, match="support_labels.*integer"):
        sfc(support, labels.astype(np.float32), head=head)
    with pytest.raises(tf.errors.InvalidArgumentError, match="support example"):
        sfc(support, labels, way=4, head=head)  # class 3 has no support image
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be < `way`"):
        sfc(support, labels, way=2, head=head)
    with pytest.raises(ValueError, match="`head`: SFC fits prototypes for a DeepEMD"):
        sfc(support, labels)
    for bad, pattern in (
        (dict(batch_size=0), "batch_size"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(gradient_mode="exact"), "gradient_mode"),
    ):
        with pytest.raises(ValueError, match=pattern):
            tf_deepemd.SFC(**bad)
