"""tools/convert_official.py then tools/eval.py, as a user runs them, on a checkpoint written by
the PyTorch reference (a narrow ResNet-12 at 32 px, the tiny demo run settings)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tf_deepemd  # noqa: E402
from tests.official import torch_reference  # noqa: E402
from tests.official.parity import assert_parity  # noqa: E402
from tests.training.tiny_config import tiny_bindings  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WIDTHS = (8, 16, 16, 32)
SIZE = 32
RESNET12_BINDINGS = (
    "make_model.backbone = 'resnet12'",
    f"make_model.backbone_options = {{'widths': {WIDTHS}}}",
    f"run_experiment.image_size = {SIZE}",
)


def run_tool(name, model_dir, data_dir, *extra_bindings, flags=()):
    command = [sys.executable, os.path.join(REPO, "tools", name), f"--model_dir={model_dir}", *flags,
               f"--gin_file={os.path.join(REPO, 'gin_configs', 'base', 'protocol.gin')}"]
    command += [f"--gin_bindings={b}" for b in tiny_bindings(data_dir, *RESNET12_BINDINGS, *extra_bindings)]
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_convert_then_eval(tmp_path, test_seed):
    generator = torch.Generator().manual_seed(test_seed % 2**31)
    network = torch_reference.randomise(torch_reference.Network(WIDTHS), generator)
    checkpoint = tmp_path / "max_acc.pth"
    torch.save({"params": torch.nn.DataParallel(network).state_dict()}, checkpoint)
    model_dir, data_dir = tmp_path / "run", tmp_path / "demo"

    printed = run_tool("convert_official.py", model_dir, data_dir, flags=[f"--checkpoint={checkpoint}"])
    weights = model_dir / "official.weights.h5"
    assert f"loaded 80 tensors of {checkpoint}; wrote {weights}" in printed

    # The written weights give the reference's logits.
    images, _ = torch_reference.class_structured_episode(generator, size=SIZE)
    with torch.no_grad():
        nodes = torch_reference.fcn_nodes(network.encoder(images))
    expected = torch_reference.deepemd_logits(nodes[5:], nodes[:5])
    model = tf_deepemd.make_model(backbone="resnet12", backbone_options={"widths": WIDTHS})
    model.build([(None, SIZE, SIZE, 3), (None,), (None, SIZE, SIZE, 3)])
    model.load_weights(weights)
    images = images.numpy().transpose(0, 2, 3, 1)
    logits = model((images[:5], np.arange(5, dtype=np.int32), images[5:])).numpy()
    assert_parity("converted weights, DeepEMD-FCN logits", logits, expected, same_argmax=True)

    run_tool("eval.py", model_dir, data_dir, f"run_experiment.test_weights = {str(weights)!r}",
             flags=["--episodes=2"])
    with open(model_dir / "eval_test_5way_1shot.json") as stream:
        results = json.load(stream)
    assert (results["weights"], results["episodes"]) == (str(weights), 2)
