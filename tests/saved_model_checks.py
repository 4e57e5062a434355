"""Checks that a SavedModel is servable by a stock TF Serving CPU build (test helpers)."""

import os

from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import kernels

PYTHON_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
# Runs signatures with the TF1 session loader TF Serving uses, in a fresh process.
SESSION_RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "export", "session_runner.py")


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
