"""Every op of the export runs on a stock TF Serving CPU build: registered, with a kernel, no Python."""

import json
import subprocess
import sys

from tensorflow.python.framework import op_def_registry

from tests.saved_model_checks import PYTHON_OPS, graph_op_types, runs_on_cpu


def test_every_op_is_registered_with_a_cpu_kernel(export):
    ops = graph_op_types(export.path)
    assert not ops & PYTHON_OPS
    assert [op for op in sorted(ops) if op_def_registry.get(op) is None] == []
    assert [op for op in sorted(ops) if not runs_on_cpu(op)] == []
    # The checks see the real graph: the solver, the SFC/solver loops, the
    # in-graph image resizing and the request assertions are all there.
    for expected in ("Cholesky", "StatelessWhile", "ResizeBilinear", "Assert"):
        assert expected in ops, expected


def test_the_check_catches_an_op_without_kernel_or_registration():
    assert not runs_on_cpu("TPUReplicatedInput")  # registered, TPU kernels only
    assert runs_on_cpu("Cholesky")
    assert op_def_registry.get("NoSuchOpAnywhere") is None


def test_every_op_is_registered_in_a_process_without_the_kernel(export):
    """Stock TensorFlow (this process has loaded the compiled EMD kernel,
    a fresh one that imports only TensorFlow has not) knows every op."""
    ops = sorted(graph_op_types(export.path))
    code = ("import json, sys; import tensorflow; "
            "from tensorflow.python.framework import op_def_registry as r; "
            "print(json.dumps([op for op in json.load(sys.stdin) if r.get(op) is None]))")
    result = subprocess.run([sys.executable, "-c", code], input=json.dumps(ops),
                            capture_output=True, text=True, check=True, timeout=300)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    assert not any(op.startswith("TfDeepemd") for op in ops)
