"""The compiled EMD kernel: a TensorFlow custom op for CPUs (C++ beside this file).

`TfDeepemd>TransportSolve` solves a batch of EMD problems exactly, one
problem per task on TensorFlow's intra-op thread pool, in float64 whatever
the input dtype:

* ``l2_strength == 0``: the linear program, by the transportation simplex
  (``network_simplex.cc``);
* ``l2_strength > 0``: the 'L2' QP, by semismooth Newton on its dual,
  finished on the active set (``quadratic.cc``).

`TfDeepemd>TransportSolveGrad`, registered as its gradient, is the exact
derivative at the returned solution (also C++): for the linear program the
derivative at the optimal basis (the flow does not move with the cost; with
the masses it moves along the basis tree), for the QP the derivative of the
unique solution on its active set. At a degenerate vertex (several optimal
bases, or a basic cell carrying no flow) this is the derivative of the
basis the simplex stopped at, one of the one-sided derivatives there.

`pip install` compiles the op against the installed TensorFlow (setup.py);
`kernel_available()` tells whether it loaded, `kernel_load_error()` why not.
"""

import glob
import os

import tensorflow as tf

_LIBRARY_PATTERN = os.path.join(os.path.dirname(__file__), "_emd_ops*.so")
_BUILD_HINT = (
    "build it with `pip install -e .` (or `python setup.py build_ext --inplace`) in the "
    "tf_deepemd checkout, with g++ and the same TensorFlow installed"
)


# A kernel library to load instead of the built one (e.g. a sanitizer build,
# benchmarks/kernel_sanitizers.sh).
LIBRARY_ENVIRONMENT_VARIABLE = "TF_DEEPEMD_KERNEL_LIBRARY"


def _load():
    """(the op module or None, the reason it could not be loaded or None)."""
    override = os.environ.get(LIBRARY_ENVIRONMENT_VARIABLE)
    paths = [override] if override else sorted(glob.glob(_LIBRARY_PATTERN))
    if not paths:
        return None, f"the compiled EMD kernel is not built ({_BUILD_HINT})"
    try:
        return tf.load_op_library(paths[0]), None
    except (tf.errors.OpError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        return None, (f"the compiled EMD kernel {os.path.basename(paths[0])} does not load "
                      f"with TensorFlow {tf.__version__} ({first_line}); rebuild it: "
                      f"{_BUILD_HINT}")


_ops, _load_error = _load()


def kernel_available():
    """Whether the compiled EMD kernel is built and loads in this process."""
    return _ops is not None


def kernel_load_error():
    """Why the kernel is not available (a sentence with the fix), or None."""
    return _load_error


def transport_solve(cost, source_weights, target_weights, l2_strength, *, validate=True):
    """The kernel's solve of a flat batch.

    Args:
      cost: [B, N, M] float32 or float64 tensor.
      source_weights: [B, N], target_weights: [B, M], same dtype.
      l2_strength: float64 scalar tensor, >= 0 (0: the linear program).
      validate: check the values (finite cost, finite non-negative masses,
        some mass on both sides of every problem) and raise
        InvalidArgumentError naming the argument; without it a problem
        without mass on a side gets the zero flow.

    Returns:
      (flow [B, N, M], source_potentials [B, N], target_potentials [B, M],
      converged [B] bool). The flow is differentiable with respect to the
      cost, the masses and `l2_strength`; the potentials are not (their
      gradient is ignored).
    """
    if _ops is None:
        raise RuntimeError(_load_error)
    flow, source_potentials, target_potentials, converged, _ = (
        _ops.tf_deepemd_transport_solve(cost, source_weights, target_weights, l2_strength,
                                        validate=validate)
    )
    return flow, source_potentials, target_potentials, converged


if _ops is not None:

    @tf.RegisterGradient("TfDeepemd>TransportSolve")
    def _transport_solve_grad(op, grad_flow, *unused_grads):
        cost, source_weights, target_weights, l2_strength = op.inputs
        flow, source_potentials, target_potentials, _, basis = op.outputs
        if grad_flow is None:
            grad_flow = tf.zeros_like(flow)
        return _ops.tf_deepemd_transport_solve_grad(
            cost, source_weights, target_weights, l2_strength, flow, source_potentials,
            target_potentials, basis, grad_flow,
        )
