"""Process setup shared by the command-line tools.

TensorFlow's thread pools and logical devices can only be configured
before its first operation, so the tools call `configure_runtime` first
thing; importing `tf_deepemd` runs no operation.
"""

from __future__ import annotations

import logging
import os
import sys

import tensorflow as tf

from tf_deepemd.training.strategy import split_logical_cpus

# What a configuration mistake raises; the tools print it as one line.
CONFIGURATION_ERRORS = (ValueError, OSError)


def configure_runtime(intra_op_threads=0, inter_op_threads=0, cpu_devices=1):
    """Thread pools (0 = TensorFlow's choice) and logical CPU devices (>1 for 'mirrored' on CPU)."""
    if intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(int(intra_op_threads))
    if inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(int(inter_op_threads))
    split_logical_cpus(cpu_devices)


def one_line(error):
    """``'ErrorType: message'`` on a single line."""
    message = " ".join(str(error).split())
    if isinstance(error, KeyError) and message.startswith("'") and message.endswith("'"):
        message = message[1:-1]
    return f"{type(error).__name__}: {message}"


def run_or_exit(function, *args, **kwargs):
    """Calls ``function``; a configuration error is printed as one line, exit code 2."""
    try:
        return function(*args, **kwargs)
    except CONFIGURATION_ERRORS as error:
        if os.environ.get("TF_DEEPEMD_TRACEBACK"):
            raise
        logging.getLogger(__name__).debug("configuration error", exc_info=True)
        print(f"error: {one_line(error)}", file=sys.stderr, flush=True)
        sys.exit(2)


def keras_verbosity(flag_value):
    """``-1`` = progress bars on a terminal, one line per epoch otherwise."""
    if flag_value >= 0:
        return flag_value
    return 1 if sys.stdout.isatty() else 2
