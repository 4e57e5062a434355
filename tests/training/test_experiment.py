"""Whole runs in-process at tiny settings: results, logs, resume, early config errors."""

import csv
import glob
import json
import os

import gin
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2

from tests.training.tiny_config import configure_tiny
from tf_deepemd.training.experiment import run_experiment
from tf_deepemd.visualization import AccuracyPlot

RESULT_FIELDS = ("dataset", "split", "method", "way", "shot", "episodes", "accuracy", "ci95")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def full_run(demo_dir, tmp_path_factory):
    """One uninterrupted tiny run: (model_dir, results)."""
    model_dir = str(tmp_path_factory.mktemp("full_run"))
    configure_tiny(demo_dir)
    # As tools/train.py: the accuracy plot reaches training as a stage callback.
    results = run_experiment(model_dir=model_dir, stage_callbacks=lambda files: [AccuracyPlot(files.log_csv)])
    return model_dir, results


def epochs_logged(model_dir, stage):
    with open(os.path.join(model_dir, stage, "log.csv")) as stream:
        return [int(row["epoch"]) for row in csv.DictReader(stream)]


def scalar_steps(event_dir):
    """``{(writer, tag): sorted steps}`` of the event files under ``event_dir``."""
    steps = {}
    for path in glob.glob(os.path.join(event_dir, "*", "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                steps.setdefault((os.path.basename(os.path.dirname(path)), value.tag), []).append(event.step)
    return {key: sorted(values) for key, values in steps.items()}


def scalar_tags(event_dir):
    return set(scalar_steps(event_dir))


def test_run_writes_results_logs_and_config(full_run):
    model_dir, results = full_run
    with open(os.path.join(model_dir, "results.json")) as stream:
        written = json.load(stream)
    for field in RESULT_FIELDS:
        assert field in written, field
    assert written == json.loads(json.dumps(results))
    assert (written["dataset"], written["split"], written["method"]) == ("demo", "test", "deepemd_fcn")
    assert (written["way"], written["shot"], written["episodes"]) == (5, 1, 6)
    assert 0.0 <= written["accuracy"] <= 100.0 and written["ci95"] > 0.0
    assert written["weights"].endswith(os.path.join("meta_train", "best.weights.h5"))
    for stage in ("pretrain", "meta_train"):
        assert epochs_logged(model_dir, stage) == [1, 2]  # from 1, as the console
        assert os.path.isfile(os.path.join(model_dir, stage, "done.json"))
        # The accuracy-per-epoch plot next to the CSV log (a real PNG).
        with open(os.path.join(model_dir, stage, "accuracy.png"), "rb") as stream:
            assert stream.read(8) == b"\x89PNG\r\n\x1a\n"
    # TensorBoard event files: training and validation curves of each stage.
    meta_tags = scalar_tags(os.path.join(model_dir, "meta_train", "tensorboard"))
    assert {("train", "epoch_loss"), ("validation", "epoch_episode_accuracy")} <= meta_tags
    pretrain_tags = scalar_tags(os.path.join(model_dir, "pretrain", "tensorboard"))
    assert {("train", "epoch_accuracy"), ("validation", "epoch_episode_accuracy")} <= pretrain_tags
    # The same epoch numbers as log.csv and the console.
    steps = scalar_steps(os.path.join(model_dir, "meta_train", "tensorboard"))
    assert steps[("train", "epoch_loss")] == steps[("validation", "epoch_episode_accuracy")] == [1, 2]
    operative = open(os.path.join(model_dir, "operative_config.gin")).read()
    assert "pretrain.batch_size = 32" in operative
    assert "make_model.backbone = 'conv4'" in operative


class Interrupt(Exception):
    """Stands for the run being killed."""


class InterruptAfter(tf.keras.callbacks.Callback):
    """Raises at the end of `epoch` (after the resume checkpoint) of the stage fitting `model_type`."""

    def __init__(self, model_type, epoch):
        super().__init__()
        self.model_type, self.epoch = model_type, epoch

    def on_epoch_end(self, epoch, logs=None):
        if type(self.model).__name__ == self.model_type and epoch == self.epoch:
            raise Interrupt(f"{self.model_type} epoch {epoch}")


def test_interrupted_run_resumes_and_matches_uninterrupted_run(full_run, demo_dir, tmp_path):
    model_dir = str(tmp_path / "run")
    configure_tiny(demo_dir)
    with pytest.raises(Interrupt):
        run_experiment(model_dir=model_dir, callbacks=[InterruptAfter("PretrainClassifier", 0)])
    assert epochs_logged(model_dir, "pretrain") == [1]
    configure_tiny(demo_dir)
    with pytest.raises(Interrupt):
        run_experiment(model_dir=model_dir, callbacks=[InterruptAfter("DeepEMD", 0)])
    # Pre-training continued at its 2nd epoch and finished; meta-training stopped after one.
    assert epochs_logged(model_dir, "pretrain") == [1, 2]
    assert os.path.isfile(os.path.join(model_dir, "pretrain", "done.json"))
    assert epochs_logged(model_dir, "meta_train") == [1]
    pretrain_log = open(os.path.join(model_dir, "pretrain", "log.csv")).read()

    configure_tiny(demo_dir)
    results = run_experiment(model_dir=model_dir)
    assert epochs_logged(model_dir, "meta_train") == [1, 2]
    # The finished stage was skipped, not run again.
    assert open(os.path.join(model_dir, "pretrain", "log.csv")).read() == pretrain_log

    full_dir, full_results = full_run
    for stage in ("pretrain", "meta_train"):
        with open(os.path.join(model_dir, stage, "log.csv")) as a, open(
            os.path.join(full_dir, stage, "log.csv")
        ) as b:
            resumed, uninterrupted = list(csv.DictReader(a)), list(csv.DictReader(b))
        for row, reference in zip(resumed, uninterrupted):
            np.testing.assert_allclose(float(row["loss"]), float(reference["loss"]), rtol=1e-4)
    assert results["accuracy"] == pytest.approx(full_results["accuracy"], abs=1e-6)
    assert results["stages"]["meta_train"]["best_val_accuracy"] == pytest.approx(
        full_results["stages"]["meta_train"]["best_val_accuracy"], abs=1e-4
    )


@pytest.mark.parametrize(
    "bindings, message",
    [
        (("run_experiment.dataset = 'mini_imagenet_typo'",), "Unknown dataset"),
        (("run_experiment.dataset = 'mini_imagenet'", "run_experiment.data_dir = None"),
         "needs a data_dir"),
        (("make_model.encoder = 'patches'",), "Unknown make_model.encoder 'patches'"),
        (("make_model.head = 'matchingnet'",), "Unknown make_model.head"),
        (("run_experiment.way = 17",), "larger than the number of classes"),
        (("run_experiment.shot = 10", "run_experiment.query = 11"), "images"),
    ],
)
def test_bad_configuration_fails_before_any_work(demo_dir, tmp_path, bindings, message):
    configure_tiny(demo_dir, *bindings)
    model_dir = str(tmp_path / "run")
    with pytest.raises(ValueError, match=message):
        run_experiment(model_dir=model_dir)
    assert not os.path.exists(model_dir)  # nothing was written: no stage started


def test_testing_needs_trained_weights(demo_dir, tmp_path):
    configure_tiny(demo_dir)
    with pytest.raises(ValueError, match="Nothing to test"):
        run_experiment(model_dir=str(tmp_path / "empty"), stages=("test",))


def teardown_module():
    gin.clear_config()
