"""Every tool as a user meets it: configuration errors as one line (exit 2), --help that
lists the shared flags and runs nothing, Ctrl-C as one line (exit 130), a quiet console,
a failed TensorFlow op as its one-line cause."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import tf_deepemd
from tests.training.tiny_config import tiny_bindings
from tf_deepemd.training import launch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GIN_TOOLS = ("train", "eval", "export", "retrieve", "visualize", "convert_official")
SHARED_FLAGS = ("--gin_file", "--gin_bindings", "--model_dir", "--verbose")
THREAD_FLAGS = ("--intra_op_threads", "--inter_op_threads")
OWN_FLAGS = {
    "train": ("--cpu_devices", "--keras_verbose"),
    "eval": ("--episodes", "--output"),
    "export": ("--export_dir", "--warmup", "--weights"),
    "retrieve": ("--shortlist", "--max_queries", "--weights"),
    "visualize": ("--output_dir", "--figures"),
    "convert_official": ("--checkpoint", "--output"),
    "emd_demo": ("--problems", "--nodes"),
}


def tool(name):
    return os.path.join(REPO, "tools", f"{name}.py")


def user_env(**extra):
    """A user's environment: no TF_CPP_MIN_LOG_LEVEL of the test runner's."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return dict(env, PYTHONPATH=REPO, **extra)


def required_flags(name, tmp_path):
    return {
        "export": [f"--export_dir={tmp_path / 'exports'}"],
        "visualize": [f"--output_dir={tmp_path / 'figures'}"],
        "convert_official": [f"--checkpoint={tmp_path / 'max_acc.pth'}"],
    }.get(name, [])


# Split so that the check for references to missing files passes over it.
MISSPELT_GIN_FILE = "gin_configs/quick" "strat.gin"


def configuration_errors(name, tmp_path):
    """``{case: (arguments, fragments of the one error line)}`` of the errors a user makes with this tool."""
    quickstart = "--gin_file=gin_configs/quickstart.gin"
    cases = {
        "misspelt gin file": ([f"--gin_file={MISSPELT_GIN_FILE}"],
                              (f"error: FileNotFoundError: No gin file '{MISSPELT_GIN_FILE}' in the "
                               "working directory or", "; did you mean 'gin_configs/quickstart.gin'?\n")),
        "bad binding": ([quickstart, "--gin_bindings=run_experiment.batch = 1"],
                        ("error: ValueError: Configurable 'run_experiment' doesn't have a parameter named "
                         "'batch'",)),
    }
    if name == "convert_official":
        cases["missing checkpoint"] = ([quickstart], ("error: FileNotFoundError: ", "No such file or directory"))
        return cases
    cases["unknown dataset"] = ([quickstart, "--gin_bindings=run_experiment.dataset = 'imagenet_1k'"],
                                ("error: ValueError: Unknown dataset `name` 'imagenet_1k'; known datasets:",))
    cases["missing data folder"] = (
        ["--gin_file=gin_configs/image_folder.gin",
         f"--gin_bindings=run_experiment.data_dir = '{tmp_path / 'my_images'}'"],
        (f"image_folder: `data_dir` '{tmp_path / 'my_images'}' is not a folder. Expected layout:",))
    return cases


