"""Exporting a gin-configured run: weights restored from the model dir, CLI behaviour."""

import json
import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from tests.export.serving_protos import PredictionLog
from tf_deepemd.data import load_split
from tf_deepemd.export import exporter
from tf_deepemd.export.from_run import export_run
from tf_deepemd.export.preprocessing import preprocess_images
from tf_deepemd.run_folder import StageFiles, save_weights_atomically
from tf_deepemd.training import model_config
from tf_deepemd.training.gin_config import parse_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPORT_TOOL = os.path.join(REPO, "tools", "export.py")


def tiny_bindings(data_dir):
    """A 16 px demo run with an 8-channel Conv-4 (what the tool needs; no training settings)."""
    return (
        "run_experiment.dataset = 'demo'",
        "run_experiment.dataset_options = {'images_per_class': 20}",
        f"run_experiment.data_dir = {str(data_dir)!r}",
        "run_experiment.image_size = 16",
        "make_model.backbone = 'conv4'",
        "make_model.backbone_options = {'widths': (8, 8, 8, 8), 'num_pools': 2}",
        "SFC.steps = 5",
    )


@pytest.fixture
def tiny_gin(tmp_path):
    gin.clear_config()
    parse_config(gin_bindings=tiny_bindings(tmp_path / "demo"))
    yield
    gin.clear_config()


def fake_finished_run(model_dir, seed):
    """A model dir whose meta_train stage finished with a best-weights file, as train.py leaves it."""
    tf.keras.utils.set_random_seed(seed)
    model = model_config.configured_model()
    model.build([(None, 16, 16, 3), (None,), (None, 16, 16, 3)])
    files = StageFiles(model_dir, "meta_train")
    save_weights_atomically(model, files.best_weights)
    files.mark_done({"epochs": 1})
    return model, files.best_weights


def test_export_restores_the_runs_best_weights_and_dataset_normalization(tiny_gin, tmp_path):
    model_dir = str(tmp_path / "run")
    trained, weights_file = fake_finished_run(model_dir, seed=11)

    result, weights = export_run(str(tmp_path / "exports"), model_dir)

    assert weights == weights_file and result.version == 1
    with open(os.path.join(result.path, exporter.EXPORT_INFO_FILE)) as stream:
        info = json.load(stream)
    assert info["trained"] is True and info["weights"] == os.path.abspath(weights_file)
    # The demo dataset's normalisation is computed from its data: read, not guessed.
    mean, std = load_split("demo", "test", str(tmp_path / "demo"), images_per_class=20).normalization
    np.testing.assert_allclose(info["normalization"]["mean"], mean)
    np.testing.assert_allclose(info["normalization"]["std"], std)

    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), np.uint8)
    served = tf.saved_model.load(result.path).signatures["embed"](images=tf.constant(images))
    expected = trained.encoder(preprocess_images(images, 16, (mean, std)), training=False)
    np.testing.assert_allclose(served["nodes"], expected, rtol=1e-4, atol=1e-5)

    # A taken version is refused before any work; the export is left alone.
    with pytest.raises(ValueError, match="Version 1 already exists"):
        export_run(str(tmp_path / "exports"), model_dir, version=1)
    assert os.listdir(tmp_path / "exports") == ["1"]


def run_tool(*flags):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, EXPORT_TOOL, *flags], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=300,
    )


def test_tool_exports_an_untrained_demo_with_a_warning(tmp_path):
    export_dir = tmp_path / "exports" / "deepemd"
    os.makedirs(export_dir / "3")  # an older version: the next one is 4
    (export_dir / "3" / "saved_model.pb").write_bytes(b"")
    flags = [f"--gin_bindings={binding}" for binding in tiny_bindings(tmp_path / "demo")]
    flags += [f"--model_dir={tmp_path / 'no_run'}", f"--export_dir={export_dir}"]

    completed = run_tool(*flags, "--warmup")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "UNTRAINED model" in completed.stderr
    assert f"exported version 4 to {export_dir / '4'}" in completed.stdout
    assert os.path.isfile(export_dir / "4" / "assets.extra" / "tf_serving_warmup_requests")
    assert sorted(os.listdir(export_dir)) == ["3", "4"]


def test_tool_version_weights_normalization_and_model_name_flags(tiny_gin, tmp_path):
    _, run_best = fake_finished_run(str(tmp_path / "run"), seed=11)
    chosen, chosen_weights = fake_finished_run(str(tmp_path / "other"), seed=12)
    export_dir = tmp_path / "exports"
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)
    flags = [f"--gin_bindings={binding}" for binding in tiny_bindings(tmp_path / "demo")]
    flags += [f"--model_dir={tmp_path / 'run'}", f"--export_dir={export_dir}", "--version=7",
              f"--weights={chosen_weights}", "--normalization=" + ",".join(map(str, mean + std)),
              "--model_name=fsl", "--warmup"]

    completed = run_tool(*flags)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f"exported version 7 to {export_dir / '7'} from {chosen_weights}" in completed.stdout
    assert os.listdir(export_dir) == ["7"]
    with open(export_dir / "7" / exporter.EXPORT_INFO_FILE) as stream:
        info = json.load(stream)
    assert info["weights"] == os.path.abspath(chosen_weights) != os.path.abspath(run_best)
    assert info["normalization"] == {"mean": list(mean), "std": list(std)}
    # The served encoder is the chosen weights' with the given normalisation.
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), np.uint8)
    served = tf.saved_model.load(str(export_dir / "7")).signatures["embed"](images=tf.constant(images))
    expected = chosen.encoder(preprocess_images(images, 16, (mean, std)), training=False)
    np.testing.assert_allclose(served["nodes"], expected, rtol=1e-4, atol=1e-5)
    # Warmup requests carry the model name clients use.
    records = [PredictionLog.FromString(record.numpy())
               for record in tf.data.TFRecordDataset(str(export_dir / "7" / "assets.extra" / "tf_serving_warmup_requests"))]
    assert records and {log.predict_log.request.model_spec.name for log in records} == {"fsl"}

    # A taken version is refused before any work, naming the next free one.
    again = run_tool(*flags)
    assert again.returncode == 2 and "Version 7 already exists" in again.stderr, again.stderr[-2000:]
    assert os.listdir(export_dir) == ["7"]


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--normalization=0.5,0.5", "--normalization needs 6 comma-separated floats, got 2"),
        ("--normalization=0.5,0.5,0.5,0,0.2,0.2", "3 means and 3 positive stds"),
        ("--version=0", "must be >= 1"),
        ("--weights=/nowhere/best.weights.h5", "/nowhere/best.weights.h5"),
    ],
)
def test_tool_bad_flags_exit_2_with_one_line(tmp_path, flag, message):
    export_dir = tmp_path / "exports"
    flags = [f"--gin_bindings={binding}" for binding in tiny_bindings(tmp_path / "demo")]
    completed = run_tool(*flags, f"--model_dir={tmp_path / 'run'}", f"--export_dir={export_dir}", flag)
    assert completed.returncode == 2, completed.stderr[-3000:]
    error_lines = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0], completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    assert not export_dir.exists() or os.listdir(export_dir) == []
