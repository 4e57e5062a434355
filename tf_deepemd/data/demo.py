"""`demo`: a generated few-shot dataset that ships with the library as code.

Each of the 100 classes is a distinct foreground object: a shape (the union
of two or three random super-ellipses) painted with a two-colour texture
(stripes, checks, rings or halves; colours from a palette shared by all
classes, so colour alone does not give the class away). An image shows its
class's object at a random position and scale on a cluttered background made
of other patterns (a pool of clutter objects built the same way but smaller,
over a smooth random colour field), with per-image colour jitter and noise.
The object covers about 20-60 % of the image and its place varies from image
to image, the rest being clutter and background, so comparing images pixel
by pixel does little; finding and matching the object region is what works,
which is what DeepEMD's region matching and cross-reference weights are for.

Splits: classes 0-63 train, 64-79 val, 80-99 test (64/16/20 as the
benchmarks). Images: `images_per_class` (default 100) per class,
`generated_size` x `generated_size` (default 32) RGB; reader options of
``make_episode_dataset("demo", ...)``, e.g. ``images_per_class=20`` for a
fast small variant.

Difficulty, measured by ``benchmarks/data_demo_difficulty.py`` (defaults:
100 images per class, 32 px; 5-way 1-shot ProtoNet, 15 queries, 1,000
episodes of the test classes; 2 shared CPU cores), mean accuracy +- 95 % CI:

* raw pixels (normalised, flattened): 24.3 +- 0.3 % (chance: 20 %);
* a 4-block conv net (32-64-64-64, 0.1 M parameters) trained for 60 s as a
  64-way classifier on the train classes (about 1,500 steps of 64 images),
  global-average-pooled features: 72.7 +- 0.7 %.

The data is a pure function of ``(generation_seed, images_per_class,
generated_size)`` and the generator version. It is generated once (about 6 s
for the defaults on one core) and cached as
``demo-v{VERSION}-seed{seed}-n{images_per_class}-px{size}.npz`` under
`data_dir`, by default ``$XDG_CACHE_HOME/tf_deepemd/demo`` (else
``~/.cache/tf_deepemd/demo``); the file is written atomically.
"""

from __future__ import annotations

import functools
import os
import zipfile
from typing import Optional

import numpy as np

from tf_deepemd.data.image_split import ImageSplit
from tf_deepemd.data.sampling import check_integer
from tf_deepemd.run_folder import atomic_path

VERSION = 1
NUM_CLASSES = 100
SPLIT_CLASSES = {"train": range(0, 64), "val": range(64, 80), "test": range(80, 100)}
DEFAULT_IMAGES_PER_CLASS = 100
DEFAULT_IMAGE_SIZE = 32

_SPRITE_SIZE = 32  # sprites are rendered once at this size, then resampled
_NUM_CLUTTER_PATTERNS = 40
_CLUTTER_PER_IMAGE = 5
_FOREGROUND_SCALE = (0.45, 0.8)  # object side / image side
_CLUTTER_SCALE = (0.2, 0.45)
_PALETTE = np.array(
    [
        [220, 50, 47], [38, 139, 210], [133, 153, 0], [181, 137, 0],
        [211, 54, 130], [42, 161, 152], [240, 240, 240], [30, 30, 30],
    ],
    np.float32,
)


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tf_deepemd", "demo")


def read_demo(
    split: str,
    data_dir: Optional[str] = None,
    images_per_class: int = DEFAULT_IMAGES_PER_CLASS,
    generated_size: int = DEFAULT_IMAGE_SIZE,
    generation_seed: int = 0,
) -> ImageSplit:
    """One split of the demo dataset, generated and cached on first use.

    The option names differ from the pipelines' ``image_size`` (output side
    after preprocessing) and ``seed`` (episodes, augmentation), which are
    separate choices.

    Args:
      split: ``"train"`` (64 classes), ``"val"`` (16) or ``"test"`` (20).
      data_dir: cache folder (created if needed); None for the default.
      images_per_class: images of each class, >= 1.
      generated_size: side of the generated images, >= 8.
      generation_seed: seed of the generator, >= 0.

    Returns:
      An in-memory `ImageSplit`; normalisation = per-channel mean/std of the
      train classes.
    """
    check_integer("images_per_class", images_per_class, minimum=1)
    check_integer("generated_size", generated_size, minimum=8)
    check_integer("generation_seed", generation_seed, minimum=0)
    if split not in SPLIT_CLASSES:
        raise ValueError(f"`split` must be one of {tuple(SPLIT_CLASSES)}, got {split!r}.")
    cache_dir = os.path.abspath(os.path.expanduser(data_dir or default_cache_dir()))
    images, mean, std = load_or_generate(
        cache_dir, int(images_per_class), int(generated_size), int(generation_seed)
    )
    classes = SPLIT_CLASSES[split]
    return ImageSplit(
        dataset="demo",
        split=split,
        class_names=tuple(f"pattern_{c:03d}" for c in classes),
        labels=np.repeat(np.arange(len(classes), dtype=np.int32), images_per_class),
        normalization=(tuple(mean.tolist()), tuple(std.tolist())),
        images=images[classes.start : classes.stop].reshape(-1, generated_size, generated_size, 3),
    )


