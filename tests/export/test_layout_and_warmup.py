"""TF Serving's folder layout, version numbering and the warmup file."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.export.conftest import IMAGE_SIZE, MODEL_NAME, NORMALIZATION
from tests.export.serving_protos import PredictionLog, PredictRequest
from tf_deepemd.export import exporter, serving_layout, warmup


def test_export_is_a_tf_serving_version_folder(export):
    base = os.path.dirname(export.path)
    assert export.version == 1 and os.path.basename(export.path) == "1"
    serving_layout.check_version_folder(export.path)
    assert os.path.isfile(os.path.join(export.path, "variables", "variables.index"))
    # Nothing else in the base folder: no staging folder left behind.
    assert os.listdir(base) == ["1"]
    assert export.warmup_file == os.path.join(export.path, "assets.extra", "tf_serving_warmup_requests")
    with open(os.path.join(export.path, exporter.EXPORT_INFO_FILE)) as stream:
        info = json.load(stream)
    assert info["image_size"] == IMAGE_SIZE
    assert info["normalization"] == {"mean": list(NORMALIZATION[0]), "std": list(NORMALIZATION[1])}
    assert sorted(info["signatures"]) == ["embed", "emd", "serving_default"]


def test_versions_count_up_and_are_never_overwritten(tmp_path):
    base = str(tmp_path / "model")
    assert serving_layout.next_version(base) == 1
    for name in ("1", "7", "not_a_version"):
        os.makedirs(os.path.join(base, name))
    with open(os.path.join(base, "12"), "w"):  # a file, not a version folder
        pass
    assert serving_layout.existing_versions(base) == [1, 7]
    assert serving_layout.resolve_version(base, None) == 8
    assert serving_layout.resolve_version(base, 3) == 3
    with pytest.raises(ValueError, match="Version 7 already exists.*Export version 8"):
        serving_layout.resolve_version(base, 7)
    with pytest.raises(ValueError, match="must be >= 1"):
        serving_layout.resolve_version(base, 0)


def test_a_failed_write_leaves_no_version_behind(tmp_path):
    base = str(tmp_path / "model")

    def broken_write(folder):
        with open(os.path.join(folder, "saved_model.pb"), "wb") as stream:
            stream.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        serving_layout.write_version(base, 1, broken_write)
    assert os.listdir(base) == []
    with pytest.raises(RuntimeError, match="no saved_model.pb"):
        serving_layout.write_version(base, 1, lambda folder: None)
    assert os.listdir(base) == []


def read_warmup_records(path):
    return [
        PredictionLog.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(path)
    ]


def test_warmup_file_parses_as_prediction_logs_and_runs(export, loaded_signatures):
    logs = read_warmup_records(export.warmup_file)
    assert len(logs) == 2  # 5-way 1-shot and 5-way 5-shot
    for log, shot in zip(logs, (1, 5)):
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.name == MODEL_NAME
        assert request.model_spec.signature_name == "serving_default"
        inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        assert inputs["support_images"].shape == (5 * shot, IMAGE_SIZE, IMAGE_SIZE, 3)
        assert inputs["support_images"].dtype == np.uint8
        np.testing.assert_array_equal(np.bincount(inputs["support_labels"]), [shot] * 5)
        assert inputs["support_labels"].dtype == np.int32
        # TF Serving replays it against the signature: it must be a valid request.
        outputs = loaded_signatures["serving_default"](
            **{name: tf.constant(value) for name, value in inputs.items()}
        )
        assert outputs["logits"].shape == (inputs["query_images"].shape[0], 5)


def test_hand_encoded_request_equals_the_official_proto():
    inputs = {
        "support_images": np.arange(2 * 8 * 8 * 3).astype(np.uint8).reshape(2, 8, 8, 3),
        "support_labels": np.array([1, 0], np.int32),
        "query_images": np.zeros((1, 5, 5, 3), np.uint8),
    }
    official = PredictRequest()
    official.model_spec.name = "a_model"
    official.model_spec.signature_name = "a_signature"
    for name, value in inputs.items():
        official.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    encoded = warmup.predict_request_bytes(inputs, "a_model", "a_signature")
    assert PredictRequest.FromString(encoded) == official
    # Map entries of more than 127 bytes need multi-byte lengths.
    assert len(official.inputs["support_images"].SerializeToString()) > 127
