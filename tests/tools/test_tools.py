"""tools/train.py and tools/eval.py as a user runs them: subprocesses, tiny settings."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import gin
import pytest

from tests.export.test_export_tool import fake_finished_run
from tests.training.tiny_config import configure_tiny, tiny_bindings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "tools", "train.py")
EVAL = os.path.join(REPO, "tools", "eval.py")


def tool_command(tool, model_dir, data_dir, *extra_bindings, flags=()):
    command = [sys.executable, tool, f"--model_dir={model_dir}", *flags]
    # A small base config file + bindings, as a user would combine them.
    command.append(f"--gin_file={os.path.join(REPO, 'gin_configs', 'base', 'protocol.gin')}")
    for binding in tiny_bindings(data_dir, *extra_bindings):
        command.append(f"--gin_bindings={binding}")
    return command


def run(command, env=None, **kwargs):
    env = env or dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, **kwargs)


def epochs_logged(model_dir, stage):
    with open(os.path.join(model_dir, stage, "log.csv")) as stream:
        return [int(row["epoch"]) for row in csv.DictReader(stream)]


def test_train_killed_then_same_command_resumes_then_eval(tmp_path):
    model_dir, data_dir = str(tmp_path / "run"), str(tmp_path / "demo")
    # Longer pre-training so that the kill lands in it, after its first checkpoint.
    command = tool_command(TRAIN, model_dir, data_dir, "pretrain.epochs = 30")
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    first_checkpoint = os.path.join(model_dir, "pretrain", "resume", "checkpoint")
    deadline = time.monotonic() + 120
    while not os.path.exists(first_checkpoint) and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read()[-2000:]
    done_before = epochs_logged(model_dir, "pretrain")
    assert 1 <= len(done_before) < 30
    assert not os.path.exists(os.path.join(model_dir, "results.json"))

    completed = run(command)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "resuming from" in completed.stderr
    epochs = epochs_logged(model_dir, "pretrain")
    # Continued after the last checkpointed epoch: every epoch once (a row
    # written after the last checkpoint is the only possible repeat).
    assert epochs[-1] == 30 and sorted(set(epochs)) == list(range(1, 31))  # from 1, as the console
    assert len(epochs) <= 31
    with open(os.path.join(model_dir, "results.json")) as stream:
        results = json.load(stream)
    for field in ("dataset", "split", "method", "way", "shot", "episodes", "accuracy", "ci95"):
        assert field in results
    assert "demo test deepemd_fcn 5-way 1-shot" in completed.stdout
    assert os.path.isfile(os.path.join(model_dir, "operative_config.gin"))
    # The tool hands training the accuracy plot: a PNG next to each stage's log.
    for stage in ("pretrain", "meta_train"):
        with open(os.path.join(model_dir, stage, "accuracy.png"), "rb") as stream:
            assert stream.read(8) == b"\x89PNG\r\n\x1a\n"

    # Evaluation only, at 5-shot with SFC (few steps to keep it short).
    evaluated = run(tool_command(EVAL, model_dir, data_dir, "run_experiment.shot = 5",
                                 "SFC.steps = 2", flags=["--episodes=3"]))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "episodes/s" in evaluated.stdout
    with open(os.path.join(model_dir, "eval_test_5way_5shot.json")) as stream:
        scores = json.load(stream)
    assert (scores["shot"], scores["episodes"], scores["split"]) == (5, 3, "test")
    assert scores["episodes_per_second"] > 0


@pytest.mark.parametrize(
    "bindings, message",
    [
        (("run_experiment.dataset = 'imagenet_1k'",), "Unknown dataset"),
        (("make_model.encoder = 'patches'",), "Unknown make_model.encoder"),
    ],
)
def test_bad_configuration_is_one_line_and_nonzero_exit(tmp_path, bindings, message):
    completed = run(tool_command(TRAIN, str(tmp_path / "run"), str(tmp_path / "demo"), *bindings))
    assert completed.returncode == 2
    error_lines = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0], completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    assert not os.path.exists(tmp_path / "run")


def test_runtime_error_keeps_its_traceback(tmp_path):
    """A ValueError raised while training is no configuration error: traceback, exit 1, no one-liner."""
    faults = os.path.join(REPO, "tests", "training", "fault_injection.py")
    command = tool_command(TRAIN, str(tmp_path / "run"), str(tmp_path / "demo"),
                           "run_experiment.callbacks = [@FaultAt()]")
    completed = run([sys.executable, faults, *command[1:]], env=dict(
        os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", TEST_FAIL_AT="pretrain:1"))
    assert completed.returncode == 1, completed.stderr[-3000:]
    assert "Traceback (most recent call last)" in completed.stderr
    assert "RuntimeFault: injected runtime fault in pretrain" in completed.stderr
    assert not [line for line in completed.stderr.splitlines() if line.startswith("error:")]


def test_eval_output_names_the_results_file(tmp_path):
    model_dir, data_dir = tmp_path / "run", str(tmp_path / "demo")
    configure_tiny(data_dir)
    fake_finished_run(str(model_dir), seed=3)
    gin.clear_config()
    evaluated = run(tool_command(EVAL, str(model_dir), data_dir, flags=["--episodes=4", "--output=mine.json"]))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert f"written to {model_dir / 'mine.json'}" in evaluated.stdout
    assert not (model_dir / "eval_test_5way_1shot.json").exists()  # the default name is not written too
    with open(model_dir / "mine.json") as stream:
        scores = json.load(stream)
    assert (scores["split"], scores["way"], scores["shot"], scores["episodes"]) == ("test", 5, 1, 4)
    assert 0 <= scores["accuracy"] <= 100 and scores["ci95"] >= 0
    accuracy_printed = f"{scores['accuracy']:.2f} +- {scores['ci95']:.2f} % over 4 episodes"
    assert accuracy_printed in evaluated.stdout
