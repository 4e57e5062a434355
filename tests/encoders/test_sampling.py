"""SamplingEncoder: torchvision-style crops, seeded evaluation, random training."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from tf_deepemd.backbones import Conv4
from tf_deepemd.encoders import SamplingEncoder


def tiny_backbone():
    return Conv4(widths=(4, 4, 4, 6), num_pools=2)


def test_shapes_and_nodes_equal_gap_of_backbone_on_each_crop(rng):
    enc = SamplingEncoder(tiny_backbone(), num_patches=5, crop_size=8, seed=3)
    x = rng.normal(size=(2, 40, 40, 3)).astype(np.float32)
    nodes = enc(x).numpy()
    assert nodes.shape == (2, 5, 6)
    assert enc.compute_output_shape((2, 40, 40, 3)) == (2, 5, 6)
    boxes, flip = enc.crop_boxes(tf.constant(x), training=False)
    boxes, flip = boxes.numpy(), flip.numpy()
    for b in range(2):
        for p in range(5):
            y0, x0, y1, x1 = boxes[b, p]
            # Every crop side is >= round(sqrt(0.08 * 1600 * 3/4)) = 10 > 8 px, so the
            # batched crop is exactly a resize of the isolated slice.
            crop = tf.image.resize(x[b, y0:y1, x0:x1], (8, 8), antialias=False)
            if flip[b, p]:
                crop = crop[:, ::-1]
            ref = tf.reduce_mean(enc.backbone(crop[None]), axis=[1, 2])[0]
            np.testing.assert_allclose(nodes[b, p], ref, rtol=1e-4, atol=1e-5)


def test_crop_statistics_follow_random_resized_crop_defaults():
    enc = SamplingEncoder(tiny_backbone(), num_patches=50, seed=0)
    boxes, flip = enc.crop_boxes(tf.zeros([40, 84, 84, 3]), training=False)
    boxes = boxes.numpy().reshape(-1, 4).astype(np.float64)
    h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    area = h * w / 84**2
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 84).all() and (boxes[:, 3] <= 84).all()
    # Rounding of h and w blurs the bounds by about one pixel.
    assert area.min() > 0.06 and area.max() <= 1.0
    assert (w / h).min() > 0.7 and (w / h).max() < 1.43
    assert 0.4 < area.mean() < 0.62  # E[U(0.08, 1)] = 0.54, minus rejected draws
    assert 0.45 < flip.numpy().mean() < 0.55


def test_eval_is_deterministic_per_seed_and_training_is_random(rng):
    x = tf.constant(rng.normal(size=(2, 24, 24, 3)), tf.float32)
    enc = SamplingEncoder(tiny_backbone(), num_patches=4, crop_size=8, seed=7)
    same_seed = SamplingEncoder(enc.backbone, num_patches=4, crop_size=8, seed=7)
    other_seed = SamplingEncoder(enc.backbone, num_patches=4, crop_size=8, seed=8)
    first = enc(x).numpy()
    np.testing.assert_array_equal(enc(x).numpy(), first)
    np.testing.assert_array_equal(same_seed(x).numpy(), first)
    assert np.abs(other_seed(x).numpy() - first).max() > 1e-4
    assert np.abs(enc(x, call_seed=1).numpy() - first).max() > 1e-4
    np.testing.assert_array_equal(enc(x, call_seed=1).numpy(), enc(x, call_seed=1).numpy())
    t1, _ = enc.crop_boxes(x, training=True)
    t2, _ = enc.crop_boxes(x, training=True)
    assert np.any(t1.numpy() != t2.numpy())


def test_saving_roundtrip_tf_function_and_gradients(tmp_path, rng):
    enc = SamplingEncoder(tiny_backbone(), num_patches=3, crop_size=8, seed=5, name="samp")
    x = tf.constant(rng.normal(size=(2, 20, 20, 3)), tf.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(enc(x, training=True) ** 2)
    grads = tape.gradient(loss, enc.backbone.trainable_weights)
    assert all(g is not None and np.abs(g.numpy()).max() > 0 for g in grads)
    expected = enc(x).numpy()
    path = str(tmp_path / "samp.keras")
    keras.saving.save_model(enc, path)
    loaded = keras.saving.load_model(path)
    assert (loaded.num_patches, loaded.seed) == (3, 5)
    np.testing.assert_allclose(loaded(x), expected, rtol=1e-5, atol=1e-5)
    fn = tf.function(lambda t: loaded(t, training=False))
    np.testing.assert_allclose(fn(x), expected, rtol=1e-5, atol=1e-5)
    train_fn = tf.function(lambda t: loaded(t, training=True))
    assert np.any(train_fn(x).numpy() != train_fn(x).numpy())


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_patches"):
        SamplingEncoder(tiny_backbone(), num_patches=0)
    with pytest.raises(ValueError, match="scale"):
        SamplingEncoder(tiny_backbone(), scale=(0.5, 0.1))
    with pytest.raises(ValueError, match="images"):
        SamplingEncoder(tiny_backbone(), crop_size=8)(tf.zeros([20, 20, 3]))
