"""TF Serving's warmup file: requests it runs once when it loads a version.

The first request to a freshly loaded model pays for graph initialisation
(Grappler, kernel instantiation of the solver and SFC loops), seconds where
later requests take milliseconds (``benchmarks/export_serving_latency.py``
measures both). TF Serving replays the records of
``<version>/assets.extra/tf_serving_warmup_requests`` before it marks the
version available, so clients never see that latency.

The file is a TFRecord of ``tensorflow.serving.PredictionLog`` protos. The
few fields needed are encoded here directly in protobuf's wire format
(field numbers from tensorflow_serving/apis/{prediction_log,predict,model}
.proto) so that exporting does not depend on ``tensorflow-serving-api``
(whose dependencies would pull the full ``tensorflow`` wheel over
``tensorflow-cpu``); the tests parse the file with the real protos.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from tf_deepemd.export.serving_layout import WARMUP_FILE

# Field numbers of the TF Serving messages written here.
_PREDICTION_LOG_PREDICT_LOG = 6  # PredictionLog.predict_log
_PREDICT_LOG_REQUEST = 1  # PredictLog.request
_REQUEST_MODEL_SPEC = 1  # PredictRequest.model_spec
_REQUEST_INPUTS = 2  # PredictRequest.inputs (map<string, TensorProto>)
_MODEL_SPEC_NAME = 1  # ModelSpec.name
_MODEL_SPEC_SIGNATURE = 3  # ModelSpec.signature_name
_MAP_KEY, _MAP_VALUE = 1, 2  # fields of a map entry
_LENGTH_DELIMITED = 2  # wire type of strings, bytes and messages


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited field (string, bytes or embedded message)."""
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def predict_request_bytes(
    inputs: Mapping[str, np.ndarray], model_name: str, signature_name: str
) -> bytes:
    """A serialized ``tensorflow.serving.PredictRequest``.

    Args:
      inputs: input name -> array (its dtype is the tensor's dtype).
      model_name: ``model_spec.name`` (TF Serving's ``MODEL_NAME``).
      signature_name: ``model_spec.signature_name``.
    """
    model_spec = _field(_MODEL_SPEC_NAME, model_name.encode()) + _field(
        _MODEL_SPEC_SIGNATURE, signature_name.encode()
    )
    request = _field(_REQUEST_MODEL_SPEC, model_spec)
    for name in sorted(inputs):  # deterministic bytes
        tensor = tf.make_tensor_proto(np.asarray(inputs[name])).SerializeToString()
        request += _field(_REQUEST_INPUTS, _field(_MAP_KEY, name.encode()) + _field(_MAP_VALUE, tensor))
    return request


def prediction_log_bytes(
    inputs: Mapping[str, np.ndarray], model_name: str, signature_name: str
) -> bytes:
    """A serialized ``PredictionLog`` holding one ``PredictLog`` with that request."""
    request = predict_request_bytes(inputs, model_name, signature_name)
    return _field(_PREDICTION_LOG_PREDICT_LOG, _field(_PREDICT_LOG_REQUEST, request))


def episode_requests(
    image_size: int, way: int = 5, shots: Sequence[int] = (1, 5), queries: int = 15, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """``serving_default`` inputs of one ``way``-way episode per shot.

    Random pixels at the model's input size: warmup only has to run the
    same graph paths as real traffic (the 1-shot path, and for shot > 1 the
    SFC branch), not produce meaningful predictions.

    Returns:
      Dicts of uint8 ``support_images [way * shot, s, s, 3]``, int32
      ``support_labels [way * shot]``, uint8 ``query_images [queries, s, s, 3]``.
    """
    rng = np.random.default_rng(seed)
    requests = []
    for shot in shots:
        support = way * int(shot)
        requests.append(
            {
                "support_images": rng.integers(0, 256, (support, image_size, image_size, 3), np.uint8),
                "support_labels": np.repeat(np.arange(way, dtype=np.int32), int(shot)),
                "query_images": rng.integers(0, 256, (queries, image_size, image_size, 3), np.uint8),
            }
        )
    return requests


def write_warmup_file(
    version_dir: str,
    requests: Iterable[Mapping[str, np.ndarray]],
    model_name: str,
    signature_name: str = "serving_default",
) -> str:
    """Writes ``<version_dir>/assets.extra/tf_serving_warmup_requests``; returns its path."""
    path = os.path.join(version_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for inputs in requests:
            writer.write(prediction_log_bytes(inputs, model_name, signature_name))
    return path
