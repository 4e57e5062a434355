"""Per-image transforms (docs/method.md, "Data")."""

import numpy as np
import pytest
import tensorflow as tf

from tf_deepemd.data import FEAT_NORMALIZATION
from tf_deepemd.data.preprocessing import (
    decode_image_file,
    eval_resize_size,
    normalize,
    preprocess_image,
    random_resized_crop_window,
    resize_bilinear,
    resize_center_crop,
)


def windows(height, width, seeds):
    return np.array(
        [[int(v) for v in random_resized_crop_window(height, width, tf.constant([s, 1]))] for s in seeds]
    )


def test_random_resized_crop_window_follows_torchvision_ranges():
    height, width = 60, 80
    found = windows(height, width, range(300))
    top, left, crop_h, crop_w = found.T
    assert np.all((top >= 0) & (left >= 0) & (top + crop_h <= height) & (left + crop_w <= width))
    area = crop_h * crop_w / (height * width)
    aspect = crop_w / crop_h
    # Rounding w and h to integers moves area and ratio a little.
    assert area.min() >= 0.07 and area.max() <= 1.0
    assert aspect.min() >= 0.75 * 0.9 and aspect.max() <= 4 / 3 * 1.1
    # The whole range is used, and the offset is random, not centred.
    assert area.min() < 0.15 and area.max() > 0.85
    assert len(set(top.tolist())) > 10 and len(set(left.tolist())) > 10


def test_random_resized_crop_window_is_a_function_of_the_seed():
    a = windows(50, 50, [3, 4, 3])
    np.testing.assert_array_equal(a[0], a[2])
    assert not np.array_equal(a[0], a[1])


def test_random_resized_crop_falls_back_to_a_centre_crop():
    # No window of >= 8% of a 1 x 100 image has an allowed aspect ratio:
    # torchvision then takes the whole height and width = round(1 * 4/3) = 1.
    for top, left, crop_h, crop_w in windows(1, 100, range(5)):
        assert (top, left, crop_h, crop_w) == (0, 49, 1, 1)


def test_eval_transform_resizes_to_92_over_84_and_centre_crops():
    assert eval_resize_size(84) == 92 and eval_resize_size(32) == 35
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(92, 92, 3)).astype(np.uint8)
    # A 92 x 92 input is not resized: the output is its centre 84 x 84.
    out = resize_center_crop(tf.constant(image), 84).numpy()
    np.testing.assert_allclose(out, image[4:88, 4:88].astype(np.float32), atol=1e-3)
    # 35 - 32 = 3: torchvision's round(1.5) = 2 (half to even).
    image = rng.integers(0, 256, size=(35, 35, 3)).astype(np.uint8)
    out = resize_center_crop(tf.constant(image), 32).numpy()
    np.testing.assert_allclose(out, image[2:34, 2:34].astype(np.float32), atol=1e-3)


@pytest.mark.parametrize("source, target", [((30, 40), (50, 50)), ((90, 60), (32, 32)), ((20, 70), (40, 40))])
def test_resize_matches_antialiased_bilinear_with_static_and_dynamic_shapes(source, target):
    image = tf.constant(np.random.default_rng(2).integers(0, 256, size=source + (3,)).astype(np.uint8))
    reference = tf.image.resize(image, target, antialias=True).numpy()
    np.testing.assert_allclose(resize_bilinear(image, *target).numpy(), reference, atol=1e-3)
    dynamic = tf.function(
        lambda x: resize_bilinear(x, *target), input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)]
    )
    np.testing.assert_allclose(dynamic(image).numpy(), reference, atol=1e-3)


def test_normalize_uses_the_given_mean_and_std():
    mean, std = FEAT_NORMALIZATION
    image = tf.fill([2, 2, 3], 0.0) + tf.constant(mean) * 255.0
    np.testing.assert_allclose(normalize(image, FEAT_NORMALIZATION).numpy(), 0.0, atol=1e-5)
    white = normalize(tf.fill([1, 1, 3], 255.0), FEAT_NORMALIZATION).numpy()[0, 0]
    np.testing.assert_allclose(white, (1.0 - np.array(mean)) / np.array(std), rtol=1e-5)


def test_training_transform_is_seeded_and_flips():
    rng = np.random.default_rng(1)
    image = tf.constant(rng.integers(0, 256, size=(40, 50, 3)).astype(np.uint8))

    def augment(seed):
        return preprocess_image(image, 16, True, FEAT_NORMALIZATION, tf.constant([seed, 0])).numpy()

    first = augment(5)
    assert first.shape == (16, 16, 3) and first.dtype == np.float32
    np.testing.assert_array_equal(first, augment(5))
    assert not np.allclose(first, augment(6))

    # A left-right symmetric-free image: with 20 seeds, both flip outcomes
    # occur. Compare each crop to the same crop computed without flipping.
    flips = set()
    for seed in range(20):
        seed_tensor = tf.constant([seed, 0])
        crop_seed, _ = tf.unstack(tf.random.experimental.stateless_split(seed_tensor, num=2))
        top, left, h, w = (int(v) for v in random_resized_crop_window(40, 50, crop_seed))
        crop = tf.image.resize(image[top : top + h, left : left + w], [16, 16], antialias=True)
        plain = normalize(crop, FEAT_NORMALIZATION).numpy()
        out = augment(seed)
        if np.allclose(out, plain, atol=1e-4):
            flips.add(False)
        else:
            np.testing.assert_allclose(out, plain[:, ::-1], atol=1e-4)
            flips.add(True)
    assert flips == {False, True}


def test_training_transform_needs_a_seed():
    with pytest.raises(ValueError, match="`seed`"):
        preprocess_image(tf.zeros([8, 8, 3], tf.uint8), 4, True, FEAT_NORMALIZATION)


def test_decode_converts_grey_and_rgba_to_rgb(tmp_path):
    grey = tmp_path / "grey.png"
    tf.io.write_file(str(grey), tf.io.encode_png(tf.fill([5, 6, 1], tf.constant(77, tf.uint8))))
    rgba = tmp_path / "rgba.png"
    tf.io.write_file(str(rgba), tf.io.encode_png(tf.fill([4, 4, 4], tf.constant(200, tf.uint8))))
    image = decode_image_file(tf.constant(str(grey))).numpy()
    assert image.shape == (5, 6, 3) and np.all(image == 77)
    image = decode_image_file(tf.constant(str(rgba))).numpy()
    assert image.shape == (4, 4, 3) and np.all(image == 200)
