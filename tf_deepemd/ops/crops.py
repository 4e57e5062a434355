"""Crop geometry and batched crop extraction for the Grid and Sampling encoders.

Pixel boxes are ``(y0, x0, y1, x1)`` with END-EXCLUSIVE integer pixel
bounds, like PIL's ``img.crop((x0, y0, x1, y1))`` in the official loaders
(note the different coordinate order). Box arithmetic runs in float64
because the official code does it in Python floats, and ``floor`` of a
float32 product can land one pixel off (e.g. ``100 / 3 * 1.5``).
"""

import math

import tensorflow as tf


def grid_intervals(size, num_grid, ratio):
    """1-D intervals of the Grid encoder's enlarged cells (docs/method.md, "Region encoders").

    With ``cell = floor(size / n)``, ``side = floor(size / n * ratio)`` and
    centres ``c_k = floor(cell / 2) + k * cell``, cell ``k`` spans
    ``[max(0, c_k - floor(side / 2)), min(size, c_k + floor(side / 2)))``.
    E.g. size 84, ratio 2: n=2 -> [0, 63), [21, 84).

    Args:
      size: int or scalar int tensor, image side in pixels.
      num_grid: int ``n``, cells per side.
      ratio: float ``[...]`` enlargement ratios (e.g. one per image).

    Returns:
      int32 ``[..., n, 2]`` of (start, end) pixel bounds.
    """
    if int(num_grid) < 1:
        raise ValueError(f"`num_grid` must be >= 1, got {num_grid}.")
    n = int(num_grid)
    size = tf.cast(size, tf.int64)
    ratio = tf.cast(ratio, tf.float64)
    cell = size // n
    side = tf.cast(tf.floor(tf.cast(size, tf.float64) / n * ratio), tf.int64)
    half = (side // 2)[..., None]  # [..., 1]
    centres = cell // 2 + tf.range(n, dtype=tf.int64) * cell  # [n]
    start = tf.maximum(centres - half, 0)
    end = tf.minimum(centres + half, size)
    return tf.cast(tf.stack([start, end], axis=-1), tf.int32)


def grid_boxes(height, width, num_grid, ratio):
    """Row-major pixel boxes of one Grid level.

    The same ratio is used for both axes (official `get_pyramid`).

    Args:
      height, width: ints or scalar int tensors, image size.
      num_grid: int ``n``.
      ratio: float ``[B]``.

    Returns:
      int32 ``[B, n * n, 4]`` boxes ``(y0, x0, y1, x1)``, patch ``r * n + c``
      being grid row ``r``, column ``c``.
    """
    n = int(num_grid)
    rows = grid_intervals(height, n, ratio)  # [B, n, 2]
    cols = grid_intervals(width, n, ratio)
    y = tf.broadcast_to(rows[:, :, None, :], tf.concat([tf.shape(rows)[:1], [n, n, 2]], 0))
    x = tf.broadcast_to(cols[:, None, :, :], tf.concat([tf.shape(cols)[:1], [n, n, 2]], 0))
    boxes = tf.stack([y[..., 0], x[..., 0], y[..., 1], x[..., 1]], axis=-1)
    return tf.reshape(boxes, [-1, n * n, 4])


def random_resized_crop_boxes(
    uniforms, height, width, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)
):
    """torchvision ``RandomResizedCrop.get_params``, vectorised.

    torchvision tries up to 10 (area, aspect) draws and takes the first
    that fits in the image, else falls back to a centre crop with the
    aspect ratio clamped to ``ratio``. Here all attempts are drawn at once
    and the first valid one is selected, so there is no loop.

    Args:
      uniforms: float ``[..., T, 4]`` in [0, 1): per attempt the area,
        log-aspect, row-offset and column-offset draws (T attempts, 10 in
        torchvision). The caller owns the randomness (stateless seeds).
      height, width: ints or scalar int tensors, image size.
      scale: (min, max) crop area as a fraction of the image area.
      ratio: (min, max) crop aspect ratio width / height.

    Returns:
      int32 ``[..., 4]`` boxes ``(y0, x0, y1, x1)``.
    """
    uniforms = tf.cast(uniforms, tf.float64)
    h_img = tf.cast(height, tf.float64)
    w_img = tf.cast(width, tf.float64)
    u_area, u_aspect, u_row, u_col = tf.unstack(uniforms, axis=-1)  # [..., T]
    area = h_img * w_img * (scale[0] + (scale[1] - scale[0]) * u_area)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = tf.exp(log_lo + (log_hi - log_lo) * u_aspect)
    # Python's round() (banker's) as torchvision; tf.round also rounds half to even.
    w = tf.round(tf.sqrt(area * aspect))
    h = tf.round(tf.sqrt(area / aspect))
    valid = (w > 0) & (w <= w_img) & (h > 0) & (h <= h_img)
    # torch.randint(0, H - h + 1): uniform integer offset.
    top = tf.floor(u_row * (h_img - h + 1.0))
    left = tf.floor(u_col * (w_img - w + 1.0))

    first = tf.argmax(tf.cast(valid, tf.int32), axis=-1)[..., None]  # [..., 1]

    def pick(t):  # t[..., first]
        return tf.squeeze(tf.gather(t, first, axis=-1, batch_dims=first.shape.rank - 1), -1)

    found = tf.reduce_any(valid, axis=-1)

    # Fallback: whole image, aspect ratio clamped into `ratio`, centred.
    in_ratio = w_img / h_img
    fb_w = tf.where(in_ratio > ratio[1], tf.round(h_img * ratio[1]), w_img)
    fb_h = tf.where(in_ratio < ratio[0], tf.round(w_img / ratio[0]), h_img)
    fb_top = tf.floor((h_img - fb_h) / 2.0)
    fb_left = tf.floor((w_img - fb_w) / 2.0)

    h_sel = tf.where(found, pick(h), fb_h)
    w_sel = tf.where(found, pick(w), fb_w)
    top_sel = tf.where(found, pick(top), fb_top)
    left_sel = tf.where(found, pick(left), fb_left)
    boxes = tf.stack([top_sel, left_sel, top_sel + h_sel, left_sel + w_sel], axis=-1)
    return tf.cast(boxes, tf.int32)


