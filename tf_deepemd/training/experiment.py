"""The top level of a run: configuration check, stages, results.

`run_experiment` is what ``tools/train.py`` and ``tools/eval.py`` call
after parsing gin. A run is pre-training -> meta-training -> test
(METHOD.md 6), each stage in its own folder of ``model_dir`` (see
`checkpointing`). Everything is checked and every data pipeline is built
BEFORE any training, so a bad configuration (unknown dataset or method,
missing data_dir, a way or shot + query larger than the data allows) fails
in seconds with one clear ValueError.

gin binds this function, the stage settings (``pretrain.*``,
``meta_train.*``), `make_model` and `make_optimizer`; the Keras layers keep
plain constructor arguments.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from typing import Any, Mapping, Optional, Sequence

import gin
import keras
import tensorflow as tf

from tf_deepemd.models.naming import method_name
from tf_deepemd.training import checkpointing, meta_train, pretrain
from tf_deepemd.training.data_source import DataSource
from tf_deepemd.training.evaluate import EpisodeEvaluator
from tf_deepemd.training.model_config import make_model
from tf_deepemd.training.strategy import is_chief, make_strategy

log = logging.getLogger(__name__)

STAGES = ("pretrain", "meta_train", "test")


def trained_weights(model_dir):
    """Best weights of the latest finished training stage in ``model_dir``, or None."""
    for stage in ("meta_train", "pretrain"):
        files = checkpointing.StageFiles(model_dir, stage)
        if files.is_done() and os.path.isfile(files.best_weights):
            return files.best_weights
    return None


def check_positive(name, value):
    if int(value) < 1:
        raise ValueError(f"run_experiment.{name} must be >= 1, got {value}.")


@gin.configurable
def run_experiment(
    model_dir: Optional[str] = None,
    dataset: Optional[str] = None,
    data_dir: Optional[str] = None,
    dataset_options: Optional[Mapping[str, Any]] = None,
    image_size: int = 84,
    way: int = 5,
    shot: int = 1,
    query: int = 15,
    stages: Sequence[str] = STAGES,
    test_split: str = "test",
    test_episodes: int = 5000,
    init_weights: Optional[str] = None,
    test_weights: Optional[str] = None,
    strategy: str = "default",
    seed: int = 1,
    results_file: str = "results.json",
    verbose: int = 1,
    callbacks: Sequence[keras.callbacks.Callback] = (),
):
    """Runs the configured stages and writes ``model_dir/results.json``.

    Args:
      model_dir: the run's folder (created); rerunning the same command in
        it resumes an interrupted stage and skips finished ones.
      dataset: registered dataset name (`tf_deepemd.data.list_datasets()`).
      data_dir: where that dataset is (every pipeline of the run reads it).
      dataset_options: reader options, e.g. ``{'images_per_class': 60}``.
      image_size: image side fed to the model (84 official, 32 CPU-scale).
      way, shot, query: the test episodes (and validation way; meta-training
        uses ``meta_train.shot``, 1 officially, also for 5-shot results).
      stages: any of ``('pretrain', 'meta_train', 'test')``, in that order.
      test_split, test_episodes: where and how many test episodes.
      init_weights: weights (``.weights.h5`` of an episode model) to start
        meta-training from instead of this run's pre-training.
      test_weights: weights to test instead of this run's best ones.
      strategy: ``'default'``, ``'mirrored'`` or ``'multi_worker'``.
      seed: seeds the weights' initialisation and every pipeline.
      results_file: name of the results JSON inside ``model_dir``.
      verbose: Keras progress output (1 bars, 2 one line per epoch).
      callbacks: extra Keras callbacks for the training stages.

    Returns:
      The results dict written to the JSON file (``dataset, split, method,
      way, shot, query, episodes, accuracy, ci95`` in %, ``episodes_per_second``
      and per-stage summaries); without a ``'test'`` stage, only the latter.

    Raises:
      ValueError: a bad configuration, before any heavy work.
    """
    start = time.perf_counter()
    if not model_dir:
        raise ValueError("No model_dir: pass --model_dir or bind run_experiment.model_dir.")
    if not dataset:
        raise ValueError("No dataset: bind run_experiment.dataset (e.g. 'mini_imagenet').")
    stages = tuple(stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages or list(stages) != sorted(stages, key=STAGES.index):
        raise ValueError(f"run_experiment.stages must be a non-empty ordered subset of {STAGES}, got {stages}.")
    for name, value in (("image_size", image_size), ("way", way), ("shot", shot), ("query", query),
                        ("test_episodes", test_episodes)):
        check_positive(name, value)
    for name, path in (("init_weights", init_weights), ("test_weights", test_weights)):
        if path and not os.path.isfile(path):
            raise ValueError(f"run_experiment.{name}: no such file {path!r}.")

    data_source = DataSource(dataset, data_dir, int(image_size), dict(dataset_options or {}), int(seed))
    data_source.check()
    strategy_object = make_strategy(strategy)
    replicas = strategy_object.num_replicas_in_sync
    pretrain_settings = pretrain.PretrainSettings()
    meta_settings = meta_train.MetaTrainSettings()
    pretrain_settings.check()
    meta_settings.check(replicas)

    # Every pipeline now: this is where a wrong data_dir, way or shot fails.
    run_pretrain = "pretrain" in stages and pretrain_settings.epochs > 0
    run_meta = "meta_train" in stages and meta_settings.epochs > 0
    pretrain_data = pretrain.build_data(pretrain_settings, data_source) if run_pretrain else None
    meta_data = meta_train.build_data(meta_settings, data_source, way, shot) if run_meta else None
    test_data = None
    if "test" in stages:
        test_data = data_source.episodes(test_split, way, shot, query, test_episodes, seed_offset=4)

    keras.utils.set_random_seed(int(seed))
    with strategy_object.scope():
        model = make_model()
        model.build([(None, image_size, image_size, 3), (None,), (None, image_size, image_size, 3)])

    chief = is_chief(strategy_object)
    if chief:
        os.makedirs(model_dir, exist_ok=True)
        with open(os.path.join(model_dir, "config.gin"), "w") as stream:
            stream.write(gin.config_str())
    log.info(
        "run %s: %s, %s, %d-way %d-shot, %d px, stages %s, %d replica(s)",
        model_dir, dataset, method_name(model), way, shot, image_size, ", ".join(stages), replicas,
    )

    summary = {}
    if run_pretrain:
        summary["pretrain"] = pretrain.run_pretraining(
            pretrain_settings, pretrain_data, model,
            checkpointing.StageFiles(model_dir, pretrain.STAGE, chief), strategy_object,
            verbose=verbose, callbacks=callbacks,
        )
        write_operative_config(model_dir, chief)
    if run_meta:
        start_weights = init_weights
        if start_weights is None and run_pretrain:
            start_weights = summary["pretrain"]["weights"]
        summary["meta_train"] = meta_train.run_meta_training(
            meta_settings, meta_data, model,
            checkpointing.StageFiles(model_dir, meta_train.STAGE, chief), strategy_object,
            verbose=verbose, callbacks=callbacks, init_weights=start_weights,
        )
        write_operative_config(model_dir, chief)

    results = {"model_dir": model_dir, "stages": summary}
    if test_data is not None:
        weights = test_weights or trained_weights(model_dir) or init_weights
        if weights is None:
            raise ValueError(
                f"Nothing to test: {model_dir} has no finished training stage; train first or bind "
                "run_experiment.test_weights."
            )
        model.load_weights(weights)
        log.info("test: %d %s episodes (%d-way %d-shot) with %s", test_episodes, test_split, way, shot, weights)
        scores = EpisodeEvaluator(model)(test_data, log_every=max(1, min(500, test_episodes // 10)))
        log.info(
            "test: accuracy %.2f +- %.2f %% over %d episodes, %.2f episodes/s",
            scores.accuracy, scores.ci95, scores.episodes, scores.episodes_per_second,
        )
        results.update(
            dataset=dataset,
            split=test_split,
            method=method_name(model),
            way=int(way),
            shot=int(shot),
            query=int(query),
            image_size=int(image_size),
            backbone=type(model.backbone).__name__,
            weights=weights,
            seed=int(seed),
            **scores.summary(),
        )
    results.update(
        total_seconds=round(time.perf_counter() - start, 1),
        replicas=replicas,
        tensorflow=tf.__version__,
        host=platform.node(),
    )
    if chief:
        checkpointing.write_json_atomically(os.path.join(model_dir, results_file), results)
        write_operative_config(model_dir, chief)
    return results


def write_operative_config(model_dir, chief=True):
    """``model_dir/operative_config.gin``: the gin values the run actually used."""
    if chief:
        with open(os.path.join(model_dir, "operative_config.gin"), "w") as stream:
            stream.write(gin.operative_config_str())
