"""ProtoNetHead and CosineHead vs NumPy; any way/shot; errors; saving."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from tf_deepemd.layers.baselines import CosineHead, ProtoNetHead
from tf_deepemd.layers.prototypes import ClassMeanPrototypes


def episode(rng, way=3, shot=2, queries=4, nodes=5, channels=6):
    """``(query nodes, class-mean prototype node sets, support nodes, labels)``."""
    labels = np.tile(np.arange(way, dtype=np.int32), shot)
    rng.shuffle(labels)
    support = rng.normal(size=(way * shot, nodes, channels)).astype(np.float32)
    query = rng.normal(size=(queries, nodes, channels)).astype(np.float32)
    prototypes = ClassMeanPrototypes()(support, labels, way=way)
    return query, prototypes, support, labels


def np_prototypes(query, support, labels, way):
    """ProtoNet as Snell et al.: pooled queries, class means of the pooled support."""
    q = query.astype(np.float64).mean(1)
    s = support.astype(np.float64).mean(1)
    return q, np.stack([s[labels == k].mean(0) for k in range(way)])


@pytest.mark.parametrize("way,shot", [(5, 1), (3, 2), (2, 5)])
def test_protonet_logits(rng, way, shot):
    query, prototypes, support, labels = episode(rng, way, shot)
    logits = ProtoNetHead(temperature=0.5)(query, prototypes).numpy()
    q, p = np_prototypes(query, support, labels, way)
    expected = -0.5 * ((q[:, None] - p[None]) ** 2).sum(-1)
    assert logits.shape == (4, way)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_cosine_logits(rng):
    query, prototypes, support, labels = episode(rng, 4, 3)
    logits = CosineHead(temperature=10.0)(query, prototypes).numpy()
    q, p = np_prototypes(query, support, labels, 4)
    cos = (q @ p.T) / np.linalg.norm(q, axis=1)[:, None] / np.linalg.norm(p, axis=1)[None]
    np.testing.assert_allclose(logits, 10.0 * cos, rtol=1e-5, atol=1e-5)
    assert np.abs(logits).max() <= 10.0 + 1e-5


def test_dynamic_way_under_tf_function(rng):
    head, prototype_layer = ProtoNetHead(), ClassMeanPrototypes()
    fn = tf.function(
        lambda q, s, y: head(q, prototype_layer(s, y)),
        input_signature=[
            tf.TensorSpec([None, None, 6]), tf.TensorSpec([None, None, 6]),
            tf.TensorSpec([None], tf.int32),
        ],
    )
    for way, shot in ((5, 1), (3, 4)):
        query, prototypes, support, labels = episode(rng, way, shot)
        np.testing.assert_allclose(fn(query, support, labels), head(query, prototypes), rtol=1e-5)


def test_learned_temperature_trains_and_saves(tmp_path, rng):
    query, prototypes, _, _ = episode(rng)
    head = CosineHead(temperature=5.0, learn_temperature=True)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(head(query, prototypes))
    (grad,) = tape.gradient(loss, head.trainable_weights)
    assert grad is not None and abs(float(grad)) > 0
    head.temperature_weight.assign(7.5)
    expected = head(query, prototypes).numpy()
    path = str(tmp_path / "cos.keras")
    keras.saving.save_model(head, path)
    loaded = keras.saving.load_model(path)
    assert float(loaded.temperature_weight) == 7.5
    np.testing.assert_allclose(loaded(query, prototypes), expected, rtol=1e-6)


def test_protonet_saving_roundtrip(tmp_path, rng):
    query, prototypes, _, _ = episode(rng)
    head = ProtoNetHead(temperature=2.0)
    expected = head(query, prototypes).numpy()
    keras.saving.save_model(head, str(tmp_path / "p.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "p.keras"))
    assert loaded.temperature == 2.0
    np.testing.assert_allclose(loaded(query, prototypes), expected, rtol=1e-6)


@pytest.mark.parametrize("head_cls", [ProtoNetHead, CosineHead])
def test_clear_errors(rng, head_cls):
    query, prototypes, _, _ = episode(rng)
    head = head_cls()
    with pytest.raises(ValueError, match="Channel mismatch.*proto_nodes"):
        head(query, prototypes[..., :5])
    with pytest.raises(ValueError, match="`query_nodes` must have rank 3"):
        head(query[:, 0], prototypes)
    with pytest.raises(ValueError, match="`proto_nodes` must have rank 3"):
        head(query, prototypes[0])
    with pytest.raises(ValueError, match="temperature"):
        head_cls(temperature=0.0)


@pytest.mark.parametrize("head_cls", [ProtoNetHead, CosineHead])
def test_a_batch_of_episodes_gives_each_episode_its_own_logits(rng, head_cls):
    episodes = [episode(rng) for _ in range(3)]
    query, prototypes, support, labels = (np.stack(parts) for parts in zip(*episodes))
    head = head_cls()
    np.testing.assert_allclose(ClassMeanPrototypes()(support, labels), prototypes, atol=1e-6)
    batched = head(query, prototypes).numpy()
    assert batched.shape == (3, 4, 3)
    for e in range(3):
        np.testing.assert_allclose(batched[e], head(query[e], prototypes[e]), rtol=1e-5, atol=1e-5)


def test_class_mean_prototypes_check_the_support_set(rng):
    _, _, support, labels = episode(rng)
    prototype_layer = ClassMeanPrototypes()
    with pytest.raises(ValueError, match="Empty support"):
        prototype_layer(support[:0], labels[:0], way=3)
    with pytest.raises(ValueError, match="`support_labels` has 5 entries"):
        prototype_layer(support, labels[:-1], way=3)
    with pytest.raises(ValueError, match="`support_nodes` must have rank 3"):
        prototype_layer(support[:, 0], labels)
    with pytest.raises(ValueError, match="support_labels.*integer"):
        prototype_layer(support, labels.astype(np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="support example"):
        prototype_layer(support, labels, way=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be < `way`"):
        prototype_layer(support, labels, way=2)
