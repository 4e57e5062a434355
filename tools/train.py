"""Trains and tests a few-shot model as configured by gin.

    python tools/train.py --gin_file=gin_configs/quickstart.gin
    python tools/train.py --gin_file=gin_configs/mini_1shot.gin \
        --gin_bindings="run_experiment.data_dir='/data'" --model_dir=runs/mini_1shot

Runs the configured stages (pre-training, meta-training, test) and writes
into the model dir: ``results.json`` (test accuracy and 95 % CI in %),
``config.gin`` and ``operative_config.gin``, and per stage ``log.csv``,
``tensorboard/`` event files, ``best.weights.h5`` and the resume
checkpoints. Interrupt it and run the same command again: finished stages
are skipped and the interrupted one continues after its last full epoch.
A configuration error is printed as one line (exit code 2).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from tool_flags import define_run_flags, define_thread_flags  # noqa: E402

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "gin_configs")

define_run_flags()
define_thread_flags()
flags.DEFINE_integer("cpu_devices", 1, "split the CPU into this many logical devices "
                     "(to use run_experiment.strategy='mirrored' without GPUs).")
flags.DEFINE_integer("keras_verbose", -1, "Keras fit verbosity; -1: bars on a terminal, else 2.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # Before any TensorFlow op: thread pools and devices are fixed after it.
    from tf_deepemd.training import launch

    launch.configure_runtime(FLAGS.intra_op_threads, FLAGS.inter_op_threads, FLAGS.cpu_devices)
    from tf_deepemd.training.experiment import run_experiment
    from tf_deepemd.training.gin_config import parse_config

    logging.set_verbosity(logging.INFO)
    launch.run_or_exit(parse_config, FLAGS.gin_file, FLAGS.gin_bindings, [CONFIG_DIR])
    overrides = {"verbose": launch.keras_verbosity(FLAGS.keras_verbose)}
    if FLAGS.model_dir:
        overrides["model_dir"] = FLAGS.model_dir
    results = launch.run_or_exit(run_experiment, **overrides)
    if "accuracy" in results:
        print(
            f"{results['dataset']} {results['split']} {results['method']} {results['way']}-way "
            f"{results['shot']}-shot: {results['accuracy']:.2f} +- {results['ci95']:.2f} % "
            f"({results['episodes']} episodes); results in {results['model_dir']}/results.json",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
