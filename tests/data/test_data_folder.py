"""`image_folder` and `tiered_imagenet` readers (class-per-folder layouts)."""

import os

import numpy as np
import pytest

from tests.data.data_fixtures import FOLDER_SPLITS, class_colour, write_image
from tf_deepemd.data import load_split
from tf_deepemd.data.checked_split import prepare_split
from tf_deepemd.data.preprocessing import decode_image_file


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


# Symbolic links: a split made of links to class folders (or to images) reads
# like the real tree; a loop or a folder reached twice is a clear error.


def link_split_view(pool, view, names):
    """``view/<name>`` -> ``pool/<name>`` for each class name."""
    os.makedirs(view)
    for name in names:
        os.symlink(os.path.join(pool, name), os.path.join(view, name))


def first_pixel_colours(data):
    """The top-left pixel of the first image of each class."""
    firsts = [int(np.flatnonzero(data.labels == label)[0]) for label in range(data.num_classes)]
    return np.stack([np.asarray(decode_image_file(data.paths[i]))[0, 0] for i in firsts])


def test_symlinked_class_folders_are_classes(make_folder, tmp_path):
    pool = make_folder({f"class_{k}": (k, 2 + k) for k in range(5)})
    views = str(tmp_path / "views")
    link_split_view(pool, os.path.join(views, "train"), ["class_3", "class_0", "class_4"])
    link_split_view(pool, os.path.join(views, "val"), ["class_1", "class_2"])
    train = load_split("image_folder", "train", views)
    assert train.class_names == ("class_0", "class_3", "class_4")
    np.testing.assert_array_equal(train.class_sizes(), [2, 5, 6])
    assert all(path.startswith(os.path.join(views, "train")) for path in train.paths)
    expected = np.stack([class_colour(k) for k in (0, 3, 4)])
    np.testing.assert_allclose(first_pixel_colours(train), expected, atol=4)
    assert load_split("image_folder", "all", views).class_names == (
        "train/class_0", "train/class_3", "train/class_4", "val/class_1", "val/class_2")
    # tieredImageNet reads the same way.
    assert load_split("tiered_imagenet", "val", views).class_names == ("class_1", "class_2")


def test_symlinked_images_are_images(make_folder, tmp_path):
    pool = make_folder({"cat": (0, 3), "dog": (1, 2)})
    root = tmp_path / "linked"
    for name in ("cat", "dog"):
        os.makedirs(root / name)
        for image in os.listdir(os.path.join(pool, name)):
            os.symlink(os.path.join(pool, name, image), root / name / f"linked_{image}")
    data = load_split("image_folder", "all", str(root))
    assert data.class_names == ("cat", "dog")
    np.testing.assert_array_equal(data.class_sizes(), [3, 2])
    assert all(os.path.basename(path).startswith("linked_") for path in data.paths)


def test_a_dangling_image_link_is_an_unreadable_image_not_a_missing_one(make_folder):
    root = make_folder({"cat": (0, 3), "dog": (1, 3)})
    dangling = os.path.join(root, "cat", "gone.png")
    os.symlink(os.path.join(root, "nowhere.png"), dangling)
    assert dangling in load_split("image_folder", "all", root).paths
    with pytest.warns(UserWarning, match="skipped 1 unreadable image file"):
        data = prepare_split("image_folder", "all", root, 1, 2, on_bad_image="skip")
    assert list(data.skipped) == [dangling]


@pytest.mark.parametrize("reader", ["image_folder", "tiered_imagenet"])
def test_a_symlink_loop_is_an_error_not_an_endless_walk(make_folder, reader):
    root = make_folder({"train/a": (0, 2), "train/b/c": (1, 2)})
    os.symlink(os.path.join(root, "train"), os.path.join(root, "train", "b", "back"))
    with pytest.raises(ValueError, match=r"b/back is a symbolic link back to its ancestor .*train: .*loop"):
        load_split(reader, "train", root)


def test_one_folder_reached_twice_is_an_error(make_folder):
    root = make_folder({"train/a": (0, 2), "train/b": (1, 2)})
    os.symlink(os.path.join(root, "train", "a"), os.path.join(root, "train", "z"))
    with pytest.raises(ValueError, match=r"train/z and .*train/a are the same folder"):
        load_split("image_folder", "train", root)
