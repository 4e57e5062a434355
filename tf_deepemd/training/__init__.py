"""What the tools share: stages, checkpoints, evaluation, strategies, gin factories.

One concept per module:

* `experiment`: `run_experiment` (the top level of ``tools/train.py`` and
  ``tools/eval.py``);
* `model_config`: `configured_model`, the episode model of the run's gin
  configuration (bound as ``make_model.*``, the arguments of
  `tf_deepemd.make_model`);
* `stage`: `run_stage`, the skeleton both training stages share (done
  check, compile, resume, fit, finish) and their episode validation;
* `pretrain`, `meta_train`: the two training stages: settings, data and
  what each compiles and fits;
* `evaluate`: accuracy over N episodes with the 95 % confidence interval;
* `final_evaluation`: the test stage, resumable from per-episode accuracies saved as
  it goes;
* `settings_record`: the settings a run folder was made with (a training
  run under other ones is refused);
* `checkpointing`: resume after a kill, best-model checkpoints, finished
  stages skipped;
* `strategy`: ``'default'`` / ``'mirrored'`` / ``'multi_worker'``;
* `optimizers`: the official SGD (Nesterov, L2 weight decay, NaN guard) and
  the epoch schedules (step, cosine);
* `objectives`: episode loss/accuracy for ``compile``;
* `data_source`: the run's shared dataset settings and its pipelines, and
  `DataFit`, every setting the data cannot hold in one error;
* `run_logs`: CSV, TensorBoard and log lines of a stage;
* `gin_config`: parsing gin files, bindings and include paths;
* `run_settings`: a trained run's settings and model as the tools after
  training (eval, export, retrieval, figures) rebuild them;
* `launch`: process setup and error reporting of the command-line tools
  (a configuration error as one line, a failed op as its cause).

The run's folder (layout, atomic files, best weights) is
`tf_deepemd.run_folder`, below this package.

The names below are imported on first use, so that importing one module
of this package (``run_settings`` for export, retrieval and figures) does
not load the whole training stack.
"""

import importlib

# Public name -> the module of this package that defines it.
_PUBLIC = {
    "CosineDecay": "optimizers",
    "EpisodeAccuracy": "evaluate",
    "EpisodeEvaluator": "evaluate",
    "EpisodicSGD": "optimizers",
    "StepDecay": "optimizers",
    "confidence_interval": "evaluate",
    "epoch_schedule": "optimizers",
    "evaluate_episodes": "evaluate",
    "make_optimizer": "optimizers",
    "make_strategy": "strategy",
    "parse_config": "gin_config",
    "run_experiment": "experiment",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