def crop_and_resize_boxes(images, boxes, crop_size, flip=None):
    """Crops pixel boxes of a batch and resizes each to ``crop_size``.

    Output pixel ``i`` of a box ``[a, b)`` samples the image bilinearly at
    the half-pixel position ``a + (i + 0.5) * (b - a) / out - 0.5`` (the
    convention of ``tf.image.resize`` and PIL), clamped at the image edge,
    and all crops come from ONE `tf.image.crop_and_resize` call. That op
    uses a corner-aligned grid and fills out-of-image samples with a
    constant, so the images are padded by one replicated pixel and the
    boxes mapped onto that grid. A flipped crop is the same box with its
    x-bounds swapped.

    When a crop is not enlarged (``b - a >= out``), each result equals
    ``tf.image.resize(image[y0:y1, x0:x1], crop_size, antialias=False)``.
    When it is enlarged, the outermost samples lie up to half a source
    pixel outside the box and blend in the neighbouring image pixel, where
    resizing the isolated crop (official PIL path) repeats its edge pixel.
    PIL's antialiasing when shrinking is not reproduced either.

    Args:
      images: float ``[B, H, W, C]``.
      boxes: int/float ``[B, P, 4]`` pixel boxes ``(y0, x0, y1, x1)``.
      crop_size: ``(crop_h, crop_w)`` ints.
      flip: optional bool ``[B, P]``, mirror the crop horizontally.

    Returns:
      ``[B * P, crop_h, crop_w, C]`` in image-major order (crop ``b * P + p``),
      dtype of ``images``.
    """
    images = tf.convert_to_tensor(images)
    crop_h, crop_w = (int(s) for s in crop_size)
    shape = tf.shape(images)
    h_img = tf.cast(shape[1], tf.float64)
    w_img = tf.cast(shape[2], tf.float64)
    boxes = tf.cast(boxes, tf.float64)
    y0, x0, y1, x1 = tf.unstack(boxes, axis=-1)  # [B, P]

    def axis_bounds(start, end, out, length):
        # Half-pixel source coordinate of output sample i:
        #   start + (i + 0.5) * (end - start) / out - 0.5,
        # +1 for the padding; crop_and_resize samples at
        #   lo * (length + 1) + i * (hi - lo) * (length + 1) / (out - 1).
        step = (end - start) / out
        first = start + 0.5 * step - 0.5 + 1.0
        last = first + step * (out - 1)
        return first / (length + 1.0), last / (length + 1.0)

    top, bottom = axis_bounds(y0, y1, crop_h, h_img)
    left, right = axis_bounds(x0, x1, crop_w, w_img)
    if flip is not None:
        left, right = tf.where(flip, right, left), tf.where(flip, left, right)
    norm_boxes = tf.cast(tf.stack([top, left, bottom, right], axis=-1), tf.float32)
    num_boxes = tf.shape(norm_boxes)[1]
    box_indices = tf.repeat(tf.range(shape[0]), num_boxes)
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    crops = tf.image.crop_and_resize(
        padded,
        tf.reshape(norm_boxes, [-1, 4]),
        box_indices,
        [crop_h, crop_w],
        method="bilinear",
    )
    return tf.cast(crops, images.dtype)