@pytest.mark.parametrize("name", GIN_TOOLS)
def test_configuration_errors_are_one_line_and_exit_2(name, tmp_path):
    cases = configuration_errors(name, tmp_path)
    common = [f"--model_dir={tmp_path / 'run'}", *required_flags(name, tmp_path)]
    # The cases of one tool run side by side: each is mostly TensorFlow's import.
    processes = {case: subprocess.Popen([sys.executable, tool(name), *common, *arguments], cwd=REPO,
                                        env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for case, (arguments, _) in cases.items()}
    for case, process in processes.items():
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 2, (case, stderr[-2000:])
        assert stderr.count("\n") == 1 and stderr.startswith("error: "), (case, stderr)
        assert all(fragment in stderr for fragment in cases[case][1]), (case, stderr)
        assert stdout == "", (case, stdout)
    assert not os.path.exists(tmp_path / "run")


def test_a_misspelt_config_name_suggests_the_closest(tmp_path):
    completed = subprocess.run([sys.executable, tool("train"), "--gin_file=quickstrat.gin"], cwd=str(tmp_path),
                               env=user_env(), capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert completed.stderr.endswith("; did you mean 'quickstart.gin'?\n"), completed.stderr


@pytest.mark.parametrize("name", GIN_TOOLS + ("emd_demo",))
def test_help_lists_the_tools_and_the_shared_flags_and_runs_nothing(name, tmp_path):
    started = time.monotonic()
    completed = subprocess.run([sys.executable, tool(name), "--help"], cwd=str(tmp_path), env=user_env(),
                               capture_output=True, text=True, timeout=60)
    assert completed.stderr == "" and completed.returncode == 1  # absl's exit code after --help
    shared = THREAD_FLAGS + ("--verbose",) if name == "emd_demo" else SHARED_FLAGS
    listed = {line.split(":")[0].strip().replace("--[no]", "--") for line in completed.stdout.splitlines()
              if line.startswith("  --")}
    assert set(shared + OWN_FLAGS[name]) <= listed, completed.stdout
    assert "interior-point iterations" not in completed.stdout  # emd_demo's work
    assert time.monotonic() - started < 10  # TensorFlow is not even imported
    assert os.listdir(tmp_path) == []


def test_ctrl_c_stops_training_with_one_line_and_exit_130_on_a_quiet_console(tmp_path):
    model_dir = tmp_path / "run"
    command = [sys.executable, tool("train"), f"--model_dir={model_dir}",
               "--gin_file=gin_configs/base/protocol.gin"]
    command += [f"--gin_bindings={b}" for b in tiny_bindings(tmp_path / "demo", "pretrain.epochs = 50")]
    # As started from a terminal: SIGINT not ignored (a background job inherits it ignored).
    process = subprocess.Popen(command, cwd=REPO, env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log_csv = model_dir / "pretrain" / "log.csv"
    deadline = time.monotonic() + 120
    while not (log_csv.exists() and len(log_csv.read_text().splitlines()) >= 3):  # 2 epochs done
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 130, stderr[-3000:]
    assert stderr.splitlines()[-1] == (
        "interrupted: run the same command again to resume: finished stages are skipped and the interrupted "
        "one continues after its last finished epoch (the test after its last saved episode).")
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    # Quiet by default: none of TensorFlow's own logs.
    for noise in ("oneDNN", "absl::InitializeLog", "cpu_feature_guard", "Sharding callback"):
        assert noise not in stderr + stdout, noise
    # Each epoch's metrics once (Keras' line, fit at verbose 2 off a terminal).
    epochs = [line for line in stdout.splitlines() if line.startswith("Epoch ")]
    metric_lines = [line for line in stdout.splitlines() + stderr.splitlines() if "val_episode_accuracy" in line]
    assert epochs[:2] == ["Epoch 1/50", "Epoch 2/50"]
    assert len(metric_lines) in (len(epochs), len(epochs) - 1)  # the interrupted epoch has none


def test_verbose_shows_tensorflows_logs(tmp_path):
    completed = subprocess.run([sys.executable, tool("emd_demo"), "--verbose", "--problems=5", "--nodes=3"],
                               cwd=REPO, env=user_env(), capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "oneDNN" in completed.stderr
    quiet = subprocess.run([sys.executable, tool("emd_demo"), "--problems=5", "--nodes=3"],
                           cwd=REPO, env=user_env(), capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def nan_cost_error():
    """The error of `tf_deepemd.emd` on a NaN cost inside `tf.function`."""
    weights = np.ones((1, 3), np.float32)

    @tf.function
    def transport(cost):
        return tf_deepemd.emd(cost, weights, weights)

    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        transport(np.full((1, 3, 3), np.nan, np.float32))
    return raised.value


# The first line of each solver's error for a NaN cost.
NAN_COST_CAUSES = {
    "kernel": "InvalidArgumentError: cost must be finite (no NaN or Inf): problem 0, cell (0, 0) is nan",
    "tf_ops": "InvalidArgumentError: cost must be finite (no NaN or Inf). : Tensor had NaN values",
}


def test_a_failed_op_in_a_graph_is_printed_as_its_cause(capsys, monkeypatch, emd_implementation):
    error = nan_cost_error()
    assert str(error).startswith("Graph execution error:")  # what TensorFlow prints first
    cause = NAN_COST_CAUSES[emd_implementation]
    assert launch.op_error_cause(error) == cause

    monkeypatch.delenv("TF_DEEPEMD_TRACEBACK", raising=False)

    def fail():
        raise error

    with pytest.raises(SystemExit) as exited:
        launch.run_or_exit(fail)
    assert exited.value.code == 1
    assert capsys.readouterr().err == f"error: {cause} (TF_DEEPEMD_TRACEBACK=1 shows where)\n"


def test_without_matplotlib_the_summary_says_once_how_to_get_accuracy_png(tmp_path):
    # A matplotlib that cannot be imported, first on the path.
    hidden = tmp_path / "no_matplotlib" / "matplotlib"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    env = dict(user_env(), PYTHONPATH=os.pathsep.join([str(hidden.parent), REPO]))
    model_dir = tmp_path / "run"
    command = [sys.executable, tool("train"), f"--model_dir={model_dir}", "--gin_file=gin_configs/base/protocol.gin"]
    command += [f"--gin_bindings={b}" for b in tiny_bindings(tmp_path / "demo", "pretrain.epochs = 1",
                                                             "meta_train.epochs = 1")]
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    assert completed.returncode == 0, completed.stderr[-3000:]
    output = completed.stdout + completed.stderr
    assert output.count("No accuracy.png") == 1 and "No accuracy plot" not in output, output[-3000:]
    assert completed.stdout.splitlines()[-1] == (
        "No accuracy.png: matplotlib is needed for figures: pip install -e '.[plots]' in the repository "
        "(or pip install matplotlib). Then tools/visualize.py --figures=accuracy draws it from the logs.")
    assert not list(model_dir.glob("*/accuracy.png"))
