"""CIFAR-FS and FC100, built from CIFAR-100.

Sources, tried in this order with ``source="auto"``:

* the "CIFAR-100 python version": ``<data_dir>/cifar-100-python.tar.gz`` or
  its extracted ``<data_dir>/cifar-100-python/{train,test,meta}`` (or
  `data_dir` being that tarball or folder). The files are Python pickles;
  read only files you trust.
* TFDS ``cifar100`` prepared under `data_dir` (None: the TFDS default
  folder), loaded with ``download=False``.

Both benchmarks pool CIFAR-100's train and test images (600 per fine class)
and split the classes (splits shipped in ``splits/``):

* CIFAR-FS (Bertinetto et al. 2019): 64/16/20 fine classes, listed as
  ``[coarse, fine]`` name pairs; classes numbered in the file's order.
* FC100 (Oreshkin et al. 2018): 12/4/4 coarse superclasses, i.e. 60/20/20
  fine classes; classes numbered by CIFAR-100 fine label.

Images are held in memory as uint8 (only the requested split's images are
kept).
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import tarfile
from importlib import resources
from typing import Optional

import numpy as np

from tf_deepemd.data.image_split import CIFAR_FS_NORMALIZATION, FEAT_NORMALIZATION, ImageSplit

PYTHON_ARCHIVE = "cifar-100-python.tar.gz"
PYTHON_FOLDER = "cifar-100-python"
LAYOUT = (
    f"<data_dir>/{PYTHON_ARCHIVE} or <data_dir>/{PYTHON_FOLDER}/{{train,test,meta}} "
    "(the CIFAR-100 python version), or TFDS 'cifar100' prepared under <data_dir>"
)
SOURCES = ("auto", "python", "tfds")


class Cifar100:
    """All CIFAR-100 images, train then test.

    Attributes:
      images: uint8 ``[N, 32, 32, 3]``.
      fine_labels, coarse_labels: int64 ``[N]``.
      fine_names, coarse_names: label names in CIFAR-100 order.
    """

    def __init__(self, images, fine_labels, coarse_labels, fine_names, coarse_names):
        self.images = images
        self.fine_labels = np.asarray(fine_labels, np.int64)
        self.coarse_labels = np.asarray(coarse_labels, np.int64)
        self.fine_names = list(fine_names)
        self.coarse_names = list(coarse_names)


def read_cifar_fs(split: str, data_dir: Optional[str] = None, source: str = "auto") -> ImageSplit:
    """One split of CIFAR-FS (64/16/20 fine classes), images in memory."""
    cifar = load_cifar100(data_dir, source)
    pairs = _split_file("cifar-fs", split)
    fine_index = {name: index for index, name in enumerate(cifar.fine_names)}
    coarse_of_fine = _coarse_of_fine(cifar)
    classes = []
    for coarse, fine in pairs:
        if fine not in fine_index:
            raise ValueError(f"cifar_fs: the split's class {fine!r} is not a CIFAR-100 fine label.")
        if cifar.coarse_names[coarse_of_fine[fine_index[fine]]] != coarse:
            raise ValueError(
                f"cifar_fs: the split puts {fine!r} under {coarse!r}, but the data put it under "
                f"{cifar.coarse_names[coarse_of_fine[fine_index[fine]]]!r}: wrong CIFAR-100 copy?"
            )
        classes.append(fine_index[fine])
    return _split_of_fine_classes(cifar, "cifar_fs", split, classes, CIFAR_FS_NORMALIZATION)


def read_fc100(split: str, data_dir: Optional[str] = None, source: str = "auto") -> ImageSplit:
    """One split of FC100 (12/4/4 superclasses = 60/20/20 fine classes), in memory."""
    cifar = load_cifar100(data_dir, source)
    superclasses = _split_file("fc100", split)
    unknown = [name for name in superclasses if name not in cifar.coarse_names]
    if unknown:
        raise ValueError(f"fc100: superclasses {unknown} are not CIFAR-100 coarse labels.")
    wanted = {cifar.coarse_names.index(name) for name in superclasses}
    coarse_of_fine = _coarse_of_fine(cifar)
    classes = [fine for fine in range(len(cifar.fine_names)) if coarse_of_fine[fine] in wanted]
    return _split_of_fine_classes(cifar, "fc100", split, classes, FEAT_NORMALIZATION)


def _split_file(folder: str, split: str):
    return json.loads(
        resources.files("tf_deepemd.data").joinpath("splits", folder, f"{split}.json").read_text()
    )


def _coarse_of_fine(cifar: Cifar100) -> np.ndarray:
    """Superclass of each fine class, from the data; raises if the labels disagree."""
    coarse_of_fine = np.full(len(cifar.fine_names), -1, np.int64)
    coarse_of_fine[cifar.fine_labels] = cifar.coarse_labels
    if not (coarse_of_fine[cifar.fine_labels] == cifar.coarse_labels).all():
        raise ValueError("CIFAR-100: a fine class appears under two superclasses.")
    empty = [cifar.fine_names[c] for c in np.flatnonzero(coarse_of_fine < 0)]
    if empty:
        raise ValueError(f"CIFAR-100: fine classes without images: {empty[:5]}.")
    return coarse_of_fine


def _split_of_fine_classes(cifar, dataset, split, fine_classes, normalization) -> ImageSplit:
    relabel = np.full(len(cifar.fine_names), -1, np.int32)
    relabel[fine_classes] = np.arange(len(fine_classes), dtype=np.int32)
    keep = relabel[cifar.fine_labels] >= 0
    return ImageSplit(
        dataset=dataset,
        split=split,
        class_names=tuple(cifar.fine_names[c] for c in fine_classes),
        labels=relabel[cifar.fine_labels[keep]],
        normalization=normalization,
        images=cifar.images[keep],
    )


def load_cifar100(data_dir: Optional[str] = None, source: str = "auto") -> Cifar100:
    """All 60,000 CIFAR-100 images (train then test), from the first source found.

    Args:
      data_dir: folder holding the python version or TFDS data, or the
        python version's tarball / folder itself.
      source: ``"auto"``, ``"python"`` or ``"tfds"``.

    Raises:
      FileNotFoundError: nothing found; the message names the layouts.
    """
    if source not in SOURCES:
        raise ValueError(f"`source` must be one of {SOURCES}, got {source!r}.")
    if data_dir is not None:
        data_dir = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
    python_path = _find_python_version(data_dir)
    if source == "python" or (source == "auto" and python_path is not None):
        if python_path is None:
            raise FileNotFoundError(
                f"CIFAR-100: no {PYTHON_ARCHIVE} or {PYTHON_FOLDER}/ in {data_dir!r}. "
                f"Expected layout: {LAYOUT}."
            )
        return _load_python_version(python_path, os.path.getmtime(python_path))
    return _load_tfds(data_dir)


def _find_python_version(data_dir: Optional[str]) -> Optional[str]:
    if data_dir is None:
        return None
    candidates = [
        os.path.join(data_dir, PYTHON_FOLDER),
        os.path.join(data_dir, PYTHON_ARCHIVE),
        data_dir,
    ]
    for path in candidates:
        if os.path.isdir(path) and os.path.isfile(os.path.join(path, "meta")):
            return path
        if os.path.isfile(path) and path.endswith((".tar.gz", ".tgz", ".tar")):
            return path
    return None


# Keyed by modification time too, so a replaced file is read again.
@functools.lru_cache(maxsize=1)
def _load_python_version(path: str, mtime: float) -> Cifar100:
    del mtime
    if os.path.isdir(path):
        def read(name):
            file_path = os.path.join(path, name)
            if not os.path.isfile(file_path):
                raise FileNotFoundError(f"CIFAR-100: {file_path} is missing. Expected layout: {LAYOUT}.")
            with open(file_path, "rb") as stream:
                return _unpickle(stream, file_path)
        parts = {name: read(name) for name in ("train", "test", "meta")}
    else:
        parts = {}
        try:
            with tarfile.open(path) as archive:
                for member in archive.getmembers():
                    name = os.path.basename(member.name)
                    if member.isfile() and name in ("train", "test", "meta"):
                        parts[name] = _unpickle(archive.extractfile(member), f"{path}:{member.name}")
        except (tarfile.TarError, EOFError, OSError) as error:
            raise ValueError(f"CIFAR-100: cannot read the archive {path}: {error}") from error
        missing = {"train", "test", "meta"} - set(parts)
        if missing:
            raise ValueError(f"CIFAR-100: {path} has no {sorted(missing)} member. Expected layout: {LAYOUT}.")

    images, fine, coarse = [], [], []
    for name in ("train", "test"):
        part = parts[name]
        data = np.asarray(part[b"data"], np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"CIFAR-100 {name}: `data` must be uint8 [N, 3072], got {data.shape}.")
        # Rows are channel-major: 1024 red, then 1024 green, then 1024 blue values.
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        fine.append(np.asarray(part[b"fine_labels"]))
        coarse.append(np.asarray(part[b"coarse_labels"]))
        if not len(fine[-1]) == len(coarse[-1]) == len(data):
            raise ValueError(f"CIFAR-100 {name}: data and label counts differ.")
    meta = parts["meta"]
    return Cifar100(
        images=np.ascontiguousarray(np.concatenate(images)),
        fine_labels=np.concatenate(fine),
        coarse_labels=np.concatenate(coarse),
        fine_names=[_text(name) for name in meta[b"fine_label_names"]],
        coarse_names=[_text(name) for name in meta[b"coarse_label_names"]],
    )


def _unpickle(stream, name):
    try:
        content = pickle.load(stream, encoding="bytes")
    except Exception as error:  # pickle raises many types on bad input
        raise ValueError(f"CIFAR-100: {name} is not a readable pickle: {error!r}") from error
    if not isinstance(content, dict):
        raise ValueError(f"CIFAR-100: {name} does not hold a dict.")
    required = (
        (b"fine_label_names", b"coarse_label_names")
        if name.endswith("meta")
        else (b"data", b"fine_labels", b"coarse_labels")
    )
    missing = [key for key in required if key not in content]
    if missing:
        raise ValueError(f"CIFAR-100: {name} lacks the keys {missing}.")
    return content


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _load_tfds(data_dir: Optional[str]) -> Cifar100:
    import tensorflow_datasets as tfds  # heavy import, only for this source

    try:
        dataset, info = tfds.load(
            "cifar100", split="train+test", data_dir=data_dir, download=False, with_info=True
        )
    except Exception as error:  # TFDS reports a missing dataset with several types
        raise FileNotFoundError(
            f"CIFAR-100 not found: no python version in {data_dir!r} and TFDS could not load "
            f"'cifar100' without downloading ({type(error).__name__}: {error}). "
            f"Expected layout: {LAYOUT}."
        ) from error
    parts = {"image": [], "label": [], "coarse_label": []}
    for batch in tfds.as_numpy(dataset.batch(10_000)):
        for key, values in parts.items():
            values.append(batch[key])
    fine_names, coarse_names = _standard_label_names()
    for feature, standard in (("label", fine_names), ("coarse_label", coarse_names)):
        names = list(info.features[feature].names)
        # Without metadata, TFDS names classes "0", "1", ...; otherwise the
        # names must be CIFAR-100's, or label numbers would mean other classes.
        if names != [str(i) for i in range(len(standard))] and names != standard:
            raise ValueError(f"TFDS cifar100 '{feature}' names differ from CIFAR-100's: {names[:5]}...")
    return Cifar100(
        images=np.concatenate(parts["image"]).astype(np.uint8, copy=False),
        fine_labels=np.concatenate(parts["label"]),
        coarse_labels=np.concatenate(parts["coarse_label"]),
        fine_names=fine_names,
        coarse_names=coarse_names,
    )


def _standard_label_names() -> tuple[list[str], list[str]]:
    labels = json.loads(
        resources.files("tf_deepemd.data").joinpath("splits", "cifar100-labels.json").read_text()
    )
    return labels["fine_label_names"], labels["coarse_label_names"]
