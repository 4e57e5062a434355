"""The serving page (docs/export_and_serving.md): its REST body, as a gRPC PredictRequest, is answered.

A test-only servicer (`grpc_servicer`) executes the signature the way TF
Serving does (session loader) on 127.0.0.1; the request is a real
``tensorflow.serving.PredictRequest`` built with `tf.make_tensor_proto`.
"""

import json
import pathlib
import re

import grpc
import numpy as np
import pytest
import tensorflow as tf

from tests.export import grpc_servicer
from tests.export.conftest import MODEL_NAME, keras_outputs
from tests.export.serving_protos import PredictionServiceStub, PredictRequest
from tf_deepemd.export.signatures import EPISODE, INPUTS

SERVING_PAGE = pathlib.Path(__file__).resolve().parents[2] / "docs/export_and_serving.md"
DOCKER_COMMAND = (
    "docker run -p 8501:8501 --mount type=bind,source=$PWD/exports/deepemd,"
    "target=/models/deepemd -e MODEL_NAME=deepemd -t tensorflow/serving"
)


def serving_section():
    return SERVING_PAGE.read_text()


def readme_request():
    """The serving page's REST body, checked, as ``(signature name, {input: array})``."""
    (body,) = re.findall(r"```json\n(.*?)```", serving_section(), re.S)
    body = json.loads(body)
    assert sorted(body) == ["inputs", "signature_name"]  # TF Serving's columnar format
    inputs = body["inputs"]
    assert sorted(inputs) == sorted(INPUTS[EPISODE])
    # The signature's dtypes; an out-of-range pixel would raise OverflowError here.
    arrays = {name: np.asarray(value, INPUTS[EPISODE][name][0].as_numpy_dtype)
              for name, value in inputs.items()}
    support, labels, query = (arrays[k] for k in ("support_images", "support_labels", "query_images"))
    assert support.ndim == 4 and support.shape[-1] == 3
    assert query.ndim == 4 and query.shape[-1] == 3
    assert labels.shape == (support.shape[0],)
    assert sorted(set(labels.tolist())) == list(range(labels.max() + 1))
    return body["signature_name"], arrays


def predict_request(signature_name, arrays, model_name=MODEL_NAME):
    request = PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    for name, value in arrays.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def test_the_serving_page_documents_the_container_and_the_curl_request():
    section = serving_section()
    assert DOCKER_COMMAND in section
    assert "curl -s -X POST -d @request.json http://localhost:8501/v1/models/deepemd:predict" in section
    assert "python tools/export.py --gin_file=" in section and "--export_dir=exports/deepemd" in section
    signature_name, arrays = readme_request()
    assert signature_name == "serving_default"
    assert arrays["support_images"].shape == (2, 2, 2, 3)


@pytest.fixture(scope="module")
def stub(export):
    with grpc_servicer.serving(export.path, MODEL_NAME, export.version, lifetime=120) as address:
        with grpc.insecure_channel(address) as channel:
            yield PredictionServiceStub(channel)


def test_readme_request_is_answered_over_grpc(stub, tiny_model):
    signature_name, arrays = readme_request()
    response = stub.Predict(predict_request(signature_name, arrays), timeout=60)

    assert response.model_spec.version.value == 1
    outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
    assert sorted(outputs) == ["classes", "logits", "probabilities"]
    way = arrays["support_labels"].max() + 1
    num_queries = arrays["query_images"].shape[0]
    assert outputs["logits"].shape == (num_queries, way)
    np.testing.assert_allclose(outputs["probabilities"].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(outputs["classes"], outputs["logits"].argmax(-1))
    np.testing.assert_allclose(outputs["logits"], keras_outputs(tiny_model, arrays), rtol=1e-4, atol=1e-4)


def test_bad_request_over_grpc_is_invalid_argument_with_the_message(stub):
    _, arrays = readme_request()
    arrays["support_labels"] = np.array([0, 2], np.int32)  # class 1 has no support image
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(predict_request("serving_default", arrays), timeout=60)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "`support_labels` must be < the number of support images" in raised.value.details()


def test_other_signatures_over_grpc(stub):
    images = np.zeros((2, 5, 7, 3), np.uint8)
    response = stub.Predict(predict_request("embed", {"images": images}), timeout=60)
    assert tf.make_ndarray(response.outputs["nodes"]).shape == (2, 16, 8)
    cost = np.array([[[0.0, 1.0], [1.0, 0.0]]], np.float32)
    weights = np.array([[1.0, 1.0]], np.float32)
    response = stub.Predict(
        predict_request("emd", {"cost": cost, "source_weights": weights, "target_weights": weights}),
        timeout=60,
    )
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["flow"]), np.eye(2)[None], atol=1e-5)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["distance"]), [0.0], atol=1e-5)