def cache_file_name(images_per_class: int, image_size: int, seed: int) -> str:
    return f"demo-v{VERSION}-seed{seed}-n{images_per_class}-px{image_size}.npz"


@functools.lru_cache(maxsize=2)
def load_or_generate(cache_dir: str, images_per_class: int, image_size: int, seed: int):
    """(images uint8 ``[100, n, S, S, 3]``, mean ``[3]``, std ``[3]``), cached on disk."""
    path = os.path.join(cache_dir, cache_file_name(images_per_class, image_size, seed))
    expected_shape = (NUM_CLASSES, images_per_class, image_size, image_size, 3)
    if os.path.isfile(path):
        try:
            with np.load(path) as cached:
                images, mean, std = cached["images"], cached["mean"], cached["std"]
            if images.shape == expected_shape and images.dtype == np.uint8:
                return images, mean, std
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # unreadable cache (e.g. an interrupted copy): generate again
    images = generate_images(images_per_class, image_size, seed)
    train = images[: SPLIT_CLASSES["train"].stop].reshape(-1, 3).astype(np.float64) / 255.0
    mean, std = train.mean(axis=0), train.std(axis=0)
    # Readers never see a half-written cache, and concurrent writers produce
    # the same bytes.
    with atomic_path(path) as temporary, open(temporary, "wb") as stream:
        np.savez(stream, images=images, mean=mean, std=std)
    return images, mean, std


def generate_images(images_per_class: int, image_size: int, seed: int) -> np.ndarray:
    """Generates the whole dataset: uint8 ``[100, images_per_class, S, S, 3]``."""
    class_sprites = _pad(_make_sprites(np.random.default_rng([seed, 0]), NUM_CLASSES))
    clutter_sprites = _pad(_make_sprites(np.random.default_rng([seed, 1]), _NUM_CLUTTER_PATTERNS))
    images = np.empty((NUM_CLASSES, images_per_class, image_size, image_size, 3), np.uint8)
    for cls in range(NUM_CLASSES):
        rng = np.random.default_rng([seed, 2, cls])
        images[cls] = _render_images(
            rng, cls, class_sprites, clutter_sprites, images_per_class, image_size
        )
    return images


def _make_sprites(rng: np.random.Generator, count: int) -> np.ndarray:
    """Random objects: float32 RGBA ``[count, R, R, 4]``, RGB in [0, 255], alpha in [0, 1]."""
    size = _SPRITE_SIZE
    supersample = 2
    grid = (np.arange(size * supersample) + 0.5) / (size * supersample) * 2.0 - 1.0
    y, x = np.meshgrid(grid, grid, indexing="ij")
    sprites = np.empty((count, size, size, 4), np.float32)
    for index in range(count):
        inside = np.zeros_like(x, bool)
        for _ in range(rng.integers(2, 4)):
            centre = rng.uniform(-0.35, 0.35, size=2)
            radii = rng.uniform(0.25, 0.65, size=2)
            angle = rng.uniform(0, np.pi)
            power = rng.choice([1.0, 2.0, 6.0])  # diamond, ellipse, rounded box
            dx, dy = x - centre[0], y - centre[1]
            u = (dx * np.cos(angle) + dy * np.sin(angle)) / radii[0]
            v = (-dx * np.sin(angle) + dy * np.cos(angle)) / radii[1]
            inside |= np.abs(u) ** power + np.abs(v) ** power <= 1.0
        colours = _PALETTE[rng.choice(len(_PALETTE), size=2, replace=False)]
        kind = rng.integers(4)
        angle = rng.uniform(0, np.pi)
        frequency = rng.uniform(1.5, 3.5)
        along = x * np.cos(angle) + y * np.sin(angle)
        if kind == 0:  # stripes
            second = np.sin(np.pi * frequency * along) > 0
        elif kind == 1:  # checks
            across = -x * np.sin(angle) + y * np.cos(angle)
            second = (np.sin(np.pi * frequency * along) > 0) ^ (np.sin(np.pi * frequency * across) > 0)
        elif kind == 2:  # rings
            second = np.sin(np.pi * frequency * np.hypot(x, y) * 1.5) > 0
        else:  # halves
            second = along > rng.uniform(-0.3, 0.3)
        alpha = inside[..., None].astype(np.float32)
        # Colour premultiplied by alpha, so averaging the supersamples gives
        # anti-aliased edges without dark fringes.
        rgba = np.concatenate([np.where(second[..., None], colours[1], colours[0]) * alpha, alpha], -1)
        sprites[index] = rgba.reshape(size, supersample, size, supersample, 4).mean(axis=(1, 3))
    return sprites


