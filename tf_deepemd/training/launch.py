"""Process setup and error reporting shared by the command-line tools.

TensorFlow's thread pools and logical devices can only be configured
before its first operation, so the tools call `configure_runtime` first
thing; importing `tf_deepemd` runs no operation.

A configuration error (a setting that cannot work, found before the work
starts) is printed as one line with exit code 2. An error TensorFlow raises
while running an op (e.g. a failed check inside a compiled function, whose
message starts with ``Graph execution error:`` and the graph's stack) is
printed as its one-line cause, exit code 1. Any other error keeps its
traceback. The library marks its checking phases with
`configuration_checks`; the tools call their steps through `run_or_exit`
(`configure_or_exit` for steps that only read configuration).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sys

import tensorflow as tf

from tf_deepemd.training.strategy import split_logical_cpus


class ConfigurationError(ValueError):
    """A setting that cannot work, found before the work started.

    ``error_type``: the name of the error it stands for (printed by `one_line`).
    """

    def __init__(self, message, error_type="ValueError"):
        super().__init__(message)
        self.error_type = error_type


@contextlib.contextmanager
def configuration_checks():
    """Re-raises a ValueError or OSError from inside as `ConfigurationError` (same message, chained)."""
    try:
        yield
    except ConfigurationError:
        raise
    except (ValueError, OSError) as error:
        raise ConfigurationError(str(error), type(error).__name__) from error


def configure_runtime(intra_op_threads=0, inter_op_threads=0, cpu_devices=1):
    """Thread pools (0 = TensorFlow's choice) and logical CPU devices (>1 for 'mirrored' on CPU)."""
    if intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(int(intra_op_threads))
    if inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(int(inter_op_threads))
    split_logical_cpus(cpu_devices)


def one_line(error):
    """``'ErrorType: message'`` on a single line (a configuration error under its cause's type)."""
    message = " ".join(str(error).split())
    # gin appends where it called the configurable, a function's repr included.
    message = re.sub(r"\s*In call to configurable '[^']*' \(<[^>]*>\)$", "", message)
    if isinstance(error, KeyError) and message.startswith("'") and message.endswith("'"):
        message = message[1:-1]
    # getattr, not isinstance: gin re-raises errors as proxies of their type.
    return f"{getattr(error, 'error_type', type(error).__name__)}: {message}"


def op_error_cause(error):
    """``'ErrorType: what went wrong'`` of a `tf.errors.OpError`, without the graph's stack.

    A failed op inside a compiled function reports ``Graph execution
    error:``, then for each node ``Detected at node <name> defined at (most
    recent call last):`` and its Python stack, then the message between the
    function's and the node's names (``{{function_node ...}} cost must be
    finite ... [[{{node ...}}]] [Op:...]``); the cause is that message.
    """
    message = getattr(error, "message", None) or str(error)
    stack_lines = ("Graph execution error:", "Detected at node ", "<stack traces unavailable>")
    lines = [line for line in message.splitlines()
             if line.strip() and not line.startswith(stack_lines) and not line.startswith("  ")]
    cause = re.sub(r"^(\{\{function_node [^}]*\}\}\s*)+", "", lines[0] if lines else "")
    cause = re.sub(r"\s*\[Op:[^\]]*\](\s*name:.*)?$", "", cause).strip()
    return f"{type(error).__name__}: {cause}"


def exit_with_one_line(error):
    """Prints ``error: <one line>`` to stderr and exits with code 2."""
    logging.getLogger(__name__).debug("configuration error", exc_info=error)
    print(f"error: {one_line(error)}", file=sys.stderr, flush=True)
    sys.exit(2)


def run_or_exit(function, *args, **kwargs):
    """Calls ``function``; a `ConfigurationError` is printed as one line (exit 2).

    A `tf.errors.OpError` is printed as its cause (`op_error_cause`, exit 1);
    any other error propagates with its traceback. ``TF_DEEPEMD_TRACEBACK=1``
    shows the traceback of both.
    """
    try:
        return function(*args, **kwargs)
    except ConfigurationError as error:
        if os.environ.get("TF_DEEPEMD_TRACEBACK"):
            raise
        exit_with_one_line(error)
    except tf.errors.OpError as error:
        if os.environ.get("TF_DEEPEMD_TRACEBACK"):
            raise
        print(f"error: {op_error_cause(error)} (TF_DEEPEMD_TRACEBACK=1 shows where)", file=sys.stderr, flush=True)
        sys.exit(1)


def configure_or_exit(function, *args, **kwargs):
    """`run_or_exit` for a step that only reads configuration (gin files, flags).

    Every ValueError or OSError it raises is a configuration error.
    """

    @functools.wraps(function)
    def checked(*args, **kwargs):
        with configuration_checks():
            return function(*args, **kwargs)

    return run_or_exit(checked, *args, **kwargs)


def keras_verbosity(flag_value):
    """``-1`` = progress bars on a terminal, one line per epoch otherwise."""
    if flag_value >= 0:
        return flag_value
    return 1 if sys.stdout.isatty() else 2
