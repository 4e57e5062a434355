"""Evaluates a trained run on test episodes (SFC for shot > 1), as configured by gin.

    python tools/eval.py --gin_file=gin_configs/mini_5shot.gin --model_dir=runs/mini_1shot
    python tools/eval.py --gin_file=gin_configs/quickstart.gin --episodes=1000

Loads the best weights of the latest finished stage in the model dir (or
``run_experiment.test_weights``), runs the test stage only and writes
``<model_dir>/eval_<split>_<way>way_<shot>shot.json`` with the same fields
as ``results.json`` (``dataset, split, method, way, shot, episodes,
accuracy, ci95, episodes_per_second``); prints the accuracy and the
episodes per second. A configuration error is printed as one line (exit 2).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from tool_flags import define_run_flags, define_thread_flags  # noqa: E402

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "gin_configs")

define_run_flags()
flags.DEFINE_integer("episodes", None, "test episodes (default: run_experiment.test_episodes).")
flags.DEFINE_string("output", None, "results file name inside model_dir (default "
                    "eval_<split>_<way>way_<shot>shot.json).")
define_thread_flags()
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from tf_deepemd.training import launch

    launch.configure_runtime(FLAGS.intra_op_threads, FLAGS.inter_op_threads)
    import gin

    from tf_deepemd.training.experiment import run_experiment
    from tf_deepemd.training.gin_config import parse_config

    logging.set_verbosity(logging.INFO)
    launch.run_or_exit(parse_config, FLAGS.gin_file, FLAGS.gin_bindings, [CONFIG_DIR])
    overrides = {"stages": ("test",)}
    if FLAGS.model_dir:
        overrides["model_dir"] = FLAGS.model_dir
    if FLAGS.episodes is not None:
        overrides["test_episodes"] = FLAGS.episodes
    if FLAGS.output:
        overrides["results_file"] = FLAGS.output
    else:
        def bound(name, default):
            try:
                return gin.query_parameter(f"run_experiment.{name}")
            except ValueError:
                return default

        overrides["results_file"] = (
            f"eval_{bound('test_split', 'test')}_{bound('way', 5)}way_{bound('shot', 1)}shot.json"
        )
    results = launch.run_or_exit(run_experiment, **overrides)
    print(
        f"{results['dataset']} {results['split']} {results['method']} {results['way']}-way "
        f"{results['shot']}-shot: {results['accuracy']:.2f} +- {results['ci95']:.2f} % over "
        f"{results['episodes']} episodes, {results['episodes_per_second']:.2f} episodes/s; "
        f"written to {os.path.join(results['model_dir'], overrides['results_file'])}",
        flush=True,
    )


if __name__ == "__main__":
    app.run(main)
