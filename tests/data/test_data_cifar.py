"""CIFAR-FS and FC100 from the CIFAR-100 python version and from TFDS."""

import json
import os
import shutil
from importlib import resources

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.data.data_fixtures import CIFAR_LABELS
from tf_deepemd.data import CIFAR_FS_NORMALIZATION, FEAT_NORMALIZATION, load_split
from tf_deepemd.data.cifar import load_cifar100

SPLITS = ("train", "val", "test")


def shipped(folder, split):
    path = resources.files("tf_deepemd.data").joinpath("splits", folder, f"{split}.json")
    return json.loads(path.read_text())


def test_shipped_splits_have_the_standard_sizes_and_are_disjoint():
    fine_to_coarse = CIFAR_LABELS["fine_to_coarse"]
    fine_names, coarse_names = CIFAR_LABELS["fine_label_names"], CIFAR_LABELS["coarse_label_names"]
    pairs = {split: shipped("cifar-fs", split) for split in SPLITS}
    assert [len(pairs[s]) for s in SPLITS] == [64, 16, 20]
    fine = [f for s in SPLITS for _, f in pairs[s]]
    assert sorted(fine) == sorted(fine_names)  # all 100, each once
    for coarse, f in pairs["train"] + pairs["val"] + pairs["test"]:
        assert coarse_names[fine_to_coarse[fine_names.index(f)]] == coarse
    superclasses = {split: shipped("fc100", split) for split in SPLITS}
    assert [len(superclasses[s]) for s in SPLITS] == [12, 4, 4]
    assert sorted(c for s in SPLITS for c in superclasses[s]) == sorted(coarse_names)


@pytest.mark.parametrize("layout", ["archive_folder", "archive_path", "extracted_folder", "extracted_path"])
def test_python_version_layouts_give_the_same_images(cifar_python_dirs, layout):
    archived, extracted = cifar_python_dirs
    data_dir = {
        "archive_folder": archived,
        "archive_path": os.path.join(archived, "cifar-100-python.tar.gz"),
        "extracted_folder": extracted,
        "extracted_path": os.path.join(extracted, "cifar-100-python"),
    }[layout]
    cifar = load_cifar100(data_dir)
    assert cifar.images.shape == (600, 32, 32, 3) and cifar.images.dtype == np.uint8
    # Channel-major rows are transposed correctly: R = fine label, G = 255 - R.
    np.testing.assert_array_equal(cifar.images[:, 5, 7, 0], cifar.fine_labels)
    np.testing.assert_array_equal(cifar.images[:, 31, 0, 1], 255 - cifar.fine_labels)
    assert cifar.fine_names == CIFAR_LABELS["fine_label_names"]


def test_cifar_fs_pools_train_and_test_with_its_normalisation(cifar_python_dirs):
    archived, _ = cifar_python_dirs
    counts = {}
    names = set()
    for split in SPLITS:
        data = load_split("cifar_fs", split, archived)
        assert data.normalization == CIFAR_FS_NORMALIZATION and data.in_memory
        assert data.class_names == tuple(f for _, f in shipped("cifar-fs", split))
        # 4 train + 2 test images of the fake per class: both parts are pooled.
        np.testing.assert_array_equal(data.class_sizes(), 6)
        # Every image carries its own fine class: R channel = fine label.
        fine_of_label = np.array([CIFAR_LABELS["fine_label_names"].index(n) for n in data.class_names])
        np.testing.assert_array_equal(data.images[:, 0, 0, 0], fine_of_label[data.labels])
        counts[split] = data.num_classes
        names |= set(data.class_names)
    assert counts == {"train": 64, "val": 16, "test": 20} and len(names) == 100


def test_fc100_takes_all_fine_classes_of_its_superclasses(cifar_python_dirs):
    archived, _ = cifar_python_dirs
    seen = set()
    for split, expected in zip(SPLITS, (60, 20, 20)):
        data = load_split("fc100", split, archived)
        assert data.num_classes == expected and data.normalization == FEAT_NORMALIZATION
        coarse = {
            CIFAR_LABELS["coarse_label_names"][
                CIFAR_LABELS["fine_to_coarse"][CIFAR_LABELS["fine_label_names"].index(name)]
            ]
            for name in data.class_names
        }
        assert coarse == set(shipped("fc100", split))
        assert not seen & set(data.class_names)
        seen |= set(data.class_names)
    assert len(seen) == 100


def test_bad_python_files_are_named(cifar_python_dirs, tmp_path):
    _, extracted = cifar_python_dirs
    broken = tmp_path / "cifar-100-python"
    shutil.copytree(os.path.join(extracted, "cifar-100-python"), broken)
    (broken / "train").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"cifar-100-python/train is not a readable pickle"):
        load_cifar100(str(tmp_path))
    (broken / "train").unlink()
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python/train is missing"):
        load_cifar100(str(tmp_path))
    truncated = tmp_path / "short" / "cifar-100-python.tar.gz"
    truncated.parent.mkdir()
    truncated.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ValueError, match="cannot read the archive"):
        load_cifar100(str(truncated.parent))


def test_missing_data_names_both_sources(tmp_path):
    # No python version here and no prepared TFDS data: a fast, clear error.
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.tar.gz.*TFDS 'cifar100'"):
        load_split("cifar_fs", "val", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no cifar-100-python.tar.gz"):
        load_split("fc100", "val", str(tmp_path), source="python")
    with pytest.raises(ValueError, match="`source`"):
        load_split("fc100", "val", str(tmp_path), source="internet")


def test_tfds_source(tmp_path):
    # TFDS' own mock data has random labels; serve a controlled CIFAR-100.
    fine = np.repeat(np.arange(100), 3)

    def as_dataset(self, *args, **kwargs):
        images = np.zeros((len(fine), 32, 32, 3), np.uint8)
        images[..., 0] = fine[:, None, None]
        features = {
            "id": tf.constant([f"id_{i}" for i in range(len(fine))]),
            "image": images,
            "label": fine,
            "coarse_label": np.array(CIFAR_LABELS["fine_to_coarse"])[fine],
        }
        return tf.data.Dataset.from_tensor_slices(features)

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        data = load_split("cifar_fs", "test", str(tmp_path), source="tfds")
    assert data.num_classes == 20
    np.testing.assert_array_equal(data.class_sizes(), 3)
    fine_of_label = np.array([CIFAR_LABELS["fine_label_names"].index(n) for n in data.class_names])
    np.testing.assert_array_equal(data.images[:, 0, 0, 0], fine_of_label[data.labels])
