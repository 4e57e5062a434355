"""A gin-configured run as the tools after training see it: its settings, its model.

``tools/eval.py``, ``export.py``, ``retrieve.py`` and ``visualize.py`` take
the same gin files as training; `run_settings` reads the ``run_experiment``
settings they need from the parsed configuration (bound values, else
`DEFAULT_RUN`, the very defaults of `run_experiment`) and
`restore_run_model` rebuilds the run's model as training built it, with the
weights ``tools/eval.py`` tests. gin must be parsed before calling these.

This module imports neither `run_experiment` nor the training stages:
export, retrieval and figures read a run without loading the training
stack (``tests/test_import_graph.py`` checks it).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import gin

from tf_deepemd import run_folder
from tf_deepemd.data.checked_split import PIPELINE_OPTIONS
from tf_deepemd.training.model_config import configured_model


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The gin-bound `run_experiment` settings the tools after training need.

    The field defaults are `run_experiment`'s (its signature reads them
    from `DEFAULT_RUN`). ``dataset_options`` holds the dataset reader's
    options only (not the episode pipelines' ``on_small_class`` or
    ``on_bad_image``): the tools read splits with `tf_deepemd.data.load_split`.
    """

    model_dir: Optional[str] = None
    dataset: Optional[str] = None
    data_dir: Optional[str] = None
    dataset_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    image_size: int = 84
    test_split: str = "test"
    way: int = 5
    shot: int = 1
    query: int = 15
    seed: int = 1


DEFAULT_RUN = RunSettings()


def run_setting(name: str) -> Any:
    """``run_experiment.<name>`` as bound by gin, else its default (`DEFAULT_RUN`)."""
    try:
        return gin.query_parameter(f"run_experiment.{name}")
    except ValueError:
        return getattr(DEFAULT_RUN, name)


def run_settings(model_dir: Optional[str] = None) -> RunSettings:
    """The parsed gin configuration's run settings; ``model_dir`` overrides the bound one."""
    return RunSettings(
        model_dir=model_dir or run_setting("model_dir"),
        dataset=run_setting("dataset"),
        data_dir=run_setting("data_dir"),
        dataset_options={key: value for key, value in dict(run_setting("dataset_options") or {}).items()
                         if key not in PIPELINE_OPTIONS},
        image_size=int(run_setting("image_size")),
        test_split=run_setting("test_split"),
        way=int(run_setting("way")),
        shot=int(run_setting("shot")),
        query=int(run_setting("query")),
        seed=int(run_setting("seed")),
    )


def restore_run_model(settings: RunSettings, weights: Optional[str] = None):
    """``(model, weights path or None if untrained)``: the run's model (`run_folder.restore_model`)."""
    return run_folder.restore_model(
        configured_model, settings.image_size, settings.seed, settings.model_dir, weights
    )
