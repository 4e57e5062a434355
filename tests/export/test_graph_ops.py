"""Every op of the export runs on a stock TF Serving CPU build: registered, with a kernel, no Python."""

import os

from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import kernels, op_def_registry

PYTHON_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


def graph_op_types(saved_model_dir):
    """All op types in a SavedModel's graphs, function library included."""
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as stream:
        proto.ParseFromString(stream.read())
    ops = set()
    for meta_graph in proto.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    return ops


def runs_on_cpu(op):
    # DEFAULT kernels (Assert, NoOp, IdentityN) are device-independent.
    devices = {kernel.device_type for kernel in kernels.get_registered_kernels_for_op(op).kernel}
    return bool(devices & {"CPU", "DEFAULT"})


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
