"""What every command-line tool shares: environment, flags, the start of ``main``.

Kept free of TensorFlow imports so that ``--help`` stays fast; `start`
configures TensorFlow's thread pools (and logical CPUs) before its first
operation, then parses the gin files and bindings.
"""

import importlib
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "gin_configs")
FLAGS = flags.FLAGS


def define_run_flags(*, weights_verb=None):
    """`--gin_file`, `--gin_bindings` and `--model_dir`, plus `--weights` when
    the tool can use another weights file ("export", "evaluate", ...)."""
    flags.DEFINE_multi_string("gin_file", [], "gin config file(s) of the run, parsed in order.")
    flags.DEFINE_multi_string("gin_bindings", [], "gin bindings, applied after the files.")
    flags.DEFINE_string(
        "model_dir", None, "the run's folder; overrides run_experiment.model_dir."
    )
    if weights_verb:
        flags.DEFINE_string(
            "weights", None, f"{weights_verb} this .weights.h5 instead of the run's best weights."
        )


def define_thread_flags():
    """`--intra_op_threads` and `--inter_op_threads` (0: TensorFlow's choice)."""
    flags.DEFINE_integer(
        "intra_op_threads", 0,
        "TensorFlow intra-op threads (0: TF's choice; 1 is fastest when the EMD solver dominates).",
    )
    flags.DEFINE_integer("inter_op_threads", 0, "TensorFlow inter-op threads (0: TF's choice).")


def start(argv, *, log_level="warning", cpu_devices=1, configurables=()):
    """The start of every tool's ``main``; returns `tf_deepemd.training.launch`.

    Refuses stray arguments, sets TensorFlow's thread pools (the thread
    flags, when the tool defines them) and ``cpu_devices`` logical CPUs
    before any TensorFlow op, imports the ``configurables`` modules (those
    defining gin configurables the tool's configs bind, beyond training's),
    sets the log level and parses ``--gin_file`` and ``--gin_bindings`` (a
    configuration error: one line, exit 2).
    """
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from tf_deepemd.training import launch

    threads = [FLAGS[name].value if name in FLAGS else 0 for name in ("intra_op_threads", "inter_op_threads")]
    launch.configure_runtime(*threads, cpu_devices=cpu_devices)
    from tf_deepemd.training.gin_config import parse_config

    for module in configurables:
        importlib.import_module(module)
    logging.set_verbosity(log_level)
    launch.configure_or_exit(parse_config, FLAGS.gin_file, FLAGS.gin_bindings, [CONFIG_DIR])
    return launch
