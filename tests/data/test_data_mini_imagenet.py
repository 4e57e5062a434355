"""miniImageNet reader: images/ + split/{train,val,test}.csv."""

import os
import shutil

import numpy as np
import pytest

from tests.data.conftest import MINI_PLAN
from tf_deepemd.data import load_split


def test_reads_csv_with_classes_in_order_of_first_appearance(mini_root):
    data = load_split("mini_imagenet", "train", mini_root)
    assert data.class_names == tuple(MINI_PLAN["train"])  # n02... first, as listed
    np.testing.assert_array_equal(data.class_sizes(), [3, 3, 3, 3])
    for path, label in zip(data.paths, data.labels):
        assert os.path.basename(path).startswith(data.class_names[label])
    assert os.path.dirname(data.paths[0]) == os.path.join(mini_root, "images")


def test_official_parent_folder_is_accepted(mini_root, tmp_path):
    os.symlink(mini_root, tmp_path / "miniimagenet")
    assert load_split("mini_imagenet", "val", str(tmp_path)).class_names == tuple(MINI_PLAN["val"])


@pytest.fixture
def mini_copy(mini_root, tmp_path):
    root = tmp_path / "mini"
    shutil.copytree(mini_root, root)
    return root


def test_missing_pieces_name_the_layout(mini_copy, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"split/\{train,val,test\}.csv with the header 'filename,label'"):
        load_split("mini_imagenet", "train", str(tmp_path))  # no split/ folder
    (mini_copy / "split" / "test.csv").unlink()
    with pytest.raises(FileNotFoundError, match="no split file .*test.csv"):
        load_split("mini_imagenet", "test", str(mini_copy))
    victim = sorted(os.listdir(mini_copy / "images"))[0]
    (mini_copy / "images" / victim).unlink()
    with pytest.raises(FileNotFoundError, match=victim):
        load_split("mini_imagenet", "train", str(mini_copy))
    shutil.rmtree(mini_copy / "images")
    with pytest.raises(FileNotFoundError, match="images"):
        load_split("mini_imagenet", "val", str(mini_copy))


def test_malformed_csv_is_an_error_naming_file_and_line(mini_copy):
    csv_path = mini_copy / "split" / "val.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(lines[1:]) + "\n")  # header removed
    with pytest.raises(ValueError, match="header 'filename,label'"):
        load_split("mini_imagenet", "val", str(mini_copy))
    # The same file twice, with another label: never guess which is right.
    first_file = lines[1].split(",")[0]
    csv_path.write_text("\n".join(lines + [f"{first_file},n06000001"]) + "\n")
    with pytest.raises(ValueError, match=f"line {len(lines) + 1}: '{first_file}' is listed twice"):
        load_split("mini_imagenet", "val", str(mini_copy))
    csv_path.write_text("\n".join(lines + ["only_a_name.jpg"]) + "\n")
    with pytest.raises(ValueError, match=f"line {len(lines) + 1}"):
        load_split("mini_imagenet", "val", str(mini_copy))


def test_symlinked_images_folder_and_files_are_read(mini_root, tmp_path):
    root = tmp_path / "mini"
    (root / "images").mkdir(parents=True)
    os.symlink(os.path.join(mini_root, "split"), root / "split")
    for name in os.listdir(os.path.join(mini_root, "images")):
        os.symlink(os.path.join(mini_root, "images", name), root / "images" / name)
    data = load_split("mini_imagenet", "train", str(root))
    original = load_split("mini_imagenet", "train", mini_root)
    assert data.class_names == original.class_names
    np.testing.assert_array_equal(data.labels, original.labels)
    assert [os.path.basename(p) for p in data.paths] == [os.path.basename(p) for p in original.paths]
