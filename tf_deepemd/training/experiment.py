"""The top level of a run: configuration check, stages, results.

`run_experiment` is what ``tools/train.py`` and ``tools/eval.py`` call
after parsing gin. A run is pre-training -> meta-training -> test
(docs/method.md, "Protocol"), each stage in its own folder of ``model_dir``
(`tf_deepemd.run_folder`). Everything is checked and every data pipeline
is built BEFORE any training (`prepare_run`), so a bad configuration
(unknown dataset or method, missing data_dir, a way or shot + query larger
than the data allows) fails in seconds with one clear ValueError.

gin binds this function, the stage settings (``pretrain.*``,
``meta_train.*``), `make_model` and `make_optimizer`; the Keras layers keep
plain constructor arguments. Bindings scoped ``test/`` apply to the test
stage's model alone (`model_config.configured_test_model`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import platform
import shutil
import tempfile
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import gin
import keras
import tensorflow as tf

from tf_deepemd import run_folder
from tf_deepemd.models.naming import method_name
from tf_deepemd.run_folder import META_TRAIN, PRETRAIN, STAGES, TEST, StageFiles
from tf_deepemd.training import final_evaluation, meta_train, pretrain, settings_record
from tf_deepemd.training.data_source import TEST_EPISODES_SEED_OFFSET, DataFit, DataSource
from tf_deepemd.training.launch import configuration_checks
from tf_deepemd.training.model_config import (
    binds_test_model,
    configured_model,
    configured_test_model,
)
from tf_deepemd.training.run_settings import DEFAULT_RUN
from tf_deepemd.training.stage import run_stage
from tf_deepemd.training.strategy import make_strategy, writes_run_folder

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PreparedRun:
    """A checked run with every pipeline and the model built, before any training.

    Attributes:
      model_dir: the run's folder.
      root: where this worker writes: ``model_dir``, or a scratch folder
        of its own on a non-chief worker of a multi-worker run.
      strategy: the `tf.distribute.Strategy`; the model lives in it.
      model: the built episode model.
      test_model: the built model the test stage evaluates: ``model``, or,
        when bindings are scoped ``test/``, one built with them
        (`model_config.configured_test_model`).
      data_source: the run's `DataSource`.
      pretrain, meta_train: ``(settings, data)`` of the stages to train,
        else None.
      test_episodes: the test stage's episodes, else None.
      test_shape: their ``(split, way, shot, query)``.
      test_weights: weights to test when no stage trains in this run.
    """

    model_dir: str
    root: str
    strategy: tf.distribute.Strategy
    model: keras.Model
    data_source: DataSource
    test_model: Optional[keras.Model] = None
    pretrain: Optional[tuple] = None
    meta_train: Optional[tuple] = None
    test_episodes: Optional[tf.data.Dataset] = None
    test_shape: Optional[tuple] = None
    test_weights: Optional[str] = None

    @property
    def writer(self):
        return self.root == self.model_dir


def check_arguments(model_dir, dataset, stages, positive, files):
    """ValueError naming the `run_experiment` argument that cannot work."""
    if not model_dir:
        raise ValueError("No model_dir: pass --model_dir or bind run_experiment.model_dir.")
    if not dataset:
        raise ValueError("No dataset: bind run_experiment.dataset (e.g. 'mini_imagenet').")
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages or list(stages) != sorted(stages, key=STAGES.index):
        raise ValueError(f"run_experiment.stages must be a non-empty ordered subset of {STAGES}, got {stages}.")
    for name, value in positive.items():
        if int(value) < 1:
            raise ValueError(f"run_experiment.{name} must be >= 1, got {value}.")
    for name, path in files.items():
        if path and not os.path.isfile(path):
            raise ValueError(f"run_experiment.{name}: no such file {path!r}.")


def prepare_run(model_dir, data_source, stages, way, shot, query, test_split, test_episodes,
                init_weights, test_weights, strategy):
    """Checks the stage settings and builds every pipeline and the model (`PreparedRun`).

    Raises:
      ValueError: a bad configuration (this is where a wrong data_dir, way
        or shot fails), before anything is written.
    """
    data_source.check()
    strategy = make_strategy(strategy)
    pretrain_settings, meta_settings = pretrain.PretrainSettings(), meta_train.MetaTrainSettings()
    pretrain_settings.check()
    meta_settings.check(strategy.num_replicas_in_sync)
    run = PreparedRun(model_dir, model_dir, strategy, None, data_source)
    fit = DataFit()  # every setting the data cannot hold, in one error
    if PRETRAIN in stages and pretrain_settings.epochs > 0:
        run.pretrain = pretrain_settings, pretrain.build_data(pretrain_settings, data_source, fit)
    if META_TRAIN in stages and meta_settings.epochs > 0:
        run.meta_train = meta_settings, meta_train.build_data(meta_settings, data_source, way, shot, fit)
    if TEST in stages:
        with fit.setting(f"run_experiment.way={way}, run_experiment.shot={shot}, "
                         f"run_experiment.query={query} (test_split={test_split!r})"):
            run.test_episodes = data_source.episodes(test_split, way, shot, query, test_episodes, 
                                                     seed_offset=TEST_EPISODES_SEED_OFFSET)
        run.test_shape = (test_split, int(way), int(shot), int(query))
        run.test_weights = test_weights
        if not (test_weights or run.pretrain or run.meta_train):
            run.test_weights = run_folder.trained_weights(model_dir) or init_weights
            if run.test_weights is None:
                raise ValueError(
                    f"Nothing to test: {model_dir} has no finished training stage; train first or "
                    "bind run_experiment.test_weights."
                )
    fit.raise_misfits()
    with strategy.scope():
        run.model = run_folder.new_episode_model(configured_model, data_source.image_size,
                                                 data_source.seed)
        run.test_model = run.model
        if run.test_episodes is not None and binds_test_model():
            run.test_model = run_folder.new_episode_model(configured_test_model, data_source.image_size,
                                                          data_source.seed)
    return run


def train_stages(run, init_weights, verbose, callbacks, stage_callbacks):
    """Runs the run's training stages in order; returns their summaries by stage."""
    train = functools.partial(run_stage, episode_model=run.model, strategy=run.strategy, verbose=verbose,
                              callbacks=callbacks, stage_callbacks=stage_callbacks)
    summary = {}
    if run.pretrain:
        settings, data = run.pretrain
        summary[PRETRAIN] = train(
            StageFiles(run.root, PRETRAIN), epochs=settings.epochs, val_episodes=data.val_episodes,
            keep_epoch_weights=settings.keep_epoch_weights,
            compile_fit=functools.partial(pretrain.compile_fit, settings, data, run.model, run.strategy),
        )
        write_operative_config(run)
    if run.meta_train:
        settings, data = run.meta_train
        start_weights = init_weights or summary.get(PRETRAIN, {}).get("weights")
        summary[META_TRAIN] = train(
            StageFiles(run.root, META_TRAIN), epochs=settings.epochs, val_episodes=data.val_episodes,
            keep_epoch_weights=settings.keep_epoch_weights,
            compile_fit=functools.partial(
                meta_train.compile_fit, settings, data, run.model, run.strategy, start_weights),
        )
        write_operative_config(run)
    return summary


