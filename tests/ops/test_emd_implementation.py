"""Which implementation a solver call runs: the compiled kernel, the stock-op
solver, the choice of 'auto', `stock_ops_only`, and the fallback with one
warning when the kernel cannot be loaded."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tf_deepemd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def traced_op_types(**options):
    cost, source = tf.ones([2, 3, 3]), tf.ones([2, 3])
    function = tf.function(lambda c, a: tf_deepemd.emd(c, a, a, **options))
    graph = function.get_concrete_function(cost, source).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.skipif(not tf_deepemd.kernel_available(), reason="the compiled kernel is not built")
def test_auto_takes_the_kernel_on_cpu_and_stock_ops_only_takes_the_stock_solver():
    assert "TfDeepemd>TransportSolve" in traced_op_types()
    with tf_deepemd.stock_ops_only():
        stock = traced_op_types()
        assert "TfDeepemd>TransportSolve" not in traced_op_types(implementation="kernel")
    # The stock solver's loop (its Cholesky factorisations sit in the loop's function).
    assert "TfDeepemd>TransportSolve" not in stock
    assert stock & {"While", "StatelessWhile", "PartitionedCall", "StatefulPartitionedCall"}
    assert "TfDeepemd>TransportSolve" not in traced_op_types(implementation="tf_ops")


def test_an_unknown_implementation_is_named():
    with pytest.raises(ValueError, match="implementation must be one of"):
        tf_deepemd.emd(np.ones((2, 2)), np.ones(2), np.ones(2), implementation="cuda")
    with pytest.raises(ValueError, match="implementation must be one of"):
        tf_deepemd.EMDLayer(implementation="fast")


FALLBACK = r"""
import warnings
import numpy as np
import tf_deepemd
from tf_deepemd.ops.emd import kernel_load_error
assert not tf_deepemd.kernel_available()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(3):
        flow = tf_deepemd.emd(np.array([[0.0, 1.0], [1.0, 0.0]]), np.ones(2), np.ones(2)).numpy()
np.testing.assert_allclose(flow, np.eye(2), atol=1e-6)
messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
assert len(messages) == 1, messages
print("WARNING:" + messages[0])
try:
    tf_deepemd.emd(np.ones((2, 2)), np.ones(2), np.ones(2), implementation="kernel")
except ValueError as error:
    print("ERROR:" + str(error))
"""


def test_without_the_kernel_auto_falls_back_with_one_warning_that_says_how_to_build(tmp_path):
    broken = tmp_path / "_emd_ops_broken.so"
    broken.write_bytes(b"not a shared library")
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3",
               TF_DEEPEMD_KERNEL_LIBRARY=str(broken))
    completed = subprocess.run([sys.executable, "-c", FALLBACK], env=env, cwd=REPO,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = dict(line.split(":", 1) for line in completed.stdout.splitlines()
                 if line.startswith(("WARNING:", "ERROR:")))
    assert "stock-op EMD solver" in lines["WARNING"] and "pip install -e ." in lines["WARNING"]
    assert "_emd_ops_broken.so" in lines["WARNING"]
    assert lines["ERROR"].startswith("implementation='kernel', but the compiled EMD kernel")
