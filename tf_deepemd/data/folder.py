"""Class-per-folder datasets: `image_folder` and tieredImageNet.

Layouts:

* ``root/<class>/<images>`` (read with ``split="all"``), or
* ``root/<split>/<class>/<images>``, e.g. tieredImageNet's
  ``{train,val,test}/<wnid>/<image>`` (351/97/160 classes).

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

FOLDER_LAYOUT = "<data_dir>/<class>/<images> (split='all') or <data_dir>/<split>/<class>/<images>"
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
) -> ImageSplit:
    """Reads ``data_dir/<split>/<class>/...`` or, for ``split="all"``, ``data_dir/<class>/...``.

    Args:
      split: a sub-folder of `data_dir`, or ``"all"`` for every leaf folder
        under `data_dir`.
      data_dir: the root folder.
      normalization: ``(mean, std)`` per channel in [0, 1] units; the
        official DeepEMD constants by default.
    """
    data_dir = require_data_dir(data_dir, "image_folder", FOLDER_LAYOUT)
    root = os.path.join(data_dir, split)
    if not os.path.isdir(root):
        if split != "all":
            raise FileNotFoundError(
                f"image_folder: no folder {root!r}. Expected layout: {FOLDER_LAYOUT}."
            )
        root = data_dir
    classes = find_leaf_classes(root)
    if not classes:
        raise FileNotFoundError(
            f"image_folder: no class folders under {root!r}. Expected layout: {FOLDER_LAYOUT}."
        )
    return split_from_classes("image_folder", split, classes, normalization)


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