def evaluate_test_stage(run, weights, test_episodes, results_file, callbacks):
    """The test stage: accuracy of ``weights`` on the test episodes, resumable (`final_evaluation`)."""
    run.test_model.load_weights(weights)
    log.info("test: %d episodes with %s", test_episodes, weights)
    identity = dict(final_evaluation.weights_identity(weights), data=repr(run.data_source),
                    episode_shape=list(run.test_shape), episodes=int(test_episodes))
    progress = final_evaluation.TestProgress(final_evaluation.progress_path(run.root, results_file), identity)
    scores = final_evaluation.run_test(run.test_model, run.test_episodes, int(test_episodes),
                                       progress, callbacks, show_progress=True)
    log.info(
        "test: accuracy %.2f +- %.2f %% over %d episodes, %.2f episodes/s",
        scores.accuracy, scores.ci95, scores.episodes, scores.episodes_per_second,
    )
    return scores


def write_operative_config(run):
    """``model_dir/operative_config.gin``: the gin values the run actually used."""
    if run.writer:
        with open(os.path.join(run.model_dir, "operative_config.gin"), "w") as stream:
            stream.write(gin.operative_config_str())


@gin.configurable
def run_experiment(
    model_dir: Optional[str] = None,
    dataset: Optional[str] = None,
    data_dir: Optional[str] = None,
    dataset_options: Optional[Mapping[str, Any]] = None,
    image_size: int = DEFAULT_RUN.image_size,
    way: int = DEFAULT_RUN.way,
    shot: int = DEFAULT_RUN.shot,
    query: int = DEFAULT_RUN.query,
    stages: Sequence[str] = STAGES,
    test_split: str = DEFAULT_RUN.test_split,
    test_episodes: int = 5000,
    init_weights: Optional[str] = None,
    test_weights: Optional[str] = None,
    strategy: str = "default",
    seed: int = DEFAULT_RUN.seed,
    results_file: str = "results.json",
    verbose: int = 1,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    stage_callbacks: Callable[[StageFiles], Sequence[keras.callbacks.Callback]] = lambda files: (),
):
    """Runs the configured stages and writes ``model_dir/results.json``.

    Args:
      model_dir: the run's folder (created); rerunning the same command in
        it resumes an interrupted stage (the test too) and skips finished
        ones; training under other settings is refused (`settings_record`).
      dataset: registered dataset name (`tf_deepemd.data.list_datasets()`).
      data_dir: where that dataset is (every pipeline of the run reads it).
      dataset_options: reader options, e.g. ``{'images_per_class': 60}``,
        and ``on_small_class`` / ``on_bad_image`` (`DataSource`).
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
      callbacks: extra Keras callbacks for the training stages; the test
        stage reports each episode to their predict hooks (`final_evaluation`).
      stage_callbacks: ``StageFiles -> callbacks`` run at the end of each
        training epoch after the stage's logs are written (the tools pass
        the accuracy plot, `tf_deepemd.visualization.AccuracyPlot`).

    Returns:
      The results dict written to the JSON file (``dataset, split, method,
      way, shot, query, episodes, accuracy, ci95`` in %, ``episodes_per_second``
      and per-stage summaries); without a ``'test'`` stage, only the latter.

    Raises:
      ConfigurationError: (a ValueError) a bad configuration, before any
        heavy work or any file is written.
    """
    arguments = dict(locals())
    start = time.perf_counter()
    stages = tuple(stages)
    with configuration_checks():
        check_arguments(
            model_dir, dataset, stages,
            positive=dict(image_size=image_size, way=way, shot=shot, query=query, test_episodes=test_episodes),
            files=dict(init_weights=init_weights, test_weights=test_weights),
        )
        data_source = DataSource(dataset, data_dir, int(image_size), dict(dataset_options or {}), int(seed))
        run = prepare_run(model_dir, data_source, stages, way, shot, query, test_split, test_episodes,
                          init_weights, test_weights, strategy)
        if not writes_run_folder(run.strategy):
            run.root = tempfile.mkdtemp(prefix="tf_deepemd_worker_")
        elif run.pretrain or run.meta_train:
            # A training run resumes its folder only under the same settings.
            settings_record.check_or_record(model_dir, settings_record.current_settings(arguments))
    replicas = run.strategy.num_replicas_in_sync
    log.info(
        "run %s: %s, %s, %d-way %d-shot, %d px, stages %s, %d replica(s)",
        model_dir, dataset, method_name(run.model), way, shot, image_size, ", ".join(stages), replicas,
    )
    try:
        if run.writer:
            os.makedirs(model_dir, exist_ok=True)
            with open(os.path.join(model_dir, "config.gin"), "w") as stream:
                stream.write(gin.config_str())
        results = {"model_dir": model_dir,
                   "stages": train_stages(run, init_weights, verbose, callbacks, stage_callbacks)}
        if run.test_episodes is not None:
            trained = [summary["weights"] for summary in results["stages"].values()]
            weights = run.test_weights or (trained[-1] if trained else None)
            scores = evaluate_test_stage(run, weights, test_episodes, results_file, callbacks)
            results.update(
                dataset=dataset, split=test_split, method=method_name(run.test_model), way=int(way),
                shot=int(shot), query=int(query), image_size=int(image_size),
                backbone=type(run.test_model.backbone).__name__, weights=weights, seed=int(seed),
                **scores.summary(),
            )
        results.update(total_seconds=round(time.perf_counter() - start, 1), replicas=replicas,
                       tensorflow=tf.__version__, host=platform.node())
        if run.writer:
            run_folder.write_json_atomically(os.path.join(model_dir, results_file), results)
            write_operative_config(run)
        return results
    finally:
        if not run.writer:
            shutil.rmtree(run.root, ignore_errors=True)
