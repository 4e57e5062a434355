"""FCNEncoder: dense nodes, PyTorch-binned feature pyramid, saving, gradients."""

import math

import numpy as np
import pytest
import tensorflow as tf
import keras

from tf_deepemd.backbones import Conv4, ResNet12
from tf_deepemd.encoders import FCNEncoder


def np_adaptive_avg_pool2d(x, s):
    b, h, w, c = x.shape
    out = np.zeros((b, s, s, c))
    for i in range(s):
        h0, h1 = math.floor(i * h / s), math.ceil((i + 1) * h / s)
        for j in range(s):
            w0, w1 = math.floor(j * w / s), math.ceil((j + 1) * w / s)
            out[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
    return out


def tiny_backbone():
    # 20x20 -> 5x5 map, like ResNet-12 on 84x84.
    return Conv4(widths=(4, 4, 4, 6), num_pools=2)


def test_dense_nodes_are_the_map_flattened_row_major(rng):
    enc = FCNEncoder(tiny_backbone())
    x = tf.constant(rng.normal(size=(3, 20, 20, 3)), tf.float32)
    nodes = enc(x).numpy()
    fmap = enc.backbone(x).numpy()
    assert nodes.shape == (3, 25, 6)
    np.testing.assert_array_equal(nodes[:, 7], fmap[:, 1, 2])  # node 7 = row 1, col 2
    np.testing.assert_array_equal(nodes, fmap.reshape(3, 25, 6))


def test_pyramid_levels_first_then_original_map(rng):
    enc = FCNEncoder(tiny_backbone(), feature_pyramid=(2, 1))
    x = tf.constant(rng.normal(size=(2, 20, 20, 3)), tf.float32)
    nodes = enc(x).numpy()
    fmap = enc.backbone(x).numpy().astype(np.float64)
    assert nodes.shape == (2, 4 + 1 + 25, 6)
    assert enc.compute_output_shape((2, 20, 20, 3)) == (2, 30, 6)
    expected = np.concatenate(
        [np_adaptive_avg_pool2d(fmap, 2).reshape(2, 4, 6),
         np_adaptive_avg_pool2d(fmap, 1).reshape(2, 1, 6),
         fmap.reshape(2, 25, 6)], axis=1
    )
    np.testing.assert_allclose(nodes, expected, atol=1e-5)


def test_pyramid_with_map_size_duplicates_the_map_as_official(rng):
    enc = FCNEncoder(tiny_backbone(), feature_pyramid=(5, 2, 1))
    nodes = enc(tf.constant(rng.normal(size=(1, 20, 20, 3)), tf.float32)).numpy()
    assert nodes.shape == (1, 55, 6)
    np.testing.assert_allclose(nodes[:, :25], nodes[:, 30:], atol=1e-6)


def test_resnet12_small_on_32px_gives_16_nodes():
    enc = FCNEncoder(ResNet12(widths=(4, 4, 4, 8), last_pool=False))
    assert enc(tf.zeros([2, 32, 32, 3])).shape == (2, 16, 8)


def test_saving_roundtrip_and_tf_function(tmp_path, rng):
    enc = FCNEncoder(tiny_backbone(), feature_pyramid=(3,), name="fcn")
    x = tf.constant(rng.normal(size=(2, 20, 20, 3)), tf.float32)
    enc(x, training=True)
    expected = enc(x).numpy()
    path = str(tmp_path / "fcn.keras")
    keras.saving.save_model(enc, path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, FCNEncoder) and loaded.feature_pyramid == (3,)
    assert isinstance(loaded.backbone, Conv4)
    np.testing.assert_allclose(loaded(x), expected, rtol=1e-5, atol=1e-5)
    fn = tf.function(lambda t: loaded(t, training=False))
    np.testing.assert_allclose(fn(x), expected, rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_backbone_weight(rng):
    enc = FCNEncoder(tiny_backbone(), feature_pyramid=(2,))
    x = tf.constant(rng.normal(size=(2, 20, 20, 3)), tf.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(enc(x, training=True) ** 2)
    grads = tape.gradient(loss, enc.backbone.trainable_weights)
    assert len(grads) == len(enc.backbone.trainable_weights) > 0
    assert all(g is not None and np.abs(g.numpy()).max() > 0 for g in grads)


def test_bad_inputs():
    with pytest.raises(ValueError, match="images"):
        FCNEncoder(tiny_backbone())(tf.zeros([20, 20, 3]))
    with pytest.raises(ValueError, match="feature_pyramid"):
        FCNEncoder(tiny_backbone(), feature_pyramid=(0,))
    with pytest.raises(ValueError, match="backbone"):
        FCNEncoder("resnet12")
