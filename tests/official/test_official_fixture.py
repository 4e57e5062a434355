"""A checkpoint written by the official DeepEMD code itself (random weights, the released
DataParallel layout) and its outputs on one episode: tf_deepemd reproduces the official encoder
features and the official logits of FCN and of FCN with feature pyramids "2,1" and "5,2,1".

The fixture is ``official_deepemd_fixture/`` in the folder ``TF_DEEPEMD_SHARED_DATA`` (default:
``shared/data`` beside the repository); these tests skip when it is absent.
"""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import tf_deepemd
from tests.official.parity import assert_parity
from tf_deepemd.encoders import FCNEncoder

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(
    os.environ.get("TF_DEEPEMD_SHARED_DATA", REPO.parent / "shared" / "data")
) / "official_deepemd_fixture"
CHECKPOINT = FIXTURE / "deepemd_fcn_random_meta.pth"
# Official -feature_pyramid flag -> episode.npz logits; tf_deepemd's FCNEncoder(feature_pyramid=)
# takes the same sizes with the same meaning (the 5x5 map is always appended).
PYRAMIDS = {(): "logits_fcn", (2, 1): "logits_fcn_pyramid_2_1", (5, 2, 1): "logits_fcn_pyramid_5_2_1"}

pytestmark = pytest.mark.skipif(
    not CHECKPOINT.is_file(), reason=f"official fixture not found in {FIXTURE}"
)


@pytest.fixture(scope="module")
def official():
    with np.load(FIXTURE / "episode.npz") as episode:
        return dict(episode)


@pytest.fixture(scope="module")
def features(official):
    """The episode's NHWC feature map by a DeepEMD model loaded from the official file."""
    model = tf_deepemd.make_model(backbone="resnet12", encoder="fcn")
    loaded = tf_deepemd.load_official_checkpoint(model, CHECKPOINT)
    assert len(loaded) == 80  # the 96 entries less 16 num_batches_tracked
    return model.backbone(official["images_nchw"].transpose(0, 2, 3, 1)).numpy()


def test_features_match_the_official_encoder(official, features):
    assert_parity("official features", features.transpose(0, 3, 1, 2), official["features_nchw"])


@pytest.mark.parametrize("pyramid", list(PYRAMIDS), ids=["fcn", "pyramid_2_1", "pyramid_5_2_1"])
def test_logits_match_the_official_model(official, features, pyramid):
    # Pyramid levels have no weights: the nodes come from the loaded backbone's features.
    model = tf_deepemd.make_model(encoder=FCNEncoder(keras.layers.Identity(), feature_pyramid=pyramid))
    way = len(official["support_labels"])
    logits = model((features[:way], official["support_labels"], features[way:])).numpy()
    name = PYRAMIDS[pyramid]
    assert_parity(f"official {name}", logits, official[name], same_argmax=True)


def test_the_torch_reference_reproduces_the_official_logits(official):
    """The yardstick of test_parity, written from the specification, agrees with the official code."""
    torch = pytest.importorskip("torch")
    from tests.official import torch_reference

    way = len(official["support_labels"])
    nodes = torch_reference.fcn_nodes(torch.from_numpy(official["features_nchw"]))
    logits = torch_reference.deepemd_logits(nodes[way:], nodes[:way])
    assert_parity("torch reference vs official logits_fcn", logits, official["logits_fcn"])


HIDE_TORCH = """
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch is hidden in this test")

sys.meta_path.insert(0, NoTorch())
import tf_deepemd
from tf_deepemd.backbones.resnet12 import ResNet12
loaded = tf_deepemd.load_official_checkpoint(ResNet12(), sys.argv[1])
assert not [name for name in sys.modules if name.split(".")[0] == "torch"], "torch was imported"
print("loaded", len(loaded))
"""


def test_import_and_load_without_torch():
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        [sys.executable, "-c", HIDE_TORCH, str(CHECKPOINT)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "loaded 80" in completed.stdout


@pytest.fixture(scope="module")
def official_5shot():
    with np.load(FIXTURE / "episode_5shot_sfc.npz") as episode:
        return dict(episode)


@pytest.mark.usefixtures("emd_implementation")
@pytest.mark.parametrize("prototypes", ["sfc", "class_mean"])
def test_5shot_logits_match_the_official_sfc(official_5shot, prototypes):
    """The official 5-way 5-shot episode: SFC fitted with batch size 25 (every
    update sees the whole support set, so no random order is involved) and
    the per-class mean."""
    layer = (tf_deepemd.SFC(batch_size=25) if prototypes == "sfc"
             else tf_deepemd.layers.ClassMeanPrototypes())
    model = tf_deepemd.make_model(backbone="resnet12", encoder="fcn", prototypes=layer)
    tf_deepemd.load_official_checkpoint(model, CHECKPOINT)
    images = official_5shot["images_nchw"].transpose(0, 2, 3, 1)
    labels = official_5shot["support_labels"]
    logits = model((images[:len(labels)], labels, images[len(labels):])).numpy()
    name = "logits_sfc" if prototypes == "sfc" else "logits_class_mean"
    error = np.abs(logits - official_5shot[name]).max()
    print(f"official 5-shot {name}: max |difference| {error:.1e}")
    assert error <= 1e-4, error
    np.testing.assert_array_equal(logits.argmax(-1), official_5shot[name].argmax(-1))
