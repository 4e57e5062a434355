"""What the tools share: stages, checkpoints, evaluation, strategies, gin factories.

One concept per module:

* `experiment`: `run_experiment` (the top level of ``tools/train.py`` and
  ``tools/eval.py``);
* `model_config`: the gin-bindable `make_model`;
* `stage`: `run_stage`, the skeleton both training stages share (done
  check, compile, resume, fit, finish) and their episode validation;
* `pretrain`, `meta_train`: the two training stages: settings, data and
  what each compiles and fits;
* `evaluate`: accuracy over N episodes with the 95 % confidence interval;
* `progress`: count, rate and time left of evaluation loops on the console;
* `test_stage`: the test, resumable from per-episode accuracies saved as
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
"""

from tf_deepemd.training.evaluate import (
    EpisodeAccuracy,
    EpisodeEvaluator,
    confidence_interval,
    evaluate_episodes,
)
from tf_deepemd.training.experiment import run_experiment
from tf_deepemd.training.gin_config import parse_config
from tf_deepemd.training.model_config import make_model
from tf_deepemd.training.optimizers import (
    CosineDecay,
    EpisodicSGD,
    StepDecay,
    epoch_schedule,
    make_optimizer,
)
from tf_deepemd.training.strategy import make_strategy

__all__ = [
    "CosineDecay",
    "EpisodeAccuracy",
    "EpisodeEvaluator",
    "EpisodicSGD",
    "StepDecay",
    "confidence_interval",
    "epoch_schedule",
    "evaluate_episodes",
    "make_model",
    "make_optimizer",
    "make_strategy",
    "parse_config",
    "run_experiment",
]