def _render_images(rng, foreground_id, class_sprites, clutter_sprites, count, image_size) -> np.ndarray:
    """``count`` images of one class: uint8 ``[count, S, S, 3]``.

    `class_sprites` and `clutter_sprites` are padded sprite libraries
    (see `_pad`).
    """
    canvas = _background(rng, count, image_size)
    for _ in range(_CLUTTER_PER_IMAGE):
        sprite_ids = rng.integers(len(clutter_sprites), size=count)
        scale = rng.uniform(*_CLUTTER_SCALE, size=count) * image_size
        centre = rng.uniform(0, image_size, size=(count, 2))
        flip = rng.random(count) < 0.5
        _paste(canvas, clutter_sprites, sprite_ids, scale, centre, flip)
    scale = rng.uniform(*_FOREGROUND_SCALE, size=count) * image_size
    # Keep at least ~3/4 of the object's side inside the image.
    low, high = scale / 4, image_size - scale / 4
    centre = rng.uniform(low[:, None], high[:, None], size=(count, 2))
    _paste(canvas, class_sprites, np.full(count, foreground_id), scale, centre, np.zeros(count, bool))
    canvas *= rng.uniform(0.8, 1.2, size=(count, 1, 1, 3)).astype(np.float32)
    canvas += rng.normal(0.0, 6.0, size=canvas.shape).astype(np.float32)
    return np.clip(np.round(canvas), 0, 255).astype(np.uint8)


def _pad(sprites: np.ndarray) -> np.ndarray:
    """Sprites with one transparent pixel of padding, so that every lookup
    outside a sprite reads transparency: float32 ``[K, R + 2, R + 2, 4]``."""
    return np.pad(sprites, ((0, 0), (1, 1), (1, 1), (0, 0)))


def _background(rng, count, image_size) -> np.ndarray:
    """Smooth random colour fields, float32 ``[count, S, S, 3]``."""
    coarse = 4
    colours = _PALETTE[rng.integers(len(_PALETTE), size=(count, coarse, coarse))]
    colours = 0.5 * colours + 0.5 * 128.0  # muted, so objects stand out a little
    # Bilinear upsampling of the coarse grid, separable along y then x.
    positions = (np.arange(image_size) + 0.5) / image_size * (coarse - 1)
    low = np.minimum(np.floor(positions).astype(int), coarse - 2)
    weight = (positions - low)[None, :, None, None]
    rows = colours[:, low] * (1 - weight) + colours[:, low + 1] * weight
    weight = weight.reshape(1, 1, -1, 1)
    return (rows[:, :, low] * (1 - weight) + rows[:, :, low + 1] * weight).astype(np.float32)


def _paste(canvas, library, sprite_ids, scale, centre, flip) -> None:
    """Alpha-composites one sprite per image, in place, with bilinear resampling.

    Args:
      canvas: float32 ``[N, S, S, 3]``.
      library: padded sprites, float32 ``[K, R + 2, R + 2, 4]`` (colour
        premultiplied by alpha).
      sprite_ids: int ``[N]``, the sprite of each image.
      scale: ``[N]`` sprite side in pixels.
      centre: ``[N, 2]`` sprite centre (x, y) in pixels.
      flip: bool ``[N]``, mirror the sprite horizontally.
    """
    image_size = canvas.shape[1]
    padded_size = library.shape[1]
    size = padded_size - 2
    pixel = np.arange(image_size) + 0.5
    # Padded sprite coordinates of each image column (u) and row (v).
    u = (pixel[None, :] - centre[:, :1]) / scale[:, None] * size + size / 2 + 0.5
    v = (pixel[None, :] - centre[:, 1:]) / scale[:, None] * size + size / 2 + 0.5
    u = np.where(flip[:, None], size + 1 - u, u)
    u = np.clip(u, 0, size + 1 - 1e-4)
    v = np.clip(v, 0, size + 1 - 1e-4)
    u0, v0 = np.floor(u).astype(np.intp), np.floor(v).astype(np.intp)
    wu = (u - u0).astype(np.float32)[:, None, :, None]
    wv = (v - v0).astype(np.float32)[:, :, None, None]
    # Flat indices into the library's [K * (R + 2) * (R + 2)] pixels.
    flat = library.reshape(-1, 4)
    first_row = (np.asarray(sprite_ids)[:, None] * padded_size + v0) * padded_size
    second_row = first_row + padded_size

    def at(rows, cols):
        return np.take(flat, rows[:, :, None] + cols[:, None, :], axis=0)

    top = at(first_row, u0) * (1 - wu) + at(first_row, u0 + 1) * wu
    bottom = at(second_row, u0) * (1 - wu) + at(second_row, u0 + 1) * wu
    sample = top * (1 - wv) + bottom * wv
    canvas *= 1.0 - sample[..., 3:]
    canvas += sample[..., :3]
