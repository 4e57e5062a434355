"""miniImageNet in the Ravi & Larochelle CSV layout.

Layout (``data_dir`` or ``data_dir/miniimagenet``, the official DeepEMD
folder)::

    images/n0153282900000005.jpg ...
    split/train.csv   # header "filename,label", rows "n0153282900000005.jpg,n01532829"
    split/val.csv
    split/test.csv

64/16/20 classes of 600 images. Classes are numbered in order of first
appearance in the CSV, as the official loader does.
"""

from __future__ import annotations

import csv
import os
from typing import Optional

import numpy as np

from tf_deepemd.data.folder import require_data_dir
from tf_deepemd.data.image_split import FEAT_NORMALIZATION, ImageSplit

LAYOUT = (
    "<data_dir>/images/<filename> and <data_dir>/split/{train,val,test}.csv with the header "
    "'filename,label' (rows like 'n0153282900000005.jpg,n01532829')"
)


def read_mini_imagenet(split: str, data_dir: Optional[str]) -> ImageSplit:
    """Reads one split of miniImageNet (see the module docstring for the layout)."""
    data_dir = require_data_dir(data_dir, "mini_imagenet", LAYOUT)
    roots = [data_dir, os.path.join(data_dir, "miniimagenet")]
    root = next((r for r in roots if os.path.isdir(os.path.join(r, "split"))), None)
    if root is None:
        raise FileNotFoundError(
            f"mini_imagenet: no 'split' folder in {roots}. Expected layout: {LAYOUT}."
        )
    csv_path = os.path.join(root, "split", f"{split}.csv")
    image_dir = os.path.join(root, "images")
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"mini_imagenet: no split file {csv_path!r}. Expected layout: {LAYOUT}.")
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"mini_imagenet: no folder {image_dir!r}. Expected layout: {LAYOUT}.")

    filenames, wnids = _read_split_csv(csv_path)
    present = set(os.listdir(image_dir))
    missing = [name for name in filenames if name not in present]
    if missing:
        raise FileNotFoundError(
            f"mini_imagenet: {len(missing)} file(s) listed in {csv_path} are not in {image_dir}, "
            f"e.g. {missing[:3]}."
        )
    class_names = list(dict.fromkeys(wnids))
    label_of = {wnid: label for label, wnid in enumerate(class_names)}
    return ImageSplit(
        dataset="mini_imagenet",
        split=split,
        class_names=tuple(class_names),
        labels=np.array([label_of[wnid] for wnid in wnids], np.int32),
        normalization=FEAT_NORMALIZATION,
        paths=tuple(os.path.join(image_dir, name) for name in filenames),
    )


def _read_split_csv(csv_path: str) -> tuple[list[str], list[str]]:
    """(filenames, labels) of a split CSV; raises naming the file and line on bad rows."""
    with open(csv_path, newline="", encoding="utf-8") as stream:
        rows = list(csv.reader(stream))
    if not rows or [cell.strip() for cell in rows[0]] != ["filename", "label"]:
        raise ValueError(
            f"{csv_path}: the first line must be the header 'filename,label', "
            f"got {rows[0] if rows else 'an empty file'!r}."
        )
    filenames, labels, seen = [], [], set()
    for line_number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"{csv_path}, line {line_number}: expected 'filename,label', got {row!r}.")
        filename, label = row[0].strip(), row[1].strip()
        if filename in seen:
            # A second row could give the file another label: refuse to guess.
            raise ValueError(f"{csv_path}, line {line_number}: {filename!r} is listed twice.")
        seen.add(filename)
        filenames.append(filename)
        labels.append(label)
    if not filenames:
        raise ValueError(f"{csv_path} lists no images.")
    return filenames, labels
