"""What to do with data a pipeline cannot use, decided before any heavy work.

`prepare_split` is the one place the pipelines read a split: it checks the
arguments against what is known without reading (the registry's class
counts), reads the split, and applies the two bad-data policies:

* a class with too few images: an error naming it (``"error"``) or left out
  with a warning (``"exclude"``);
* an unreadable or corrupt image file: the pipeline fails naming the file
  (``"error"``, see `reader.py`) or every file is decoded once up front and
  the bad ones are left out with a warning that counts them (``"skip"``;
  `ImageSplit.skipped` lists them).
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import tensorflow as tf

from tf_deepemd.data import registry
from tf_deepemd.data.image_split import ImageSplit
from tf_deepemd.data.preprocessing import decode_image_file

SMALL_CLASS_POLICIES = ("error", "exclude")
BAD_IMAGE_POLICIES = ("error", "skip")
# The pipelines' own options (`make_episode_dataset`, `make_pretrain_dataset`),
# beside the dataset readers' options, with their values.
PIPELINE_OPTION_VALUES = {"on_small_class": SMALL_CLASS_POLICIES, "on_bad_image": BAD_IMAGE_POLICIES}
PIPELINE_OPTIONS = tuple(PIPELINE_OPTION_VALUES)


def prepare_split(
    name: str,
    split: str,
    data_dir: Optional[str],
    min_images_per_class: int,
    min_classes: int,
    on_small_class: str = "error",
    on_bad_image: str = "error",
    options: Optional[dict] = None,
) -> ImageSplit:
    """Reads a split and makes sure a pipeline can use it.

    Args:
      name, split, data_dir, options: as in `registry.load_split`.
      min_images_per_class: images a class needs (``shot + query`` for
        episodes, 1 for pre-training).
      min_classes: classes the split must keep (``way`` for episodes);
        checked against the registry's counts before reading, when known.
      on_small_class: ``"error"`` or ``"exclude"``.
      on_bad_image: ``"error"`` or ``"skip"``.

    Returns:
      The split, possibly with images/classes left out (and relabelled).

    Raises:
      ValueError: a bad argument, too few classes or (``"error"``) a small class.
    """
    if on_small_class not in SMALL_CLASS_POLICIES:
        raise ValueError(f"`on_small_class` must be one of {SMALL_CLASS_POLICIES}, got {on_small_class!r}.")
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise ValueError(f"`on_bad_image` must be one of {BAD_IMAGE_POLICIES}, got {on_bad_image!r}.")
    info = registry.dataset_info(name)
    registry.check_split(info, split)
    if info.num_classes is not None:
        _check_enough_classes(info.num_classes[split], min_classes, name, split)

    data = registry.load_split(name, split, data_dir, **(options or {}))
    _check_enough_classes(data.num_classes, min_classes, name, split)
    if on_bad_image == "skip":
        data = drop_unreadable_images(data)
    data = exclude_small_classes(data, min_images_per_class, on_small_class)
    _check_enough_classes(data.num_classes, min_classes, name, split, after_exclusion=True)
    return data


def _check_enough_classes(num_classes, min_classes, name, split, after_exclusion=False):
    if min_classes > num_classes:
        raise ValueError(
            f"`way`={min_classes} is larger than the number of classes of {name}/{split} "
            f"({num_classes}{' after leaving out unusable classes' if after_exclusion else ''})."
        )


def exclude_small_classes(data: ImageSplit, min_images: int, on_small_class: str) -> ImageSplit:
    """Handles classes with fewer than `min_images` images (see the module docstring)."""
    sizes = data.class_sizes()
    small = np.flatnonzero(sizes < min_images)
    if not len(small):
        return data
    listing = ", ".join(f"{data.class_names[c]!r} ({sizes[c]} images)" for c in small[:10])
    if len(small) > 10:
        listing += f", ... ({len(small)} in all)"
    message = (
        f"{data.dataset}/{data.split}: {len(small)} class(es) have fewer than {min_images} "
        f"images (shot + query): {listing}."
    )
    if on_small_class == "error":
        raise ValueError(message + " Pass on_small_class='exclude' to leave them out.")
    warnings.warn(message + " They are left out.", stacklevel=3)
    return data.without_classes(small)


def drop_unreadable_images(data: ImageSplit) -> ImageSplit:
    """`data` without the files that fail to decode, with a warning counting them."""
    bad = find_unreadable_images(data)
    if not bad:
        return data
    names = [data.paths[index] for index in bad]
    warnings.warn(
        f"{data.dataset}/{data.split}: skipped {len(bad)} unreadable image file(s): "
        f"{names[:5]}{' ...' if len(names) > 5 else ''}",
        stacklevel=3,
    )
    keep = np.ones(data.num_images, bool)
    keep[bad] = False
    return data.subset(keep, skipped=names)


def find_unreadable_images(data: ImageSplit) -> list[int]:
    """Indices of the files of `data` that fail to read or decode.

    Decodes every file once, in parallel, with the pipelines' own decoder: the
    cost of one pass over the split.
    """
    if data.in_memory:
        return []
    paths = tf.constant(list(data.paths))
    decoded = (
        tf.data.Dataset.range(data.num_images)
        .map(
            lambda index: (index, tf.shape(decode_image_file(tf.gather(paths, index)))),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=False,
        )
        .ignore_errors()
        .map(lambda index, shape: index)
        .batch(4096)
    )
    readable = np.zeros(data.num_images, bool)
    for indices in decoded.as_numpy_iterator():
        readable[indices] = True
    return np.flatnonzero(~readable).tolist()
