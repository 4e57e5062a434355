"""Resume anywhere: tools/train.py SIGKILLed in each stage, rerun, ends as an uninterrupted run.

One uninterrupted run is the reference. Another run of the same command
is killed (SIGKILL, no chance to clean up) during pre-training, then,
rerun, during meta-training, then, rerun, during the test, and rerun a
last time to the end. TensorFlow's op determinism is on in every process
(`tests/training/fault_injection.py`), so the comparison is bitwise: the
best weights of both training stages, every epoch's logged loss and
validation accuracy, and the test's per-episode accuracies and result.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

from tests.training.tiny_config import tiny_bindings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAULTS = os.path.join(REPO, "tests", "training", "fault_injection.py")
TRAIN = os.path.join(REPO, "tools", "train.py")

# Tiny run: 2 epochs x 3 steps of pre-training, 2 epochs x 3 episodes of
# meta-training, 6 test episodes. Each kill lands after the first epoch's
# checkpoint, in the middle of the second epoch (or test episode 4 of 6).
KILL_POINTS = ("pretrain:5", "meta_train:5", "test:4")
RESULT_FIELDS = ("accuracy", "ci95", "episodes", "method", "way", "shot", "query", "split")


def command(model_dir, data_dir, *extra):
    bindings = tiny_bindings(data_dir, "run_experiment.callbacks = [@FaultAt()]", *extra)
    return [sys.executable, FAULTS, TRAIN, f"--model_dir={model_dir}", "--intra_op_threads=1",
            *(f"--gin_bindings={binding}" for binding in bindings)]


def run(args, kill_at=None):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", TEST_OP_DETERMINISM="1")
    env.pop("TEST_KILL_AT", None)
    if kill_at:
        env["TEST_KILL_AT"] = kill_at
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def weights(path):
    """``{name: array}`` of a ``.weights.h5`` file."""
    arrays = {}
    with h5py.File(path, "r") as file:
        file.visititems(lambda name, item: arrays.__setitem__(name, item[()])
                        if isinstance(item, h5py.Dataset) else None)
    return arrays


def epoch_rows(model_dir, stage):
    """The last logged row of every epoch (a killed epoch may have been logged twice)."""
    with open(os.path.join(model_dir, stage, "log.csv")) as stream:
        rows = {int(row["epoch"]): row for row in csv.DictReader(stream)}
    return [{key: rows[epoch][key] for key in ("loss", "val_episode_accuracy")} for epoch in sorted(rows)]


def results(model_dir):
    with open(os.path.join(model_dir, "results.json")) as stream:
        return json.load(stream)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: (model_dir, data_dir)."""
    folder = tmp_path_factory.mktemp("resume")
    model_dir, data_dir = str(folder / "uninterrupted"), str(folder / "demo")
    completed = run(command(model_dir, data_dir))
    assert completed.returncode == 0, completed.stderr[-3000:]
    return model_dir, data_dir


def test_killed_in_every_stage_then_rerun_ends_bitwise_as_the_uninterrupted_run(reference, tmp_path):
    reference_dir, data_dir = reference
    model_dir = str(tmp_path / "killed")
    args = command(model_dir, data_dir)
    for kill_at in KILL_POINTS:
        killed = run(args, kill_at=kill_at)
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr[-3000:])
        assert not os.path.exists(os.path.join(model_dir, "results.json"))
    test_progress = os.path.join(model_dir, "test", "results.json")
    with open(test_progress) as stream:
        assert 1 <= len(json.load(stream)["accuracies"]) < 6  # the test stopped part-way
    resumed = run(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "test: resuming after" in resumed.stderr

    comparison = {}
    for stage in ("pretrain", "meta_train"):
        ours = weights(os.path.join(model_dir, stage, "best.weights.h5"))
        theirs = weights(os.path.join(reference_dir, stage, "best.weights.h5"))
        assert ours.keys() == theirs.keys()
        comparison[stage] = max(float(np.max(np.abs(ours[k] - theirs[k]), initial=0)) for k in ours)
        for name in ours:
            np.testing.assert_array_equal(ours[name], theirs[name], err_msg=f"{stage} {name}")
        assert epoch_rows(model_dir, stage) == epoch_rows(reference_dir, stage)
    ours, theirs = results(model_dir), results(reference_dir)
    comparison["test"] = abs(ours["accuracy"] - theirs["accuracy"])
    print("largest |resumed - uninterrupted| per stage:", comparison)
    for field in RESULT_FIELDS:
        assert ours[field] == theirs[field], field
    with open(os.path.join(reference_dir, "test", "results.json")) as a, open(test_progress) as b:
        assert json.load(a)["accuracies"] == json.load(b)["accuracies"]


def test_other_settings_under_an_existing_run_folder_are_refused(reference, tmp_path):
    reference_dir, data_dir = reference
    model_dir = str(tmp_path / "copy")
    shutil.copytree(reference_dir, model_dir)
    before = sorted(os.listdir(model_dir))
    changed = run(command(model_dir, data_dir, "pretrain.epochs = 3", "make_model.temperature = 5.0"))
    assert changed.returncode == 2, changed.stderr[-3000:]
    error = [line for line in changed.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, changed.stderr[-3000:]
    assert "pretrain.epochs = 3 now, 2 there" in error[0]
    assert "make_model.temperature = 5.0 now, (not set) there" in error[0]
    assert sorted(os.listdir(model_dir)) == before
    # The same settings resume (here: everything is done; the test is not evaluated again).
    same = run(command(model_dir, data_dir))
    assert same.returncode == 0, same.stderr[-3000:]
    assert "all 6 episodes already scored" in same.stderr
    for field in RESULT_FIELDS:
        assert results(model_dir)[field] == results(reference_dir)[field]
