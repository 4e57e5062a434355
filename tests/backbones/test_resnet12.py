"""ResNet-12: official shape/parameter count, init, BN settings, options, saving."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from tf_deepemd.backbones import ResNet12, ResNetBlock


def test_official_parameter_count_and_84px_output_shape():
    net = ResNet12()
    net.build((None, 84, 84, 3))
    trainable = sum(int(np.prod(v.shape)) for v in net.trainable_weights)
    assert trainable == 12_424_320
    assert net.compute_output_shape((2, 84, 84, 3)) == (2, 5, 5, 640)
    out = net(tf.random.normal([2, 84, 84, 3]), training=False)
    assert out.shape == (2, 5, 5, 640)


def test_block_structure_and_pytorch_bn_settings():
    block = ResNetBlock(8)
    block.build((None, 6, 6, 3))
    kernels = [c.kernel.shape for c in block.convs] + [block.shortcut_conv.kernel.shape]
    assert kernels == [(3, 3, 3, 8), (3, 3, 8, 8), (3, 3, 8, 8), (1, 1, 3, 8)]
    assert all(not c.use_bias for c in block.convs + [block.shortcut_conv])
    for bn in block.bns + [block.shortcut_bn]:
        assert bn.momentum == pytest.approx(0.9) and bn.epsilon == pytest.approx(1e-5)
    # 2x2 max-pool with floor: 21 -> 10.
    assert block.compute_output_shape((1, 21, 21, 3)) == (1, 10, 10, 8)
    assert block(tf.zeros([1, 21, 21, 3])).shape == (1, 10, 10, 8)


def np_block(x, kernels, shortcut, slope=0.1):
    """Inference-mode block with fresh BN (gamma 1, beta 0, mean 0, var 1)."""
    bn = 1.0 / np.sqrt(1.0 + 1e-5)

    def conv(t, k):
        kh = k.shape[0]
        pad = kh // 2
        tp = np.pad(t, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        out = np.zeros(t.shape[:3] + (k.shape[-1],))
        for i in range(kh):
            for j in range(kh):
                window = tp[:, i:i + t.shape[1], j:j + t.shape[2]]
                out += np.einsum("bhwc,cd->bhwd", window, k[i, j])
        return out

    leaky = lambda t: np.where(t > 0, t, slope * t)  # noqa: E731
    h = leaky(conv(x, kernels[0]) * bn)
    h = leaky(conv(h, kernels[1]) * bn)
    h = conv(h, kernels[2]) * bn
    h = leaky(h + conv(x, shortcut) * bn)
    b, hh, ww, c = h.shape
    h = h[:, : hh // 2 * 2, : ww // 2 * 2]
    return h.reshape(b, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))


def test_block_forward_matches_numpy_reference(rng):
    block = ResNetBlock(4)
    x = rng.normal(size=(2, 5, 5, 3)).astype(np.float32)
    out = block(x, training=False).numpy()
    kernels = [c.kernel.numpy().astype(np.float64) for c in block.convs]
    ref = np_block(x.astype(np.float64), kernels, block.shortcut_conv.kernel.numpy())
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_kaiming_fan_out_init_std():
    block = ResNetBlock(64)
    block.build((None, 8, 8, 64))
    k = block.convs[1].kernel.numpy()  # 3x3x64x64: 36,864 samples
    # PyTorch kaiming_normal_(fan_out, gain sqrt 2): std = sqrt(2 / (9 * 64)).
    assert k.std() == pytest.approx(np.sqrt(2.0 / (9 * 64)), rel=0.03)
    # Untruncated normal: values beyond 2 std exist (a truncated init has none).
    assert np.abs(k).max() > 2.5 * np.sqrt(2.0 / (9 * 64))
    s = block.shortcut_conv.kernel.numpy()
    assert s.std() == pytest.approx(np.sqrt(2.0 / 64), rel=0.05)


def test_small_widths_without_last_pool():
    net = ResNet12(widths=(4, 6, 8, 10), last_pool=False)
    out = net(tf.zeros([2, 32, 32, 3]))
    assert out.shape == (2, 4, 4, 10)
    assert net.compute_output_shape((None, 32, 32, 3)) == (None, 4, 4, 10)


def test_dropblock_option_is_off_by_default_and_only_acts_in_training(rng):
    x = tf.constant(rng.normal(size=(2, 32, 32, 3)), tf.float32)
    plain = ResNet12(widths=(4, 4, 4, 4))
    plain.build(x.shape)
    assert not any(b.dropout for b in plain.blocks)
    reg = ResNet12(widths=(4, 4, 4, 4), drop_rate=0.5, drop_block_size=3, seed=1)
    reg.build(x.shape)
    reg.set_weights(plain.get_weights())
    assert [type(b.dropout).__name__ for b in reg.blocks] == [
        "Dropout", "Dropout", "DropBlock2D", "DropBlock2D"
    ]
    np.testing.assert_allclose(reg(x, training=False), plain(x, training=False), atol=1e-6)
    assert np.abs(reg(x, training=True) - plain(x, training=True)).max() > 1e-3


def test_saving_roundtrip_and_tf_function(tmp_path, rng):
    net = ResNet12(widths=(4, 6, 8, 10), last_pool=False, drop_rate=0.1, seed=3)
    x = tf.constant(rng.normal(size=(2, 16, 16, 3)), tf.float32)
    net(x, training=True)  # moves the BN statistics away from their init
    expected = net(x, training=False).numpy()
    path = str(tmp_path / "resnet12.keras")
    net.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ResNet12) and loaded.widths == (4, 6, 8, 10)
    np.testing.assert_allclose(loaded(x, training=False), expected, rtol=1e-5, atol=1e-5)
    fn = tf.function(lambda t: loaded(t, training=False))
    np.testing.assert_allclose(fn(x), expected, rtol=1e-5, atol=1e-5)


def test_bad_input_rank_names_images():
    net = ResNet12(widths=(2, 2, 2, 2))
    with pytest.raises(ValueError, match="images"):
        net(tf.zeros([16, 16, 3]))
    with pytest.raises(ValueError, match="widths"):
        ResNet12(widths=(2, 2, 2))
