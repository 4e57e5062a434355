"""TF Serving's request messages and PredictionService, without `tensorflow-serving-api`.

Every release of the `tensorflow-serving-api` package requires the full
`tensorflow` wheel, which pip would install over this project's
`tensorflow-cpu` (the two overwrite each other's files). The package is only
generated code for TF Serving's .proto files, so the tests take those files'
descriptors instead: `tensorflow_serving_apis.pbtxt` (a FileDescriptorSet
copied from tensorflow-serving-api 2.21.0) is added to protobuf's default
pool next to the TensorFlow protos it imports, which the installed TensorFlow
registers. The message classes are built from the descriptors, so a
``PredictRequest``'s inputs are the ``tensorflow.TensorProto`` that
`tf.make_tensor_proto` returns, and the gRPC method path and message types
come from the ``PredictionService`` descriptor.

To regenerate the .pbtxt for another release X::

    pip download --no-deps tensorflow-serving-api==X && unzip tensorflow_serving_api-X-*.whl
    python -c "import tensorflow; from google.protobuf import descriptor_pb2, text_format
    from tensorflow_serving.apis import prediction_log_pb2, prediction_service_pb2 as s
    files, out = [], descriptor_pb2.FileDescriptorSet()
    def walk(f):
        if f not in files: [walk(d) for d in f.dependencies]; files.append(f)
    walk(prediction_log_pb2.DESCRIPTOR); walk(s.DESCRIPTOR)
    [f.CopyToProto(out.file.add()) for f in files if f.name.startswith('tensorflow_serving/')]
    print(text_format.MessageToString(out), end='')" > tests/export/tensorflow_serving_apis.pbtxt

and put the provenance comment back on top.
"""

import importlib
import pathlib

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

DESCRIPTORS = pathlib.Path(__file__).with_name("tensorflow_serving_apis.pbtxt")


def _register_files():
    """Adds the TF Serving files to the default pool (once; kept if already there)."""
    pool = descriptor_pool.Default()
    files = text_format.Parse(DESCRIPTORS.read_text(), descriptor_pb2.FileDescriptorSet()).file
    for file in files:  # in dependency order
        for dependency in file.dependency:
            if not dependency.startswith("tensorflow_serving/"):
                # e.g. tensorflow/core/framework/tensor.proto -> tensorflow.core.framework.tensor_pb2
                importlib.import_module(dependency[: -len(".proto")].replace("/", ".") + "_pb2")
        try:
            pool.FindFileByName(file.name)
        except KeyError:
            pool.AddSerializedFile(file.SerializeToString())
    return pool


_POOL = _register_files()
PREDICTION_SERVICE = _POOL.FindServiceByName("tensorflow.serving.PredictionService")
_PREDICT = PREDICTION_SERVICE.methods_by_name["Predict"]
PREDICT_METHOD = f"/{PREDICTION_SERVICE.full_name}/{_PREDICT.name}"

PredictRequest = message_factory.GetMessageClass(_PREDICT.input_type)
PredictResponse = message_factory.GetMessageClass(_PREDICT.output_type)
PredictionLog = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("tensorflow.serving.PredictionLog"))


def add_prediction_service(predict, server):
    """Serves ``predict(request, context) -> PredictResponse`` as PredictionService.Predict."""
    handler = grpc.unary_unary_rpc_method_handler(
        predict,
        request_deserializer=PredictRequest.FromString,
        response_serializer=PredictResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(PREDICTION_SERVICE.full_name, {_PREDICT.name: handler}),)
    )


class PredictionServiceStub:
    """Client of PredictionService.Predict, like the generated stub: ``stub.Predict(request)``."""

    def __init__(self, channel):
        self.Predict = channel.unary_unary(  # noqa: N815 (gRPC method name)
            PREDICT_METHOD,
            request_serializer=PredictRequest.SerializeToString,
            response_deserializer=PredictResponse.FromString,
        )
