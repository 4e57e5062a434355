"""CUB-200-2011 in its official layout, with the few-shot split shipped here.

Layout: ``<data_dir>/CUB_200_2011/images/<class folder>/<image>`` (or
``<data_dir>/images/...`` when `data_dir` is the ``CUB_200_2011`` folder),
class folders named like ``010.Red_winged_Blackbird``.

The split (``splits/cub/{train,val,test}.json``) is the 100/50/50 class split
of FEAT and the official DeepEMD code (5,891/2,932/2,965 images). Classes are
numbered in the split file's order.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from typing import Optional

from tf_deepemd.data.folder import list_image_files, require_data_dir, split_from_classes
from tf_deepemd.data.image_split import FEAT_NORMALIZATION, ImageSplit

LAYOUT = "<data_dir>/CUB_200_2011/images/<class folder>/<image> (the official CUB-200-2011 tree)"
SPLITS = ("train", "val", "test")


def split_classes(split: str) -> list[str]:
    """The class folder names of a split of the shipped CUB few-shot split."""
    return json.loads(resources.files("tf_deepemd.data").joinpath("splits", "cub", f"{split}.json").read_text())


def read_cub(split: str, data_dir: Optional[str]) -> ImageSplit:
    """Reads one split of CUB-200-2011 (see the module docstring)."""
    data_dir = require_data_dir(data_dir, "cub", LAYOUT)
    candidates = [os.path.join(data_dir, "CUB_200_2011", "images"), os.path.join(data_dir, "images")]
    image_root = next((path for path in candidates if os.path.isdir(path)), None)
    if image_root is None:
        raise FileNotFoundError(f"cub: none of {candidates} exists. Expected layout: {LAYOUT}.")
    class_names = split_classes(split)
    missing = [name for name in class_names if not os.path.isdir(os.path.join(image_root, name))]
    if missing:
        raise FileNotFoundError(
            f"cub: {len(missing)} class folder(s) of the {split} split are missing from "
            f"{image_root}, e.g. {missing[:3]}. Expected layout: {LAYOUT}."
        )
    classes = [(name, list_image_files(os.path.join(image_root, name))) for name in class_names]
    return split_from_classes("cub", split, classes, FEAT_NORMALIZATION)
