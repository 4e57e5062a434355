"""MirroredStrategy over 2 logical CPUs trains like one device accumulating 2 episodes."""

import json
import os
import subprocess
import sys

import pytest

from tf_deepemd.training.strategy import make_strategy

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs in a fresh process: logical devices must be set before TensorFlow starts.
SCRIPT = r"""
import csv, json, os, sys
os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
from tf_deepemd.training.launch import configure_runtime
configure_runtime(cpu_devices=2)
from tests.training.tiny_config import configure_tiny
from tf_deepemd.training.experiment import run_experiment

data_dir, out = sys.argv[1], sys.argv[2]
losses = {}
for strategy in ("mirrored", "default"):
    configure_tiny(data_dir, "meta_train.episodes_per_update = 2", "meta_train.episodes_per_epoch = 4",
                   "meta_train.val_episodes = 4")
    model_dir = os.path.join(out, strategy)
    results = run_experiment(model_dir=model_dir, stages=("meta_train",), strategy=strategy)
    with open(os.path.join(model_dir, "meta_train", "log.csv")) as stream:
        losses[strategy] = {
            "replicas": results["replicas"],
            "loss": [float(row["loss"]) for row in csv.DictReader(stream)],
        }
print("RESULT" + json.dumps(losses))
"""


def test_mirrored_on_two_logical_cpus_matches_single_device(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "demo"), str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = [l for l in completed.stdout.splitlines() if l.startswith("RESULT")][-1]
    losses = json.loads(line[len("RESULT"):])
    assert losses["mirrored"]["replicas"] == 2
    assert losses["default"]["replicas"] == 1
    assert len(losses["mirrored"]["loss"]) == len(losses["default"]["loss"]) == 2
    # Same episodes, same updates (2 replicas x 1 episode == 1 device x 2 accumulated).
    for mirrored, single in zip(losses["mirrored"]["loss"], losses["default"]["loss"]):
        assert mirrored == pytest.approx(single, rel=1e-4)


def test_unknown_strategy_is_named():
    with pytest.raises(ValueError, match="Unknown strategy 'tpu'"):
        make_strategy("tpu")
