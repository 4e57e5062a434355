"""The registry: dataset name -> reader, splits, class counts and layout.

Each reader is a plain function ``reader(split, data_dir, **options) ->
ImageSplit``. `register_dataset` adds one (e.g. a user's own format);
`load_split` is the single way the pipelines obtain data.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Mapping, Optional

import gin

from tf_deepemd.data import cifar, cub, demo, folder, mini_imagenet
from tf_deepemd.data.image_split import ImageSplit

Reader = Callable[..., ImageSplit]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset before reading it.

    Attributes:
      name: registry name.
      reader: ``reader(split, data_dir, **options) -> ImageSplit``.
      splits: accepted split names; None accepts any (e.g. folder names).
      num_classes: class count of each split when the library defines the
        split (shipped split files, generated data), else None: the counts
        then come from the user's files (see `layout` for the standard ones).
      layout: the expected on-disk layout, for error messages and docs.
    """

    name: str
    reader: Reader
    splits: Optional[tuple[str, ...]]
    num_classes: Optional[Mapping[str, int]]
    layout: str

    def options(self) -> tuple[str, ...]:
        """Keyword options of the reader beyond ``split`` and ``data_dir``."""
        parameters = inspect.signature(self.reader).parameters
        return tuple(name for name in parameters if name not in ("split", "data_dir"))


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo, overwrite: bool = False) -> None:
    """Adds a dataset; raises ValueError if the name is taken and not `overwrite`."""
    if info.name in _REGISTRY and not overwrite:
        raise ValueError(f"A dataset named {info.name!r} is already registered.")
    _REGISTRY[info.name] = info


def list_datasets() -> tuple[str, ...]:
    """Names of the registered datasets, sorted.

    >>> from tf_deepemd.data import list_datasets
    >>> [name for name in list_datasets() if name in ("cifar_fs", "demo", "mini_imagenet")]
    ['cifar_fs', 'demo', 'mini_imagenet']
    """
    return tuple(sorted(_REGISTRY))


def dataset_info(name: str) -> DatasetInfo:
    """The `DatasetInfo` of `name`; ValueError listing the known names if unknown.

    >>> from tf_deepemd.data import dataset_info
    >>> info = dataset_info("cifar_fs")
    >>> info.splits, info.num_classes["test"]
    (('train', 'val', 'test'), 20)
    """
    if name not in _REGISTRY:
        raise ValueError(f"Unknown dataset `name` {name!r}; known datasets: {', '.join(list_datasets())}.")
    return _REGISTRY[name]


@gin.register(module="tf_deepemd.data")
def load_split(name: str, split: str, data_dir: Optional[str] = None, **options) -> ImageSplit:
    """Reads one split of a registered dataset.

    Args:
      name: a registered name (`list_datasets()`).
      split: a split of that dataset (`dataset_info(name).splits`).
      data_dir: where the data lives (see `dataset_info(name).layout`).
      **options: reader options (`dataset_info(name).options()`), e.g.
        ``images_per_class`` for ``demo`` or ``source`` for ``cifar_fs``.

    Raises:
      ValueError: unknown name, split or option.
      FileNotFoundError: data missing; the message names the expected layout.
    """
    info = dataset_info(name)
    check_split(info, split)
    unknown = sorted(set(options) - set(info.options()))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for dataset {name!r}; it accepts {list(info.options())}."
        )
    return info.reader(split, data_dir, **options)


def check_split(info: DatasetInfo, split: str) -> None:
    if not isinstance(split, str) or (info.splits is not None and split not in info.splits):
        allowed = info.splits if info.splits is not None else "a folder name or 'all'"
        raise ValueError(f"`split` {split!r} is not a split of {info.name!r}; expected {allowed}.")


_STANDARD_SPLITS = ("train", "val", "test")

for _info in (
    DatasetInfo("mini_imagenet", mini_imagenet.read_mini_imagenet, _STANDARD_SPLITS, None,
                mini_imagenet.LAYOUT + "; standard split 64/16/20 classes"),
    DatasetInfo("tiered_imagenet", folder.read_tiered_imagenet, _STANDARD_SPLITS, None,
                folder.TIERED_LAYOUT + "; standard split 351/97/160 classes"),
    DatasetInfo("cub", cub.read_cub, _STANDARD_SPLITS,
                {"train": 100, "val": 50, "test": 50}, cub.LAYOUT),
    DatasetInfo("cifar_fs", cifar.read_cifar_fs, _STANDARD_SPLITS,
                {"train": 64, "val": 16, "test": 20}, cifar.LAYOUT),
    DatasetInfo("fc100", cifar.read_fc100, _STANDARD_SPLITS,
                {"train": 60, "val": 20, "test": 20}, cifar.LAYOUT),
    DatasetInfo("image_folder", folder.read_image_folder, None, None, folder.FOLDER_LAYOUT),
    DatasetInfo("demo", demo.read_demo, tuple(demo.SPLIT_CLASSES),
                {split: len(classes) for split, classes in demo.SPLIT_CLASSES.items()},
                "generated by tf_deepemd.data.demo and cached under <data_dir> "
                "(default ~/.cache/tf_deepemd/demo)"),
):
    register_dataset(_info)
