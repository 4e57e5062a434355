"""Class-per-folder datasets: `image_folder` and tieredImageNet.

Layouts:

* ``root/<split>/<class>/<images>``, e.g. tieredImageNet's
  ``{train,val,test}/<wnid>/<image>`` (351/97/160 classes), or
* ``root/<class>/<images>``: read whole with ``split="all"``; as
  ``"train"``, ``"val"`` and ``"test"`` (when ``root`` has none of these
  folders) its classes are divided between them, ``class_split`` fractions
  of them each (64/16/20 % by default, miniImageNet's proportions) in an
  order fixed by their names: few-shot splits never share a class.

A class is a leaf folder: a folder without (non-hidden) sub-folders. Its name
is its path relative to the split root, with ``/`` separators. Classes and
files are sorted by name, so labels do not depend on the file system's
listing order (the official loaders use unsorted `os.listdir`). Image files
lying next to sub-folders are an error rather than a guess about their class.
Symbolic links to class folders and to images are followed (with a guard
against loops), so a split can be a folder of links.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from tf_deepemd.data.image_split import FEAT_NORMALIZATION, ImageSplit, Normalization

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

FOLDER_LAYOUT = ("<data_dir>/<split>/<class>/<images>, or <data_dir>/<class>/<images> (split='all', "
                 "or its classes divided between train, val and test)")
STANDARD_SPLITS = ("train", "val", "test")
# Fractions of the classes of a single folder of classes in train, val, test.
DEFAULT_CLASS_SPLIT = (0.64, 0.16, 0.20)
# Seeds the fixed order in which a single folder's classes are divided.
CLASS_SPLIT_SEED = 0
TIERED_LAYOUT = "<data_dir>/{train,val,test}/<class>/<images>"


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def folder_entries(folder: str) -> tuple[list[str], list[str]]:
    """Sorted names of the non-hidden sub-folders and of the image files in `folder`.

    Symbolic links are followed: a link to a folder is a sub-folder and a link
    to a file is a file (split views made of links are the usual way to avoid
    copying a dataset). A dangling link with an image name counts as an image
    file, so the bad-data policy names it instead of it vanishing silently.
    """
    subfolders, images = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                subfolders.append(entry.name)
            elif is_image_file(entry.name):
                images.append(entry.name)
    return sorted(subfolders), sorted(images)


def list_image_files(folder: str) -> list[str]:
    """Sorted paths of the image files directly inside `folder` (links followed)."""
    return [os.path.join(folder, name) for name in folder_entries(folder)[1]]


def find_leaf_classes(root: str) -> list[tuple[str, list[str]]]:
    """The leaf folders under `root` and their image files.

    Symbolic links to folders are followed; each real folder may be reached
    once, so a link back to an ancestor (a loop) or two names for one folder
    are errors instead of an endless walk or a class listed twice.

    Returns:
      ``(class_name, sorted image paths)`` per leaf folder, sorted by name; a
      leaf folder without images is a class with no images.

    Raises:
      ValueError: image files sit in a folder that also has sub-folders, or a
        folder is reached twice through symbolic links.
    """
    classes = []
    reached_as = {}  # real path -> the path that first reached it
    pending = [root]
    while pending:
        folder = pending.pop()
        real = os.path.realpath(folder)
        if real in reached_as:
            raise ValueError(_reached_twice_message(folder, reached_as[real]))
        reached_as[real] = folder
        subfolders, images = folder_entries(folder)
        if subfolders:
            if images:
                raise ValueError(
                    f"{folder} holds {len(images)} image file(s) (e.g. {images[0]!r}) "
                    "next to sub-folders: its images have no class. A class must be a leaf "
                    "folder; move the images into a sub-folder."
                )
            pending.extend(os.path.join(folder, name) for name in reversed(subfolders))
        elif folder != root:
            name = os.path.relpath(folder, root).replace(os.sep, "/")
            classes.append((name, [os.path.join(folder, image) for image in images]))
    classes.sort(key=lambda item: item[0])
    return classes


def _reached_twice_message(folder: str, first: str) -> str:
    if os.path.commonpath([folder, first]) == first:
        return (
            f"{folder} is a symbolic link back to its ancestor {first}: the folder tree has a "
            "loop. Remove the link."
        )
    return (
        f"{folder} and {first} are the same folder (through a symbolic link): its images "
        "would be two classes. Keep one of them."
    )


def split_from_classes(
    dataset: str,
    split: str,
    classes: Sequence[tuple[str, Sequence[str]]],
    normalization: Normalization,
) -> ImageSplit:
    """An `ImageSplit` of files from ``(class_name, paths)`` pairs."""
    paths = [path for _, class_paths in classes for path in class_paths]
    labels = np.repeat(
        np.arange(len(classes), dtype=np.int32), [len(class_paths) for _, class_paths in classes]
    )
    return ImageSplit(
        dataset=dataset,
        split=split,
        class_names=tuple(name for name, _ in classes),
        labels=labels,
        normalization=normalization,
        paths=tuple(paths),
    )


def read_image_folder(
    split: str,
    data_dir: Optional[str],
    normalization: Normalization = FEAT_NORMALIZATION,
    class_split: Sequence[float] = DEFAULT_CLASS_SPLIT,
) -> ImageSplit:
    """Reads ``data_dir/<split>/<class>/...`` or, for ``split="all"``, ``data_dir/<class>/...``.

    Args:
      split: a sub-folder of `data_dir`, or ``"all"`` for every leaf folder
        under `data_dir`; ``"train"``, ``"val"`` or ``"test"`` without such
        folders: their share of the classes (`class_split`).
      data_dir: the root folder.
      normalization: ``(mean, std)`` per channel in [0, 1] units; the
        official DeepEMD constants by default.
      class_split: fractions of a single folder's classes in train, val and
        test (see the module docstring).
    """
    data_dir = require_data_dir(data_dir, "image_folder", FOLDER_LAYOUT)
    root = os.path.join(data_dir, split)
    divided = split in STANDARD_SPLITS and not any(
        os.path.isdir(os.path.join(data_dir, name)) for name in STANDARD_SPLITS)
    if not os.path.isdir(root):
        if split != "all" and not divided:
            raise FileNotFoundError(
                f"image_folder: no folder {root!r}. Expected layout: {FOLDER_LAYOUT}."
            )
        root = data_dir
    classes = find_leaf_classes(root)
    if not classes:
        raise FileNotFoundError(
            f"image_folder: no class folders under {root!r}. Expected layout: {FOLDER_LAYOUT}."
        )
    if divided:
        classes = classes_of_split(classes, split, class_split)
    return split_from_classes("image_folder", split, classes, normalization)


def classes_of_split(classes, split, class_split):
    """The classes ``split`` gets when ``classes`` are divided by ``class_split`` fractions.

    The classes are shuffled in a fixed order (`CLASS_SPLIT_SEED`, from
    their sorted names), then train takes the first share, val the next,
    test the rest; each split's classes are returned sorted by name.
    """
    fractions = np.asarray(class_split, np.float64)
    if fractions.shape != (3,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(
            f"`class_split` must be 3 non-negative fractions (train, val, test) adding up to 1, "
            f"got {class_split!r}."
        )
    order = np.random.default_rng(CLASS_SPLIT_SEED).permutation(len(classes))
    num_val, num_test = (int(round(f * len(classes))) for f in fractions[1:])
    bounds = {"train": (0, len(classes) - num_val - num_test),
              "val": (len(classes) - num_val - num_test, len(classes) - num_test),
              "test": (len(classes) - num_test, len(classes))}
    first, end = bounds[split]
    if end <= first:
        raise ValueError(
            f"image_folder: `class_split`={tuple(class_split)} leaves {split!r} none of the "
            f"{len(classes)} classes; add classes or change class_split."
        )
    return sorted((classes[index] for index in order[first:end]), key=lambda item: item[0])


def read_tiered_imagenet(split: str, data_dir: Optional[str]) -> ImageSplit:
    """Reads tieredImageNet as ``data_dir/{train,val,test}/<class>/<image>``.

    ``data_dir/tiered_imagenet`` and ``data_dir/tieredimagenet`` (the
    official tarball's folder name) are accepted too.
    """
    data_dir = require_data_dir(data_dir, "tiered_imagenet", TIERED_LAYOUT)
    candidates = [os.path.join(base, split) for base in (
        data_dir,
        os.path.join(data_dir, "tiered_imagenet"),
        os.path.join(data_dir, "tieredimagenet"),
    )]
    root = next((path for path in candidates if os.path.isdir(path)), None)
    if root is None:
        raise FileNotFoundError(
            f"tiered_imagenet: none of {candidates} exists. Expected layout: {TIERED_LAYOUT}."
        )
    classes = find_leaf_classes(root)
    if not classes:
        raise FileNotFoundError(
            f"tiered_imagenet: no class folders under {root!r}. Expected layout: {TIERED_LAYOUT}."
        )
    return split_from_classes("tiered_imagenet", split, classes, FEAT_NORMALIZATION)


def require_data_dir(data_dir: Optional[str], dataset: str, layout: str) -> str:
    """`data_dir` with `~` expanded; raises naming `layout` if it is not a folder."""
    if data_dir is None:
        raise ValueError(f"`data_dir` is required for {dataset}. Expected layout: {layout}.")
    data_dir = os.path.expanduser(os.fspath(data_dir))
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"{dataset}: `data_dir` {data_dir!r} is not a folder. Expected layout: {layout}."
        )
    return data_dir
