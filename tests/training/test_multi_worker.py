"""Two tools/train.py workers on 127.0.0.1 (MultiWorkerMirroredStrategy, gRPC) against one process.

The workers run pre-training, meta-training and the test of a tiny run;
the chief alone writes the run folder. The reference is one process
training the same 2 replicas (MirroredStrategy over 2 logical CPUs) with
the same global batches: each replica computes on the same data as the
worker of its index, so the losses of every epoch agree up to the order of
the all-reduce sums (float32).
"""

import csv
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.training.tiny_config import tiny_bindings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "tools", "train.py")
TIMEOUT = 300  # seconds for the three processes; all are killed after it
LOSS_RTOL = 1e-4

# One epoch per stage, 2 episodes per update (one per replica), few episodes.
BINDINGS = (
    "pretrain.epochs = 1",
    "pretrain.val_episodes = 2",
    "meta_train.epochs = 1",
    "meta_train.episodes_per_update = 2",
    "meta_train.episodes_per_epoch = 4",
    "meta_train.val_episodes = 2",
    "run_experiment.test_episodes = 4",
)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def train_command(model_dir, data_dir, strategy, *flags):
    command = [sys.executable, TRAIN, f"--model_dir={model_dir}", "--intra_op_threads=1", *flags]
    bindings = tiny_bindings(data_dir, *BINDINGS, f"run_experiment.strategy = {strategy!r}")
    return command + [f"--gin_bindings={binding}" for binding in bindings]


def stage_losses(model_dir, stage):
    with open(os.path.join(model_dir, stage, "log.csv")) as stream:
        return [float(row["loss"]) for row in csv.DictReader(stream)]


def test_two_workers_train_and_test_like_one_process_with_two_replicas(tmp_path):
    data_dir = str(tmp_path / "demo")
    model_dir, reference_dir = str(tmp_path / "multi_worker"), str(tmp_path / "one_process")
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    base_env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    # The demo data is generated once, before the three processes share it.
    from tf_deepemd.data import load_split

    load_split("demo", "train", data_dir, images_per_class=20)
    start = time.monotonic()
    processes = []
    for index in range(2):
        env = dict(base_env, TF_CONFIG=json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(
            train_command(model_dir, data_dir, "multi_worker"), cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    # The reference at the same time: one process, MirroredStrategy over 2 logical CPUs.
    processes.append(subprocess.Popen(
        train_command(reference_dir, data_dir, "mirrored", "--cpu_devices=2"), cwd=REPO, env=base_env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=max(1, TIMEOUT - (time.monotonic() - start))))
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            pytest.fail(f"the workers did not finish within {TIMEOUT} s")
    print(f"two workers and the reference: {time.monotonic() - start:.0f} s")
    for name, process, (_, stderr) in zip(("worker 0", "worker 1", "reference"), processes, outputs):
        assert process.returncode == 0, f"{name}:\n{stderr[-3000:]}"

    # The chief alone wrote the run folder (the other worker: a scratch folder, deleted).
    with open(os.path.join(model_dir, "results.json")) as stream:
        results = json.load(stream)
    assert results["replicas"] == 2
    assert results["episodes"] == 4 and 0 <= results["accuracy"] <= 100
    assert sorted(os.listdir(model_dir)) == sorted(
        ["config.gin", "operative_config.gin", "settings.json", "results.json", "pretrain", "meta_train",
         "test"])
    # Both workers validated and tested the same model: the same accuracy printed.
    summaries = [[line for line in stdout.splitlines() if "5-way 1-shot" in line] for stdout, _ in outputs[:2]]
    assert len(summaries[0]) == 1 and summaries[0] == summaries[1], summaries

    with open(os.path.join(reference_dir, "results.json")) as stream:
        reference = json.load(stream)
    assert reference["replicas"] == 2
    for stage in ("pretrain", "meta_train"):
        worker_losses, reference_losses = stage_losses(model_dir, stage), stage_losses(reference_dir, stage)
        print(f"{stage} loss: two workers {worker_losses}, one process {reference_losses}")
        assert worker_losses == pytest.approx(reference_losses, rel=LOSS_RTOL)
    assert results["stages"]["meta_train"]["best_val_accuracy"] == pytest.approx(
        reference["stages"]["meta_train"]["best_val_accuracy"], abs=1e-6)
