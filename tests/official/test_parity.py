"""Official-format checkpoints written by a PyTorch re-expression of the official model
(`torch_reference`) load into tf_deepemd models, which then give the reference's features and
logits: full ResNet-12, random weights and batch-norm statistics, one 5-way 1-shot episode of
class-structured 84 x 84 images (NCHW there, NHWC here)."""

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tf_deepemd  # noqa: E402
from tests.official import torch_reference  # noqa: E402
from tests.official.parity import assert_parity  # noqa: E402
from tf_deepemd.backbones.resnet12 import ResNet12  # noqa: E402
from tf_deepemd.encoders import FCNEncoder  # noqa: E402

WAY = 5
NUM_CLASSES = 64


@pytest.fixture(scope="module")
def reference(module_rng, tmp_path_factory):
    """The reference network, its episode, features and logits, and its checkpoint in the
    three official key layouts."""
    generator = torch.Generator().manual_seed(int(module_rng.integers(2**31)))
    network = torch_reference.randomise(
        torch_reference.Network(num_classes=NUM_CLASSES), generator
    )
    images, query_labels = torch_reference.class_structured_episode(generator, way=WAY)
    with torch.no_grad():
        features = network.encoder(images)
        pretrain_logits = network.pretrain_logits(images[:WAY]).numpy()

    def episode_logits(pyramid):
        nodes = torch_reference.fcn_nodes(features, pyramid)
        return torch_reference.deepemd_logits(nodes[WAY:], nodes[:WAY])

    meta = torch_reference.Network()  # meta-training mode: no classifier
    meta.encoder = network.encoder
    folder = tmp_path_factory.mktemp("official")
    states = {
        "meta": meta.state_dict(),
        "data_parallel": torch.nn.DataParallel(meta).state_dict(),
        # Pre-training layout (no prefix), here with the base-class classifier.
        "pretrain": {**network.encoder.state_dict(),
                     **{f"fc.{name}": value for name, value in network.fc.state_dict().items()}},
    }
    files = {}
    for layout, state in states.items():
        files[layout] = str(folder / f"{layout}.pth")
        torch.save({"params": state}, files[layout])
    return dict(
        images=images.numpy().transpose(0, 2, 3, 1),  # NHWC
        query_labels=query_labels,
        features=features.numpy().transpose(0, 2, 3, 1),
        pretrain_logits=pretrain_logits,
        logits={pyramid: episode_logits(pyramid) for pyramid in ((), (2, 1))},
        files=files,
    )


def episode(reference):
    images = reference["images"]
    return images[:WAY], np.arange(WAY, dtype=np.int32), images[WAY:]


def make_models():
    """Unbuilt: a DeepEMD-FCN, a PretrainClassifier, a bare ResNet-12."""
    return {
        "deepemd": tf_deepemd.make_model(backbone="resnet12", encoder="fcn"),
        "pretrain": tf_deepemd.PretrainClassifier(ResNet12(), NUM_CLASSES),
        "backbone": ResNet12(),
    }


def test_every_layout_loads_the_same_weights_into_every_model(reference):
    expected = None
    for layout, path in reference["files"].items():
        for kind, model in make_models().items():
            loaded = tf_deepemd.load_official_checkpoint(model, path)
            with_classifier = kind == "pretrain" and layout == "pretrain"
            # 80 backbone tensors (num_batches_tracked skipped), + fc.weight/bias.
            assert len(loaded) == 80 + 2 * with_classifier, (layout, kind)
            assert all(not key.endswith("num_batches_tracked") for key in loaded)
            backbone = model if kind == "backbone" else model.backbone
            weights = [variable.numpy() for variable in backbone.weights]
            if expected is None:
                expected = weights
            for got, want in zip(weights, expected, strict=True):
                np.testing.assert_array_equal(got, want, err_msg=f"{layout} into {kind}")


@pytest.fixture(scope="module")
def tf_features(reference):
    """The episode's feature map by a bare ResNet-12 loaded from the pre-training layout."""
    backbone = ResNet12()
    tf_deepemd.load_official_checkpoint(backbone, reference["files"]["pretrain"])
    return backbone(reference["images"]).numpy()


def test_backbone_features_match_reference(reference, tf_features):
    assert_parity("reference ResNet-12 features", tf_features, reference["features"])


def test_deepemd_fcn_logits_match_reference(reference):
    model = tf_deepemd.make_model(backbone="resnet12", encoder="fcn")
    tf_deepemd.load_official_checkpoint(model, reference["files"]["data_parallel"])
    logits = model(episode(reference)).numpy()
    assert_parity("reference DeepEMD-FCN logits", logits, reference["logits"][()], same_argmax=True)
    # The class structure makes the episode solvable: the predictions mean something.
    assert np.mean(np.argmax(logits, 1) == reference["query_labels"]) >= 0.8


def test_deepemd_fcn_pyramid_logits_match_reference(reference, tf_features):
    # The pyramid has no weights: match nodes pooled from the loaded backbone's features.
    model = tf_deepemd.make_model(
        encoder=FCNEncoder(keras.layers.Identity(), feature_pyramid=(2, 1))
    )
    support, labels, query = tf_features[:WAY], np.arange(WAY, dtype=np.int32), tf_features[WAY:]
    logits = model((support, labels, query)).numpy()
    assert_parity("reference FCN pyramid 2,1 logits", logits, reference["logits"][(2, 1)],
                  same_argmax=True)


def test_pretrain_classifier_logits_match_reference(reference):
    model = tf_deepemd.PretrainClassifier(ResNet12(), NUM_CLASSES)
    tf_deepemd.load_official_checkpoint(model, reference["files"]["pretrain"])
    logits = model(reference["images"][:WAY]).numpy()
    assert_parity("reference PretrainClassifier logits", logits, reference["pretrain_logits"],
                  same_argmax=True)
