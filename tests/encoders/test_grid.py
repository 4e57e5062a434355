"""GridEncoder: official crop arithmetic per patch, pyramid order, modes, saving."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from tf_deepemd.backbones import Conv4
from tf_deepemd.encoders import GridEncoder


def py_grid_location(size, ratio, num_grid):
    raw, enlarged = int(size / num_grid), int(size / num_grid * ratio)
    centre, out = raw // 2, []
    for _ in range(num_grid):
        out.append((max(0, centre - enlarged // 2), min(size, centre + enlarged // 2)))
        centre += raw
    return out


def tiny_backbone():
    return Conv4(widths=(4, 4, 4, 6), num_pools=2)


def test_eval_nodes_equal_gap_of_backbone_on_each_official_crop(rng):
    enc = GridEncoder(tiny_backbone(), patch_list=(2, 3), patch_ratio=2.0, crop_size=16)
    # 48 px: every ratio-2 crop (>= 24 px... 32 px) is shrunk to 16 px, so
    # the crop equals tf.image.resize of the isolated slice.
    x = rng.normal(size=(2, 48, 48, 3)).astype(np.float32)
    nodes = enc(x, training=False).numpy()
    assert nodes.shape == (2, 13, 6)
    assert enc.compute_output_shape((2, 48, 48, 3)) == (2, 13, 6)
    for b in range(2):
        k = 0
        for n in (2, 3):
            loc = py_grid_location(48, 2.0, n)
            for r in range(n):
                for c in range(n):
                    (y0, y1), (x0, x1) = loc[r], loc[c]
                    crop = tf.image.resize(x[b, y0:y1, x0:x1], (16, 16), antialias=False)
                    ref = tf.reduce_mean(enc.backbone(crop[None]), axis=[1, 2])[0]
                    np.testing.assert_allclose(nodes[b, k], ref, rtol=1e-4, atol=1e-5)
                    k += 1


def test_training_draws_ratio_per_image_and_level_and_flips(rng):
    enc = GridEncoder(tiny_backbone(), patch_list=(2, 3), seed=1)
    x = tf.zeros([4, 84, 84, 3])
    eval_boxes, eval_flip = enc.crop_boxes(x, training=False)
    assert eval_flip is None
    np.testing.assert_array_equal(eval_boxes[0, :2], [[0, 0, 63, 63], [0, 21, 63, 84]])
    boxes, flip = enc.crop_boxes(x, training=True)
    boxes = boxes.numpy()
    assert boxes.shape == (4, 13, 4) and flip.shape == (4, 13)
    # Recover each (image, level) ratio's enlarged side from the first-row, first-col
    # crop of level n: side // 2 = end - centre, centre = cell // 2.
    for n, first in ((2, 0), (3, 4)):
        halves = boxes[:, first, 2] - (84 // n) // 2
        sides_lo, sides_hi = 2 * halves, 2 * halves + 1
        assert (sides_hi >= int(84 / n * 1.0)).all() and (sides_lo <= int(84 / n * 3.0)).all()
    # Ratios differ between images and between levels of one image.
    assert len({tuple(b[:4].ravel()) for b in boxes}) == 4
    # Each level's boxes are consistent with a single ratio (the official arithmetic).
    for b in range(4):
        half = boxes[b, 4, 2] - 14
        ratio_lo, ratio_hi = (2 * half) / 28, (2 * half + 2) / 28
        r = (ratio_lo + ratio_hi) / 2
        rows = py_grid_location(84, r, 3)
        np.testing.assert_array_equal(boxes[b, 4:, 0], np.repeat([p[0] for p in rows], 3))
    assert 0 < flip.numpy().mean() < 1
    again, _ = enc.crop_boxes(x, training=True)
    assert np.any(again.numpy() != boxes)


def test_saving_roundtrip_tf_function_and_gradients(tmp_path, rng):
    enc = GridEncoder(tiny_backbone(), patch_list=(1, 2), crop_size=12, seed=2, name="grid")
    x = tf.constant(rng.normal(size=(2, 24, 24, 3)), tf.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(enc(x, training=True) ** 2)
    grads = tape.gradient(loss, enc.backbone.trainable_weights)
    assert all(g is not None and np.abs(g.numpy()).max() > 0 for g in grads)
    expected = enc(x).numpy()
    path = str(tmp_path / "grid.keras")
    keras.saving.save_model(enc, path)
    loaded = keras.saving.load_model(path)
    assert loaded.patch_list == (1, 2) and loaded.crop_size == (12, 12)
    np.testing.assert_allclose(loaded(x), expected, rtol=1e-5, atol=1e-5)
    fn = tf.function(lambda t: loaded(t, training=True))
    assert fn(x).shape == (2, 5, 6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="patch_list"):
        GridEncoder(tiny_backbone(), patch_list=(0,))
    with pytest.raises(ValueError, match="crop_size"):
        GridEncoder(tiny_backbone(), crop_size=(0, 4))
    with pytest.raises(ValueError, match="images"):
        GridEncoder(tiny_backbone())(tf.zeros([2, 24, 24]))
