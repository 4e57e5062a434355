"""Grid box arithmetic, RandomResizedCrop parameters and batched crop extraction."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tf_deepemd.ops.crops import (
    crop_and_resize_boxes,
    grid_boxes,
    grid_intervals,
    random_resized_crop_boxes,
)


def py_grid_location(size, ratio, num_grid):
    """The official loader's get_grid_location, transcribed."""
    raw = int(size / num_grid)
    enlarged = int(size / num_grid * ratio)
    centre = raw // 2
    out = []
    for _ in range(num_grid):
        out.append((max(0, centre - enlarged // 2), min(size, centre + enlarged // 2)))
        centre += raw
    return out


def py_random_resized_crop(u, height, width, scale, ratio):
    """torchvision RandomResizedCrop.get_params with given uniforms [T, 4]."""
    area = height * width
    for ua, ur, ui, uj in u:
        target_area = area * (scale[0] + (scale[1] - scale[0]) * ua)
        log_r = (math.log(ratio[0]), math.log(ratio[1]))
        aspect = math.exp(log_r[0] + (log_r[1] - log_r[0]) * ur)
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(ui * (height - h + 1))
            j = int(uj * (width - w + 1))
            return (i, j, i + h, j + w)
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    i, j = (height - h) // 2, (width - w) // 2
    return (i, j, i + h, j + w)


def test_grid_intervals_method_example():
    np.testing.assert_array_equal(grid_intervals(84, 2, [2.0]).numpy()[0], [[0, 63], [21, 84]])
    np.testing.assert_array_equal(
        grid_intervals(84, 3, [2.0]).numpy()[0], [[0, 42], [14, 70], [42, 84]]
    )


def test_grid_intervals_match_official_arithmetic(rng):
    sizes = [84, 92, 100, 37, 224]
    ratios = np.concatenate([[1.0, 1.5, 2.0, 2.5], rng.uniform(1.0, 3.0, size=12)])
    for size in sizes:
        for n in (1, 2, 3, 5):
            out = grid_intervals(size, n, ratios).numpy()
            for r, got in zip(ratios, out):
                np.testing.assert_array_equal(got, py_grid_location(size, float(r), n))


def test_grid_intervals_float64_floor_case():
    # 100 / 3 * 1.5 is 50.000000000000007 in float64 but 49.999998 in float32.
    assert py_grid_location(100, 1.5, 3)[0] == (0, 41)
    np.testing.assert_array_equal(grid_intervals(100, 3, [1.5]).numpy()[0, 0], [0, 41])


def test_grid_boxes_are_row_major_per_image():
    boxes = grid_boxes(84, 60, 3, tf.constant([2.0, 1.0], tf.float64)).numpy()
    assert boxes.shape == (2, 9, 4)
    rows = py_grid_location(84, 2.0, 3)
    cols = py_grid_location(60, 2.0, 3)
    for r in range(3):
        for c in range(3):
            np.testing.assert_array_equal(
                boxes[0, r * 3 + c], [rows[r][0], cols[c][0], rows[r][1], cols[c][1]]
            )
    np.testing.assert_array_equal(boxes[1, 4], [28, 20, 56, 40])  # ratio 1: the plain middle cell


@pytest.mark.parametrize("hw", [(84, 84), (40, 90), (90, 40)])
def test_random_resized_crop_matches_torchvision_logic(rng, hw):
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    u = rng.uniform(size=(6, 5, 10, 4))
    # Force some rows to the fallback path: huge areas never fit.
    u_fb = u.copy()
    u_fb[0, :, :, 0] = 1.0
    boxes = random_resized_crop_boxes(u_fb, hw[0], hw[1], (1.2, 1.5), ratio).numpy()
    for p in range(5):
        np.testing.assert_array_equal(
            boxes[0, p], py_random_resized_crop(u_fb[0, p], *hw, (1.2, 1.5), ratio)
        )
    boxes = random_resized_crop_boxes(u, hw[0], hw[1], scale, ratio).numpy()
    for b in range(6):
        for p in range(5):
            np.testing.assert_array_equal(
                boxes[b, p], py_random_resized_crop(u[b, p], *hw, scale, ratio)
            )
    assert (boxes[..., 0] >= 0).all() and (boxes[..., 2] <= hw[0]).all()
    assert (boxes[..., 1] >= 0).all() and (boxes[..., 3] <= hw[1]).all()


def np_crop_resize(image, box, out_h, out_w):
    """Half-pixel bilinear sampling of the box on the WHOLE image, edge-clamped."""
    y0, x0, y1, x1 = box
    ys = y0 + (np.arange(out_h) + 0.5) * (y1 - y0) / out_h - 0.5
    xs = x0 + (np.arange(out_w) + 0.5) * (x1 - x0) / out_w - 0.5

    def taps(pos, length):
        pos = np.clip(pos, 0, length - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, length - 1)
        return lo, hi, pos - lo

    y_lo, y_hi, fy = taps(ys, image.shape[0])
    x_lo, x_hi, fx = taps(xs, image.shape[1])
    top = image[y_lo][:, x_lo] * (1 - fx)[None, :, None] + image[y_lo][:, x_hi] * fx[None, :, None]
    bot = image[y_hi][:, x_lo] * (1 - fx)[None, :, None] + image[y_hi][:, x_hi] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bot * fy[:, None, None]


def test_crop_and_resize_matches_half_pixel_reference(rng):
    images = rng.normal(size=(2, 12, 10, 3)).astype(np.float32)
    boxes = np.array(
        [[[0, 0, 12, 10], [0, 0, 6, 5], [3, 2, 11, 9]],
         [[6, 5, 12, 10], [1, 4, 4, 7], [0, 3, 12, 4]]], np.int32
    )
    crops = crop_and_resize_boxes(images, boxes, (8, 7)).numpy()
    assert crops.shape == (6, 8, 7, 3)
    for b in range(2):
        for p in range(3):
            ref = np_crop_resize(images[b].astype(np.float64), boxes[b, p], 8, 7)
            np.testing.assert_allclose(crops[b * 3 + p], ref, atol=1e-5)


def test_downscaled_crop_equals_resize_of_the_slice(rng):
    # When the crop is not enlarged every sample lies inside it, so the
    # result is exactly tf.image.resize of the isolated crop (PIL-like,
    # without antialiasing).
    images = rng.normal(size=(2, 20, 18, 3)).astype(np.float32)
    boxes = np.array([[[0, 0, 20, 18], [2, 3, 17, 16]], [[5, 0, 20, 9], [0, 6, 8, 18]]])
    crops = crop_and_resize_boxes(images, boxes, (8, 7)).numpy()
    for b in range(2):
        for p in range(2):
            y0, x0, y1, x1 = boxes[b, p]
            ref = tf.image.resize(
                images[b, y0:y1, x0:x1], (8, 7), method="bilinear", antialias=False
            ).numpy()
            np.testing.assert_allclose(crops[b * 2 + p], ref, atol=1e-5)


def test_identity_box_returns_the_image_and_flip_mirrors(rng):
    images = rng.normal(size=(1, 9, 9, 2)).astype(np.float32)
    boxes = np.array([[[0, 0, 9, 9], [2, 1, 7, 8]]])
    plain = crop_and_resize_boxes(images, boxes, (9, 9)).numpy()
    np.testing.assert_allclose(plain[0], images[0], atol=1e-5)
    flipped = crop_and_resize_boxes(images, boxes, (9, 9), flip=[[True, True]]).numpy()
    np.testing.assert_allclose(flipped, plain[:, :, ::-1], atol=1e-5)
