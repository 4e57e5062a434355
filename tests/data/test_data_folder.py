"""`image_folder` and `tiered_imagenet` readers (class-per-folder layouts)."""

import os

import numpy as np
import pytest

from tests.data.data_fixtures import FOLDER_SPLITS, write_image
from tf_deepemd.data import load_split


def test_reads_split_folders_with_sorted_classes_and_files(folder_root):
    data = load_split("image_folder", "train", folder_root)
    assert data.class_names == tuple(sorted(FOLDER_SPLITS["train"]))
    np.testing.assert_array_equal(data.class_sizes(), [4, 5, 6, 7, 8, 9])
    assert data.num_images == 39 and not data.in_memory
    for path, label in zip(data.paths, data.labels):
        assert os.path.basename(os.path.dirname(path)) == data.class_names[label]
    assert list(data.paths) == sorted(data.paths)


def test_all_reads_every_leaf_folder_as_a_class(folder_root, make_folder):
    data = load_split("image_folder", "all", folder_root)
    assert data.num_classes == 12
    assert "val/class_6" in data.class_names
    nested = make_folder({"animals/cat": (0, 2), "animals/dog": (1, 3), "car": (2, 2)})
    data = load_split("image_folder", "all", nested)
    assert data.class_names == ("animals/cat", "animals/dog", "car")
    np.testing.assert_array_equal(data.class_sizes(), [2, 3, 2])


def test_images_next_to_subfolders_are_an_error(make_folder):
    root = make_folder({"animals/cat": (0, 2)})
    write_image(os.path.join(root, "animals", "stray.png"), np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="stray.png.*next to sub-folders"):
        load_split("image_folder", "all", root)


def test_missing_folders_name_the_layout(folder_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"<data_dir>/<split>/<class>/<images>"):
        load_split("image_folder", "holdout", folder_root)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_split("image_folder", "train", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="`data_dir` is required"):
        load_split("image_folder", "train")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no class folders"):
        load_split("image_folder", "all", str(empty))


def test_tiered_imagenet_reads_the_split_tree(folder_root, tmp_path):
    data = load_split("tiered_imagenet", "val", folder_root)
    assert data.dataset == "tiered_imagenet" and data.class_names == ("class_6", "class_7", "class_8")
    # The official tarball unpacks to tieredimagenet/.
    os.symlink(folder_root, tmp_path / "tieredimagenet")
    assert load_split("tiered_imagenet", "test", str(tmp_path)).num_classes == 3
    with pytest.raises(FileNotFoundError, match=r"\{train,val,test\}/<class>/<images>"):
        load_split("tiered_imagenet", "train", str(tmp_path / "tieredimagenet" / "train"))
