"""What every command-line tool shares: environment, flags, the start and end of ``main``.

Kept free of TensorFlow imports so that ``--help`` stays fast and never
runs anything; `start` quiets TensorFlow's C++ logs (unless ``--verbose``
or a user-set ``TF_CPP_MIN_LOG_LEVEL``) before TensorFlow is imported,
configures its thread pools (and logical CPUs) before its first operation,
then parses the gin files and bindings. `run` wraps ``main``: Ctrl-C ends
the tool with one line saying how to go on, exit code 130.

The flags defined here belong to this module; each tool calls
``flags.adopt_module_key_flags(tool_entry)`` so that its ``--help`` lists
them next to its own.
"""

import contextlib
import importlib
import logging as std_logging
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import app, flags, logging  # noqa: E402

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "gin_configs")
FLAGS = flags.FLAGS
# TensorFlow's C++ log level when the user set none: errors and fatal
# messages only come with a Python exception, so the tools show none of them.
QUIET_CPP_LOG_LEVEL = "3"
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as shells report it

flags.DEFINE_bool(
    "verbose", False,
    "show TensorFlow's own logs (C++ and Grappler messages, the oneDNN banner, INFO lines); "
    "a TF_CPP_MIN_LOG_LEVEL you set is honoured either way.",
)


def define_run_flags(*, weights_verb=None):
    """`--gin_file`, `--gin_bindings` and `--model_dir`, plus `--weights` when
    the tool can use another weights file ("export", "evaluate", ...)."""
    flags.DEFINE_multi_string("gin_file", [], "gin config file(s) of the run, parsed in order")
    flags.DEFINE_multi_string("gin_bindings", [], "gin bindings, applied after the files")
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


@contextlib.contextmanager
def _stderr_held_back():
    """Holds back what C++ code writes to file descriptor 2; replays it if the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            os.write(2, held.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow(verbose=False):
    """Imports TensorFlow with its C++ logs at the user's level or quiet.

    ``TF_CPP_MIN_LOG_LEVEL`` as the user set it, else 0 with ``verbose``,
    else `QUIET_CPP_LOG_LEVEL`. The oneDNN banner TensorFlow prints while
    loading (an INFO line written before its log level is read) is held
    back unless INFO lines are wanted; the INFO lines of TensorFlow's Python
    logger are hidden unless ``verbose`` (its absl INFO lines, e.g. the
    checkpoint saver's timings: `set_log_level`).
    """
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else QUIET_CPP_LOG_LEVEL)
    loading = _stderr_held_back() if level.strip() not in ("", "0") else contextlib.nullcontext()
    with loading:
        import tensorflow  # noqa: F401
    if not verbose:
        std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)


def set_log_level(level):
    """The library's log level; TensorFlow's own absl INFO lines only with ``--verbose``."""
    logging.set_verbosity("info" if FLAGS.verbose else "warning")
    std_logging.getLogger("tf_deepemd").setLevel(level.upper())


def start(argv, *, log_level="warning", cpu_devices=1, configurables=()):
    """The start of every tool's ``main``; returns `tf_deepemd.training.launch`.

    Refuses stray arguments, imports TensorFlow quietly (`import_tensorflow`),
    sets TensorFlow's thread pools (the thread flags, when the tool defines
    them) and ``cpu_devices`` logical CPUs before any TensorFlow op, imports
    the ``configurables`` modules (those defining gin configurables the
    tool's configs bind, beyond training's), sets the log level and parses
    ``--gin_file`` and ``--gin_bindings`` (a configuration error: one line,
    exit 2).
    """
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import_tensorflow(FLAGS.verbose)
    from tf_deepemd.training import launch

    threads = [FLAGS[name].value if name in FLAGS else 0 for name in ("intra_op_threads", "inter_op_threads")]
    launch.configure_runtime(*threads, cpu_devices=cpu_devices)
    from tf_deepemd.training.gin_config import parse_config

    for module in configurables:
        importlib.import_module(module)
    set_log_level(log_level)
    std_logging.captureWarnings(True)  # the data's warnings as one log line each
    launch.configure_or_exit(parse_config, FLAGS.gin_file, FLAGS.gin_bindings, [CONFIG_DIR])
    return launch


def run(main, on_interrupt="nothing was saved; run the same command again to start over."):
    """``app.run(main)``; Ctrl-C prints ``interrupted: <on_interrupt>`` and exits with code 130."""

    def interruptible(argv):
        try:
            return main(argv)
        except KeyboardInterrupt:
            if sys.stdout.isatty():
                print(flush=True)  # ends a progress bar's line
            print(f"interrupted: {on_interrupt}", file=sys.stderr, flush=True)
            sys.exit(INTERRUPTED_EXIT_CODE)

    app.run(interruptible)
