"""A test-only stand-in for TF Serving's gRPC PredictionService (no model server binary here).

It does what ``tensorflow_model_server`` does for a Predict call: load the
SavedModel with the TF1 session loader (``SavedModelBundle``), look up the
request's signature, feed ``request.inputs`` (TensorProtos) to the
signature's input tensors, fetch its outputs and return them as
TensorProtos; a failing run becomes the gRPC status of its TF error code
(InvalidArgumentError -> INVALID_ARGUMENT) with the error's message.
The server listens on 127.0.0.1 only and stops itself after ``lifetime``
seconds at the latest.
"""

import contextlib
import threading
from concurrent import futures

import grpc
import tensorflow as tf

from tests.export.serving_protos import PredictResponse, add_prediction_service

_STATUS_BY_CODE = {status.value[0]: status for status in grpc.StatusCode}


class SessionPredictionService:
    def __init__(self, export_dir, model_name, version):
        self.model_name = model_name
        self.version = int(version)
        self.session = tf.compat.v1.Session(graph=tf.Graph())
        meta_graph = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], export_dir)
        self.signatures = dict(meta_graph.signature_def)
        self.lock = threading.Lock()

    def Predict(self, request, context):  # noqa: N802 (gRPC method name)
        if request.model_spec.name != self.model_name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found: {request.model_spec.name}")
        signature_name = request.model_spec.signature_name or "serving_default"
        if signature_name not in self.signatures:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f'Serving signature name: "{signature_name}" not found in signature def')
        signature = self.signatures[signature_name]
        if set(request.inputs) != set(signature.inputs):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"input names {sorted(request.inputs)} != {sorted(signature.inputs)}")
        feed = {
            signature.inputs[name].name: tf.make_ndarray(proto) for name, proto in request.inputs.items()
        }
        names = list(request.output_filter) or list(signature.outputs)
        fetch = {name: signature.outputs[name].name for name in names}
        try:
            with self.lock:
                outputs = self.session.run(fetch, feed)
        except tf.errors.OpError as error:
            context.abort(_STATUS_BY_CODE[error.error_code], error.message)
        response = PredictResponse()
        response.model_spec.name = self.model_name
        response.model_spec.version.value = self.version
        response.model_spec.signature_name = signature_name
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    def close(self):
        self.session.close()


@contextlib.contextmanager
def serving(export_dir, model_name, version, lifetime=120.0):
    """Yields ``'127.0.0.1:<port>'`` of a running server; stops it on exit or after ``lifetime`` s."""
    service = SessionPredictionService(export_dir, model_name, version)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    add_prediction_service(service.Predict, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    deadline = threading.Timer(lifetime, server.stop, args=(0,))
    deadline.daemon = True
    deadline.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        deadline.cancel()
        server.stop(0).wait(10)
        service.close()
