"""Exporting the model of a gin-configured training run (``tools/export.py``).

The run's model is rebuilt exactly as `tf_deepemd.training.run_experiment`
builds it (the gin-bound `make_model`, built at ``run_experiment.
image_size``) and the weights ``tools/eval.py`` would test are loaded: the
best weights of the latest finished stage of ``model_dir``
(`tf_deepemd.training.experiment.trained_weights`). The preprocessing
constants come from the same gin bindings (``run_experiment.dataset``,
``data_dir``, ``dataset_options``, ``test_split``), so the export
preprocesses as evaluation did. gin must be parsed before calling these.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
from typing import Any, Mapping, Optional

import gin
import keras

from tf_deepemd.data.image_split import Normalization
from tf_deepemd.export import serving_layout
from tf_deepemd.export.exporter import DEFAULT_MODEL_NAME, ExportResult, export_for_serving
from tf_deepemd.export.preprocessing import check_normalization, dataset_normalization
from tf_deepemd.training import checkpointing, experiment, model_config

log = logging.getLogger(__name__)

UNTRAINED_WARNING = (
    "No trained weights in {model_dir!r} (no best.weights.h5 of a pretrain or meta_train stage): "
    "exporting an UNTRAINED model with random weights. Its predictions are meaningless; use it "
    "only to try the serving setup. Train first with tools/train.py using the same gin files."
)


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The gin-bound `run_experiment` settings an export needs."""

    model_dir: Optional[str]
    dataset: Optional[str]
    data_dir: Optional[str]
    dataset_options: Mapping[str, Any]
    image_size: int
    test_split: str
    seed: int


def _bound(name):
    """``run_experiment.<name>`` as bound by gin, else the function's default."""
    try:
        return gin.query_parameter(f"run_experiment.{name}")
    except ValueError:
        return inspect.signature(experiment.run_experiment).parameters[name].default


def run_settings(model_dir: Optional[str] = None) -> RunSettings:
    """The parsed gin configuration's run settings; ``model_dir`` overrides the bound one."""
    return RunSettings(
        model_dir=model_dir or _bound("model_dir"),
        dataset=_bound("dataset"),
        data_dir=_bound("data_dir"),
        dataset_options=dict(_bound("dataset_options") or {}),
        image_size=int(_bound("image_size")),
        test_split=_bound("test_split"),
        seed=int(_bound("seed")),
    )


def find_weights(model_dir: Optional[str]) -> Optional[str]:
    """The weights to export: those ``tools/eval.py`` tests, else an unfinished stage's best.

    Returns:
      A ``.weights.h5`` path, or None when ``model_dir`` holds no weights.
    """
    if not model_dir or not os.path.isdir(model_dir):
        return None
    finished = experiment.trained_weights(model_dir)
    if finished:
        return finished
    for stage in ("meta_train", "pretrain"):
        files = checkpointing.StageFiles(model_dir, stage)
        if os.path.isfile(files.best_weights):
            log.warning(
                "The %s stage in %s has not finished: exporting its best weights so far (%s).",
                stage, model_dir, files.best_weights,
            )
            return files.best_weights
    return None


def restore_model(settings: RunSettings, weights: Optional[str] = None):
    """The run's `DeepEMD` model with its weights.

    Args:
      settings: from `run_settings`.
      weights: a ``.weights.h5`` file; default `find_weights(settings.model_dir)`.

    Returns:
      ``(model, weights_path)``; ``weights_path`` is None for an untrained
      model (a warning is logged).
    """
    if weights is not None and not os.path.isfile(weights):
        raise ValueError(f"No such weights file {weights!r}.")
    weights = weights or find_weights(settings.model_dir)
    # Same seed and construction as run_experiment: an untrained export is
    # at least reproducible.
    keras.utils.set_random_seed(settings.seed)
    model = model_config.make_model()
    size = settings.image_size
    model.build([(None, size, size, 3), (None,), (None, size, size, 3)])
    if weights is None:
        log.warning(UNTRAINED_WARNING.format(model_dir=settings.model_dir))
    else:
        model.load_weights(weights)
        log.info("Loaded weights %s", weights)
    return model, weights


def export_run(
    export_dir: str,
    model_dir: Optional[str] = None,
    *,
    version: Optional[int] = None,
    warmup: bool = False,
    weights: Optional[str] = None,
    normalization: Optional[Normalization] = None,
    model_name: str = DEFAULT_MODEL_NAME,
) -> tuple[ExportResult, Optional[str]]:
    """Exports the configured run's model to ``<export_dir>/<version>/``.

    Args:
      export_dir: TF Serving's model base folder.
      model_dir: the run's folder (default ``run_experiment.model_dir``).
      version: version number (default: next free one).
      warmup: write TF Serving's warmup requests.
      weights: export this ``.weights.h5`` instead of the run's best.
      normalization: ``(mean, std)``; default that of the run's dataset.
      model_name: the name clients use, recorded in warmup requests.

    Returns:
      ``(ExportResult, weights path or None if untrained)``.

    Raises:
      ValueError: configuration problems (no dataset bound, bad version...).
    """
    settings = run_settings(model_dir)
    serving_layout.resolve_version(export_dir, version)  # a taken version fails before any work
    if normalization is None:
        if not settings.dataset:
            raise ValueError(
                "No dataset: bind run_experiment.dataset (its evaluation normalisation is built "
                "into the export) or pass the normalisation explicitly."
            )
        normalization = dataset_normalization(
            settings.dataset, settings.test_split, settings.data_dir, settings.dataset_options
        )
    normalization = check_normalization(normalization)
    model, weights = restore_model(settings, weights)
    info = {
        "weights": os.path.abspath(weights) if weights else None,
        "trained": weights is not None,
        "model_dir": os.path.abspath(settings.model_dir) if settings.model_dir else None,
        "dataset": settings.dataset,
        "gin_config": gin.config_str(),
    }
    result = export_for_serving(
        model,
        export_dir,
        image_size=settings.image_size,
        normalization=normalization,
        version=version,
        warmup_requests=warmup,
        model_name=model_name,
        info=info,
    )
    return result, weights
