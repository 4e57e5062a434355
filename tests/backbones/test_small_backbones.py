"""Conv-4, DropBlock and the backbone registry."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from tf_deepemd.backbones import (
    Conv4,
    DropBlock2D,
    ResNet12,
    available_backbones,
    make_backbone,
)


def test_conv4_gives_4x4_nodes_on_32px():
    net = Conv4()
    assert net(tf.zeros([2, 32, 32, 3])).shape == (2, 4, 4, 64)
    assert net.compute_output_shape((None, 84, 84, 3)) == (None, 10, 10, 64)
    assert Conv4(num_pools=4)(tf.zeros([1, 32, 32, 3])).shape == (1, 2, 2, 64)
    with pytest.raises(ValueError, match="num_pools"):
        Conv4(num_pools=5)


def test_conv4_saving_roundtrip(tmp_path, rng):
    net = Conv4(widths=(4, 4, 4, 6))
    x = tf.constant(rng.normal(size=(2, 16, 16, 3)), tf.float32)
    net(x, training=True)
    expected = net(x).numpy()
    net.save(str(tmp_path / "c4.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "c4.keras"))
    np.testing.assert_allclose(loaded(x), expected, atol=1e-6)


def test_registry():
    assert {"resnet12", "resnet12_small", "conv4"} <= set(available_backbones())
    small = make_backbone("resnet12_small")
    assert isinstance(small, ResNet12)
    assert small.compute_output_shape((None, 32, 32, 3)) == (None, 4, 4, 128)
    assert make_backbone("resnet12").widths == (64, 160, 320, 640)
    assert make_backbone("conv4", widths=(8, 8, 8, 8)).widths == (8, 8, 8, 8)
    with pytest.raises(ValueError, match="resnet12_small"):
        make_backbone("resnet18")


def test_dropblock_drops_square_blocks_at_the_target_rate():
    layer = DropBlock2D(rate=0.2, block_size=3, seed=0)
    x = tf.ones([64, 12, 12, 8])
    np.testing.assert_array_equal(layer(x, training=False), x)
    out = layer(x, training=True).numpy()
    dropped = out == 0
    assert 0.15 < dropped.mean() < 0.25
    kept = out[~dropped]
    # Kept units share one rescale factor ~ 1 / (1 - dropped fraction).
    np.testing.assert_allclose(kept, 1.0 / (1.0 - dropped.mean()), rtol=1e-5)
    # Every dropped unit lies in a fully dropped 3x3 square (blocks, not pixels).
    d = dropped.transpose(0, 3, 1, 2).reshape(-1, 12, 12)
    for m in d[:50]:
        for i, j in zip(*np.nonzero(m)):
            assert any(
                m[max(r, 0):r + 3, max(c, 0):c + 3].all()
                for r in range(i - 2, i + 1) for c in range(j - 2, j + 1)
                if 0 <= r <= 9 and 0 <= c <= 9
            )


def test_dropblock_config_roundtrip():
    layer = DropBlock2D(0.1, block_size=5, seed=4)
    clone = DropBlock2D.from_config(layer.get_config())
    assert (clone.rate, clone.block_size, clone.seed) == (0.1, 5, 4)
    with pytest.raises(ValueError, match="rate"):
        DropBlock2D(1.0)
