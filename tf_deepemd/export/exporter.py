"""Writing a `DeepEMD` model as a versioned SavedModel for TensorFlow Serving.

The SavedModel is written by `keras.export.ExportArchive`, not by
`tf.saved_model.save` of a hand-made `tf.Module`: the latter holds the
Keras 3 variables in a way that `tf.saved_model.load` accepts but the TF1
session loader of TF Serving and ``saved_model_cli run`` rejects
(``FailedPreconditionError: Could not find variable``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Optional

import keras
import tensorflow as tf

from tf_deepemd.data.image_split import Normalization
from tf_deepemd.export import serving_layout, signatures, warmup
from tf_deepemd.ops.emd import stock_ops_only

DEFAULT_MODEL_NAME = "deepemd"
EXPORT_INFO_FILE = os.path.join(serving_layout.ASSETS_EXTRA, "deepemd_export.json")


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """Where an export went: ``path`` = ``<base>/<version>``."""

    path: str
    version: int
    warmup_file: Optional[str] = None


def write_saved_model(model, path: str, image_size: int, normalization: Normalization) -> None:
    """Writes ``model`` with the `signatures` (``serving_default``, ``embed``, ``emd``) to ``path``.

    Args:
      model: a built `DeepEMD` model (weights loaded).
      path: the SavedModel folder (created).
      image_size: the model's input side.
      normalization: evaluation ``(mean, std)`` of its dataset.
    """
    endpoints = signatures.ServingSignatures(model, image_size, normalization).endpoints()
    archive = keras.export.ExportArchive()
    model.track_for_export(archive)
    # Stock TensorFlow Serving cannot load the compiled EMD kernel (a custom
    # op): the signatures are traced with the stock-op solver.
    with stock_ops_only():
        for name, (function, input_signature) in endpoints.items():
            archive.add_endpoint(name, function, input_signature=input_signature)
        archive.write_out(path, verbose=False)


def export_for_serving(
    model,
    export_dir: str,
    *,
    image_size: int,
    normalization: Normalization,
    version: Optional[int] = None,
    warmup_requests: bool = False,
    model_name: str = DEFAULT_MODEL_NAME,
    info: Optional[Mapping[str, Any]] = None,
) -> ExportResult:
    """Writes ``<export_dir>/<version>/`` in TF Serving's layout.

    Args:
      model: a built `DeepEMD` model.
      export_dir: the model's base folder (TF Serving's ``model_base_path``).
      image_size, normalization: the evaluation preprocessing (see
        `write_saved_model`).
      version: version number; default one more than the highest present.
      warmup_requests: also write ``assets.extra/tf_serving_warmup_requests``
        (a 5-way 1-shot and a 5-way 5-shot episode at ``image_size``).
      model_name: the name clients use (``MODEL_NAME``), put in the warmup
        requests.
      info: extra JSON-able provenance (weights file, gin config, ...)
        written with the preprocessing settings to
        ``assets.extra/deepemd_export.json`` (TF Serving ignores it).

    Returns:
      An `ExportResult`.

    Raises:
      ValueError: a bad or already existing version.
    """
    version = serving_layout.resolve_version(export_dir, version)

    def write(folder):
        write_saved_model(model, folder, image_size, normalization)
        description = {
            "version": version,
            "model_name": model_name,
            "image_size": int(image_size),
            "normalization": {"mean": list(normalization[0]), "std": list(normalization[1])},
            "signatures": {
                name: {
                    "inputs": {k: [dtype.name, shape] for k, (dtype, shape) in inputs.items()},
                    "outputs": list(signatures.OUTPUTS[name]),
                }
                for name, inputs in signatures.INPUTS.items()
            },
            "tensorflow": tf.__version__,
            **dict(info or {}),
        }
        os.makedirs(os.path.join(folder, serving_layout.ASSETS_EXTRA), exist_ok=True)
        with open(os.path.join(folder, EXPORT_INFO_FILE), "w") as stream:
            json.dump(description, stream, indent=2, sort_keys=True)
            stream.write("\n")
        if warmup_requests:
            warmup.write_warmup_file(
                folder, warmup.episode_requests(int(image_size)), model_name, signatures.EPISODE
            )

    path = serving_layout.write_version(export_dir, version, write)
    warmup_file = os.path.join(path, serving_layout.WARMUP_FILE) if warmup_requests else None
    return ExportResult(path=path, version=version, warmup_file=warmup_file)
