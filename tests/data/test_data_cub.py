"""CUB-200-2011 reader and the shipped 100/50/50 split."""

import json
import os
from importlib import resources

import numpy as np
import pytest

from tf_deepemd.data import load_split


def shipped(folder, split):
    path = resources.files("tf_deepemd.data").joinpath("splits", folder, f"{split}.json")
    return json.loads(path.read_text())


def test_shipped_split_has_100_50_50_disjoint_classes():
    splits = {split: shipped("cub", split) for split in ("train", "val", "test")}
    assert {split: len(classes) for split, classes in splits.items()} == {"train": 100, "val": 50, "test": 50}
    every = [name for classes in splits.values() for name in classes]
    assert len(set(every)) == 200
    assert sorted(int(name.split(".")[0]) for name in every) == list(range(1, 201))


def test_reads_the_official_tree_in_split_order(cub_root):
    data = load_split("cub", "val", cub_root)
    assert data.class_names == tuple(shipped("cub", "val"))
    np.testing.assert_array_equal(data.class_sizes(), np.full(50, 3))
    for path, label in zip(data.paths, data.labels):
        assert os.path.basename(os.path.dirname(path)) == data.class_names[label]
    # data_dir may also be the CUB_200_2011 folder itself.
    inner = load_split("cub", "val", os.path.join(cub_root, "CUB_200_2011"))
    assert inner.paths == data.paths


def test_missing_class_folders_are_named(cub_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"100 class folder\(s\) of the train split are missing.*003.Sooty_Albatross"):
        load_split("cub", "train", cub_root)
    with pytest.raises(FileNotFoundError, match=r"CUB_200_2011/images/<class folder>/<image>"):
        load_split("cub", "val", str(tmp_path))


def test_symlinked_class_folders_and_images_are_read(cub_root, tmp_path):
    """A CUB tree whose class folders are links, one of them to a folder of links."""
    images = os.path.join(cub_root, "CUB_200_2011", "images")
    linked = tmp_path / "CUB_200_2011" / "images"
    linked.mkdir(parents=True)
    names = shipped("cub", "val")
    for name in names[1:]:
        os.symlink(os.path.join(images, name), linked / name)
    links_to_images = tmp_path / "link_folder"
    links_to_images.mkdir()
    for image in os.listdir(os.path.join(images, names[0])):
        os.symlink(os.path.join(images, names[0], image), links_to_images / image)
    os.symlink(links_to_images, linked / names[0])
    data = load_split("cub", "val", str(tmp_path))
    assert data.class_names == tuple(names)
    np.testing.assert_array_equal(data.class_sizes(), np.full(50, 3))
    assert [os.path.basename(path) for path in data.paths] == [
        os.path.basename(path) for path in load_split("cub", "val", cub_root).paths
    ]
