"""Every op of the export runs on a stock TF Serving CPU build: registered, with a kernel, no Python."""

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
