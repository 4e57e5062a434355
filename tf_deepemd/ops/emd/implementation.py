"""Which solver runs a call: the compiled kernel or the stock-op interior point.

`implementation='auto'` (the default of `solve_emd`, `emd` and the layers)
takes the compiled kernel when it is built and TensorFlow sees no GPU, and
the interior-point solver built from stock TensorFlow ops otherwise (every
op of it has a GPU kernel). Inside `stock_ops_only()` every call uses the
stock ops, whatever it asked for: SavedModels for TensorFlow Serving are
traced there, since stock Serving cannot load a custom op.
"""

import contextlib
import functools
import threading
import warnings

import tensorflow as tf

from tf_deepemd.ops.emd import kernel

IMPLEMENTATIONS = ("auto", "kernel", "tf_ops")

_scope = threading.local()
_warned = []


@contextlib.contextmanager
def stock_ops_only():
    """Within this context every solver call is built from stock TensorFlow ops."""
    previous = getattr(_scope, "stock_ops_only", False)
    _scope.stock_ops_only = True
    try:
        yield
    finally:
        _scope.stock_ops_only = previous


def check_implementation(implementation):
    """Raises ValueError unless `implementation` is one of IMPLEMENTATIONS."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"implementation must be one of {list(IMPLEMENTATIONS)}, got {implementation!r}."
        )
    if implementation == "kernel" and not kernel.kernel_available():
        raise ValueError(f"implementation='kernel', but {kernel.kernel_load_error()}.")
    return implementation


def resolve_implementation(implementation):
    """'kernel' or 'tf_ops' for a call asking for `implementation`."""
    check_implementation(implementation)
    if getattr(_scope, "stock_ops_only", False) or implementation == "tf_ops":
        return "tf_ops"
    if implementation == "kernel":
        return "kernel"
    if _gpu_visible():
        return "tf_ops"
    if kernel.kernel_available():
        return "kernel"
    if not _warned:
        _warned.append(True)
        warnings.warn(
            f"tf_deepemd: using the stock-op EMD solver, several times slower on CPU: "
            f"{kernel.kernel_load_error()}.", RuntimeWarning, stacklevel=3,
        )
    return "tf_ops"


@functools.lru_cache(maxsize=1)
def _gpu_visible():
    """Whether TensorFlow sees a GPU (fixed once its runtime has started)."""
    return bool(tf.config.list_logical_devices("GPU"))
