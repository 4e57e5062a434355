"""`ImageSplit`: the images and labels of one split of a dataset.

Every reader (one module per on-disk format) returns an `ImageSplit`; the
pipelines (`episodes.py`, `pretraining.py`) only read `ImageSplit`s. Images
are either files (decoded by the pipeline) or an in-memory uint8 array
(gathered by the pipeline), never both.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

# Mean / std per RGB channel in [0, 1] units.
Normalization = tuple[tuple[float, float, float], tuple[float, float, float]]

#: The CIFAR-10 statistics the official DeepEMD loaders (via FEAT/MTL) use for
#: miniImageNet, tieredImageNet, CUB and FC100 (docs/method.md, "Data").
FEAT_NORMALIZATION: Normalization = (
    (125.3 / 255.0, 123.0 / 255.0, 113.9 / 255.0),
    (63.0 / 255.0, 62.1 / 255.0, 66.7 / 255.0),
)
#: The constants of the official CIFAR-FS FCN/Grid loaders (docs/method.md, "Data").
CIFAR_FS_NORMALIZATION: Normalization = (
    (0.5071, 0.4866, 0.4409),
    (0.2009, 0.1984, 0.2023),
)


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSplit:
    """One split of a dataset.

    Attributes:
      dataset: registry name of the dataset, e.g. ``"cifar_fs"``.
      split: split name, e.g. ``"train"``.
      class_names: ``[C]`` names; class ``c`` has label ``c``.
      labels: int32 ``[N]``, label of each image, in ``0 .. C - 1``.
      normalization: ``(mean, std)`` per RGB channel in [0, 1] units.
      paths: ``N`` image file paths (file datasets), or None.
      images: uint8 ``[N, H, W, 3]`` (in-memory datasets), or None.
      skipped: files left out because they could not be decoded.
    """

    dataset: str
    split: str
    class_names: tuple[str, ...]
    labels: np.ndarray
    normalization: Normalization
    paths: Optional[tuple[str, ...]] = None
    images: Optional[np.ndarray] = None
    skipped: tuple[str, ...] = ()

    def __post_init__(self):
        labels = np.asarray(self.labels)
        object.__setattr__(self, "labels", labels.astype(np.int32, copy=False))
        if (self.paths is None) == (self.images is None):
            raise ValueError("An ImageSplit holds either `paths` or `images`, exactly one.")
        if labels.ndim != 1 or len(labels) != self.num_images:
            raise ValueError(
                f"`labels` must have shape [{self.num_images}], got {labels.shape}."
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise ValueError(
                f"`labels` must lie in [0, {len(self.class_names)}), got "
                f"[{labels.min()}, {labels.max()}]."
            )
        if self.images is not None:
            images = self.images
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(
                    f"`images` must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}."
                )

    @property
    def num_images(self) -> int:
        return len(self.paths) if self.paths is not None else len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def class_sizes(self) -> np.ndarray:
        """int64 ``[C]``: number of images of each class."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def indices_by_class(self) -> list[np.ndarray]:
        """For each class, the int64 indices of its images, in split order."""
        order = np.argsort(self.labels, kind="stable")
        bounds = np.cumsum(self.class_sizes())[:-1]
        return np.split(order.astype(np.int64), bounds)

    def subset(self, keep_images: np.ndarray, skipped: Sequence[str] = ()) -> "ImageSplit":
        """The same classes with only the images where `keep_images` (bool ``[N]``) is true.

        A class may be left with no images; `skipped` is appended to
        `self.skipped`.
        """
        keep_images = np.asarray(keep_images, bool)
        return dataclasses.replace(
            self,
            labels=self.labels[keep_images],
            paths=(
                tuple(p for p, keep in zip(self.paths, keep_images) if keep)
                if self.paths is not None
                else None
            ),
            images=self.images[keep_images] if self.images is not None else None,
            skipped=self.skipped + tuple(skipped),
        )

    def without_classes(self, classes: Sequence[int]) -> "ImageSplit":
        """The split without `classes` and their images; the other classes are
        relabelled ``0 .. C' - 1`` in their original order."""
        kept_classes = np.setdiff1d(np.arange(self.num_classes), np.asarray(classes, np.int64))
        relabel = np.full(self.num_classes, -1, np.int32)
        relabel[kept_classes] = np.arange(len(kept_classes), dtype=np.int32)
        smaller = self.subset(relabel[self.labels] >= 0)
        return dataclasses.replace(
            smaller,
            class_names=tuple(self.class_names[c] for c in kept_classes),
            labels=relabel[smaller.labels],
        )
