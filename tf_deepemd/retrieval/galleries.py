"""Which images form a retrieval gallery, and embedding a whole split.

The deep-metric-learning protocol retrieves among classes unseen in
training. A gallery is a split of a registered dataset
(`tf_deepemd.data.load_split`), e.g. the 20 test classes of CIFAR-FS
(12,000 CIFAR-100 images), plus the DML split of CUB-200-2011, which is
not the few-shot one: ``'dml_train'`` = classes 1-100 and ``'dml_test'`` =
classes 101-200 (by the number of the class folder, 5,864 and 5,924
images). The few-shot CUB split (`tf_deepemd.data.cub`) trains on 100
classes scattered over 3..198, so a model trained on it has seen about half
of the ``'dml_test'`` classes; `dml_overlap` counts them.

Images are preprocessed as at evaluation (resize, centre crop, dataset
normalisation) by the data package's own reader, so a gallery image is
embedded exactly as an evaluation episode's image.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import numpy as np
import tensorflow as tf

from tf_deepemd.data import cub, folder
from tf_deepemd.data.image_split import FEAT_NORMALIZATION, ImageSplit
from tf_deepemd.data.reader import preprocessed_batches
from tf_deepemd.data.registry import load_split
from tf_deepemd.retrieval.index import GalleryIndex, embed_images

__all__ = ["DML_SPLITS", "dml_overlap", "gallery_batches", "index_split", "load_gallery_split"]

#: CUB-200-2011 class numbers of the DML protocol's splits.
DML_SPLITS = {"dml_train": range(1, 101), "dml_test": range(101, 201)}


def _class_number(folder_name: str) -> int:
    return int(folder_name.split(".", 1)[0])


def cub_dml_split(split: str, data_dir: Optional[str]) -> ImageSplit:
    """``'dml_train'`` / ``'dml_test'`` of CUB-200-2011 (official layout, see `tf_deepemd.data.cub`)."""
    data_dir = folder.require_data_dir(data_dir, "cub", cub.LAYOUT)
    candidates = [os.path.join(data_dir, "CUB_200_2011", "images"), os.path.join(data_dir, "images")]
    image_root = next((path for path in candidates if os.path.isdir(path)), None)
    if image_root is None:
        raise FileNotFoundError(f"cub: none of {candidates} exists. Expected layout: {cub.LAYOUT}.")
    wanted = DML_SPLITS[split]
    names = sorted(
        (name for few_shot_split in cub.SPLITS for name in cub.split_classes(few_shot_split)
         if _class_number(name) in wanted),
        key=_class_number,
    )
    missing = [name for name in names if not os.path.isdir(os.path.join(image_root, name))]
    if missing:
        raise FileNotFoundError(
            f"cub: {len(missing)} class folder(s) of {split} are missing from {image_root}, e.g. "
            f"{missing[:3]}. Expected layout: {cub.LAYOUT}."
        )
    classes = [(name, folder.list_image_files(os.path.join(image_root, name))) for name in names]
    return folder.split_from_classes("cub", split, classes, FEAT_NORMALIZATION)


def dml_overlap(split: str, training_split: str = "train") -> int:
    """How many classes of the CUB DML ``split`` are in the few-shot ``training_split``."""
    wanted = DML_SPLITS[split]
    return sum(_class_number(name) in wanted for name in cub.split_classes(training_split))


def load_gallery_split(
    dataset: str,
    split: str,
    data_dir: Optional[str] = None,
    options: Optional[Mapping[str, Any]] = None,
) -> ImageSplit:
    """The gallery's images: a registered split, or CUB's ``'dml_train'``/``'dml_test'``.

    Raises:
      ValueError: unknown dataset/split/option, a DML split of a dataset
        other than ``cub``, or an empty split.
      FileNotFoundError: missing data.
    """
    if split in DML_SPLITS:
        if dataset != "cub":
            raise ValueError(
                f"`split` {split!r} is the CUB-200-2011 deep-metric-learning split; dataset "
                f"{dataset!r} has no such split."
            )
        gallery = cub_dml_split(split, data_dir)
    else:
        gallery = load_split(dataset, split, data_dir, **dict(options or {}))
    if gallery.num_images == 0:
        raise ValueError(f"The gallery split {dataset!r}/{split!r} has no images.")
    return gallery


def gallery_batches(split: ImageSplit, image_size: int, batch_size: int = 128) -> tf.data.Dataset:
    """Every image of ``split`` in order, preprocessed for evaluation.

    Returns:
      A dataset of ``(images float32 [B, S, S, 3], indices int64 [B])``.
    """
    if int(image_size) < 1 or int(batch_size) < 1:
        raise ValueError(f"`image_size` and `batch_size` must be >= 1, got {image_size}, {batch_size}.")
    total = split.num_images
    indices = np.arange(total, dtype=np.int64)
    stream = tf.data.Dataset.from_tensor_slices(indices).enumerate()
    return preprocessed_batches(
        split, stream, lambda position: position, int(batch_size), int(image_size),
        training=False, seed=0, total=total,
    ).prefetch(2)


def index_split(
    encoder,
    split: ImageSplit,
    image_size: int,
    batch_size: int = 128,
    metadata: Optional[Mapping[str, Any]] = None,
) -> GalleryIndex:
    """Embeds every image of ``split`` into a `GalleryIndex`.

    Ids are the images' positions in the split (in-memory datasets) or
    their file paths; labels are the split's. The metadata records the
    dataset, split, image size and class names (plus ``metadata``).
    """
    nodes = embed_images(encoder, gallery_batches(split, image_size, batch_size))
    ids = np.asarray(split.paths) if split.paths is not None else np.arange(split.num_images)
    info = {
        "dataset": split.dataset,
        "split": split.split,
        "image_size": [int(image_size), int(image_size)],
        "class_names": list(split.class_names),
    }
    info.update(metadata or {})
    return GalleryIndex.from_nodes(nodes, split.labels, ids, info)
