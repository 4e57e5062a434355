"""Exporting the model of a gin-configured training run (``tools/export.py``).

The run's model is rebuilt exactly as `tf_deepemd.training.run_experiment`
builds it and the weights ``tools/eval.py`` would test are loaded: the
best weights of the latest finished stage of ``model_dir``
(`tf_deepemd.training.run_settings.restore_run_model`). The preprocessing
constants come from the same gin bindings (``run_experiment.dataset``,
``data_dir``, ``dataset_options``, ``test_split``), so the export
preprocesses as evaluation did. gin must be parsed before calling these.
"""

from __future__ import annotations

import os
from typing import Optional

import gin

from tf_deepemd.data.image_split import Normalization
from tf_deepemd.export import serving_layout
from tf_deepemd.export.exporter import DEFAULT_MODEL_NAME, ExportResult, export_for_serving
from tf_deepemd.export.preprocessing import check_normalization, dataset_normalization
from tf_deepemd.training.launch import configuration_checks
from tf_deepemd.training.run_settings import restore_run_model, run_settings


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
    with configuration_checks():
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
        model, weights = restore_run_model(settings, weights)
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
