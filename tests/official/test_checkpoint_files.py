"""What `load_official_checkpoint` refuses, and the file formats it reads, on a tiny ResNet-12."""

import logging
import os
import pickle
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tf_deepemd  # noqa: E402
from tests.official import torch_reference  # noqa: E402
from tf_deepemd.backbones.resnet12 import ResNet12  # noqa: E402
from tf_deepemd.official import CheckpointFormatError, load_pth  # noqa: E402

WIDTHS = (4, 6, 8, 10)


@pytest.fixture
def network(test_seed):
    generator = torch.Generator().manual_seed(test_seed % 2**31)
    return torch_reference.randomise(torch_reference.Network(WIDTHS, num_classes=3), generator)


def save(state, path, **options):
    torch.save({"params": state}, path, **options)
    return str(path)


def tiny_backbone():
    return ResNet12(widths=WIDTHS)


def backbone_weights(backbone):
    return [variable.numpy() for variable in backbone.weights]


def test_zip_and_legacy_files_give_the_reference_features(network, tmp_path, rng):
    images = rng.normal(size=(2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = network.encoder(torch.from_numpy(images)).numpy().transpose(0, 2, 3, 1)
    state = network.encoder.state_dict()
    for name, options in (("zip", {}), ("legacy", {"_use_new_zipfile_serialization": False})):
        backbone = tiny_backbone()
        tf_deepemd.load_official_checkpoint(backbone, save(state, tmp_path / f"{name}.pth", **options))
        features = backbone(images.transpose(0, 2, 3, 1)).numpy()
        np.testing.assert_allclose(features, expected, rtol=0, atol=1e-5, err_msg=name)


def test_reader_returns_exact_tensors_of_any_stride_and_dtype(tmp_path):
    grid = torch.arange(24.0).reshape(4, 6)
    saved = {
        "transposed": grid.t(),
        "slice": grid[1:, 2:],
        "long": torch.tensor([3, -1]),
        "half": torch.tensor([0.5, 2.0], dtype=torch.float16),
        "scalar": torch.tensor(7),
        "parameter": torch.nn.Parameter(torch.ones(2)),
    }
    for options in ({}, {"_use_new_zipfile_serialization": False}):
        torch.save(saved, tmp_path / "tensors.pth", **options)
        loaded = load_pth(tmp_path / "tensors.pth")
        for name, tensor in saved.items():
            expected = tensor.detach().numpy()
            assert loaded[name].dtype == expected.dtype and loaded[name].shape == expected.shape
            np.testing.assert_array_equal(loaded[name], expected, err_msg=name)


class RunsACommand:
    """Unpickling an instance would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("layout", ["zip", "legacy", "plain_pickle"])
def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, network, layout):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    payload = {"params": {**network.encoder.state_dict(), "evil": RunsACommand(marker)}}
    if layout == "plain_pickle":
        path.write_bytes(pickle.dumps(payload["params"]["evil"], protocol=2))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=layout == "zip")
    with pytest.raises(CheckpointFormatError, match=r"Refusing to load the global (posix|os)\.system"):
        tf_deepemd.load_official_checkpoint(tiny_backbone(), path)
    assert not marker.exists()


def test_files_that_are_not_checkpoints_are_refused(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(CheckpointFormatError):
        tf_deepemd.load_official_checkpoint(tiny_backbone(), junk)
    other_zip = tmp_path / "other.pth"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointFormatError, match="not a PyTorch checkpoint"):
        tf_deepemd.load_official_checkpoint(tiny_backbone(), other_zip)
    not_tensors = save({"layer1.0.conv1.weight": [1, 2]}, tmp_path / "list.pth")
    with pytest.raises(ValueError, match="not an official DeepEMD checkpoint"):
        tf_deepemd.load_official_checkpoint(tiny_backbone(), not_tensors)


def test_unsupported_tensor_types_are_named(tmp_path):
    torch.save({"params": {"x": torch.ones(2, dtype=torch.bfloat16)}}, tmp_path / "bf16.pth")
    with pytest.raises(CheckpointFormatError, match="Unsupported tensor type torch.BFloat16Storage"):
        load_pth(tmp_path / "bf16.pth")


def test_truncated_storage_is_refused(tmp_path, network):
    path = save(network.encoder.state_dict(), tmp_path / "full.pth")
    cut = tmp_path / "cut.pth"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(cut, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, data[:-4] if item.filename.endswith("/data/0") else data)
    with pytest.raises(CheckpointFormatError, match="truncated or damaged"):
        load_pth(cut)


def edited(network, prefix="module.encoder.", drop=None, add=None, reshape=None):
    state = {prefix + key: value for key, value in network.encoder.state_dict().items()}
    if drop:
        del state[drop]
    if add:
        state[add] = torch.zeros(3)
    if reshape:
        state[reshape] = state[reshape][:-1]
    return state


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(drop="module.encoder.layer3.0.bn2.running_var"),
         r"lacks the tensor 'module.encoder.layer3.0.bn2.running_var' for the model's "
         r"block3/bn2/moving_variance of shape \(8,\)"),
        (dict(add="module.encoder.layer2.0.conv4.weight"),
         r"Unexpected checkpoint tensor 'module.encoder.layer2.0.conv4.weight' of shape \(3,\)"),
        (dict(reshape="module.encoder.layer2.0.conv1.weight"),
         r"'module.encoder.layer2.0.conv1.weight' has shape \(5, 4, 3, 3\), but the model's "
         r"block2/conv1/kernel needs \(6, 4, 3, 3\) \(OIHW; the Keras kernel is HWIO "
         r"\(3, 3, 4, 6\)\)"),
        (dict(reshape="module.encoder.layer4.0.downsample.1.bias"),
         r"'module.encoder.layer4.0.downsample.1.bias' has shape \(9,\), but the model's "
         r"block4/shortcut_bn/beta needs \(10,\)"),
        (dict(prefix="model.encoder."),
         r"Unexpected checkpoint tensor 'model.encoder.layer1.0.conv1.weight'"),
    ],
    ids=["missing", "unexpected", "mis_shaped_kernel", "mis_shaped_batch_norm", "wrong_prefix"],
)
def test_mis_keyed_checkpoints_name_the_key_and_load_nothing(tmp_path, network, change, message):
    path = save(edited(network, **change), tmp_path / "edited.pth")
    backbone = tiny_backbone()
    backbone.build((None, 32, 32, 3))
    before = backbone_weights(backbone)
    with pytest.raises(ValueError, match=message):
        tf_deepemd.load_official_checkpoint(backbone, path)
    for got, want in zip(backbone_weights(backbone), before, strict=True):
        np.testing.assert_array_equal(got, want)


def test_two_keys_for_one_weight_are_refused(tmp_path, network):
    state = edited(network)
    state["encoder.layer1.0.conv1.weight"] = state["module.encoder.layer1.0.conv1.weight"]
    with pytest.raises(ValueError, match=r"'module.encoder.layer1.0.conv1.weight' and "
                                         r"'encoder.layer1.0.conv1.weight' both map"):
        tf_deepemd.load_official_checkpoint(tiny_backbone(), save(state, tmp_path / "twice.pth"))


def test_classifier_tensors(tmp_path, network, caplog):
    classifier_state = {f"fc.{key}": value for key, value in network.fc.state_dict().items()}
    with_fc = save({**network.encoder.state_dict(), **classifier_state}, tmp_path / "fc.pth")
    without_fc = save(network.encoder.state_dict(), tmp_path / "no_fc.pth")

    model = tf_deepemd.PretrainClassifier(tiny_backbone(), 3)
    tf_deepemd.load_official_checkpoint(model, with_fc)
    np.testing.assert_array_equal(model.classifier.kernel.numpy(), network.fc.weight.detach().numpy().T)
    np.testing.assert_array_equal(model.classifier.bias.numpy(), network.fc.bias.detach().numpy())

    with caplog.at_level(logging.INFO, logger="tf_deepemd.official.checkpoint"):
        deepemd = tf_deepemd.make_model(backbone="resnet12", backbone_options={"widths": WIDTHS})
        assert len(tf_deepemd.load_official_checkpoint(deepemd, with_fc)) == 80
        assert "['fc.bias', 'fc.weight'] ignored" in caplog.text
        tf_deepemd.load_official_checkpoint(tf_deepemd.PretrainClassifier(tiny_backbone(), 3), without_fc)
        assert "holds no classifier" in caplog.text

    with pytest.raises(ValueError, match=r"'fc.weight' has shape \(3, 10\), but the model's "
                                         r"classifier kernel needs \(5, 10\)"):
        tf_deepemd.load_official_checkpoint(tf_deepemd.PretrainClassifier(tiny_backbone(), 5), with_fc)


def test_only_resnet12_models_are_accepted(tmp_path, network):
    path = save(network.encoder.state_dict(), tmp_path / "encoder.pth")
    with pytest.raises(ValueError, match="backbone must be"):
        tf_deepemd.load_official_checkpoint(tf_deepemd.make_model(backbone="conv4"), path)
    with pytest.raises(ValueError, match="must be a DeepEMD model, a PretrainClassifier or a"):
        tf_deepemd.load_official_checkpoint(object(), path)
