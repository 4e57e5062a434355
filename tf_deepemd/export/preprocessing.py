"""Evaluation preprocessing inside the serving graph, and where its constants come from.

A served model receives raw pixels of any size; the signatures run the
same per-image transform as evaluation (`tf_deepemd.data.preprocessing.
preprocess_image` with ``training=False``: square resize to
``round(image_size * 92 / 84)``, centre crop of ``image_size``, per-channel
``(x / 255 - mean) / std``), so a served prediction equals what
``tools/eval.py`` computes for the same image. The function is reused, not
re-implemented, and mapped over the batch because it works on one
``[H, W, 3]`` image (its resize picks antialiasing per image size).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

import tensorflow as tf

from tf_deepemd.data import registry
from tf_deepemd.data.image_split import CIFAR_FS_NORMALIZATION, FEAT_NORMALIZATION, Normalization
from tf_deepemd.data.preprocessing import preprocess_image

log = logging.getLogger(__name__)

# Used only when a run's data is not on the exporting machine: the
# constants the readers of these datasets attach to every split
# (`image_split.py`). Datasets whose statistics are computed from the data
# (``demo``) or chosen by the user (``image_folder``) must be read instead.
KNOWN_NORMALIZATIONS: Mapping[str, Normalization] = {
    "mini_imagenet": FEAT_NORMALIZATION,
    "tiered_imagenet": FEAT_NORMALIZATION,
    "cub": FEAT_NORMALIZATION,
    "fc100": FEAT_NORMALIZATION,
    "cifar_fs": CIFAR_FS_NORMALIZATION,
}


def preprocess_images(images: tf.Tensor, image_size: int, normalization: Normalization) -> tf.Tensor:
    """Evaluation transform of a batch of raw images.

    Args:
      images: uint8 ``[N, H, W, 3]`` raw pixels (0..255), any ``H, W >= 1``.
      image_size: side of the model's input.
      normalization: ``(mean, std)`` per RGB channel in [0, 1] units.

    Returns:
      float32 ``[N, image_size, image_size, 3]``, normalised as at evaluation.
    """
    image_size = int(image_size)
    return tf.map_fn(
        lambda image: preprocess_image(image, image_size, False, normalization),
        images,
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
        name="evaluation_preprocessing",
    )


def check_normalization(normalization) -> Normalization:
    """``((m, m, m), (s, s, s))`` as floats; ValueError unless 3 means and 3 positive stds."""
    try:
        mean, std = normalization
        mean = tuple(float(value) for value in mean)
        std = tuple(float(value) for value in std)
    except (TypeError, ValueError):
        raise ValueError(
            f"`normalization` must be ((mean_r, mean_g, mean_b), (std_r, std_g, std_b)), got "
            f"{normalization!r}."
        ) from None
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(
            f"`normalization` needs 3 means and 3 positive stds, got mean {mean}, std {std}."
        )
    return mean, std


def dataset_normalization(
    dataset: str,
    split: str = "test",
    data_dir: Optional[str] = None,
    options: Optional[Mapping[str, Any]] = None,
) -> Normalization:
    """The ``(mean, std)`` that evaluation of ``dataset`` uses.

    Reads the split's metadata through the dataset registry, exactly as the
    evaluation pipeline does (for ``demo`` these are statistics of the
    generated train classes). If the data is not on this machine, the
    built-in constant of a standard benchmark is used instead (with a log
    line); other datasets then raise.

    Raises:
      ValueError: unknown dataset, or its data is missing and it has no
        built-in constant (pass the normalisation explicitly then).
    """
    registry.dataset_info(dataset)  # ValueError naming the known datasets
    try:
        return check_normalization(
            registry.load_split(dataset, split, data_dir, **dict(options or {})).normalization
        )
    except (OSError, ValueError) as error:
        # ValueError: no data_dir at all (the readers of file datasets require one).
        if dataset not in KNOWN_NORMALIZATIONS:
            if isinstance(error, ValueError):
                raise
            raise ValueError(
                f"Cannot read the normalisation of dataset {dataset!r} ({error}); make its data "
                "available or pass the normalisation explicitly (--normalization)."
            ) from error
        log.warning(
            "%s data not found (%s); using its built-in normalisation constants.", dataset, error
        )
        return KNOWN_NORMALIZATIONS[dataset]
