"""Bad data: small classes and unreadable images never give a wrong label silently."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tests.data.data_fixtures import colour_to_class, mean_colours
from tf_deepemd.data import load_split, make_episode_dataset, make_pretrain_dataset
from tf_deepemd.data.checked_split import prepare_split


def test_small_class_is_an_error_naming_it(make_folder):
    root = make_folder({"big_a": (0, 5), "big_b": (1, 5), "small": (2, 2), "big_c": (3, 5)})
    with pytest.raises(ValueError, match=r"1 class\(es\) have fewer than 4 images.*'small' \(2 images\).*on_small_class='exclude'"):
        make_episode_dataset("image_folder", "all", root, way=2, shot=1, query=3)


def test_small_class_can_be_excluded_with_a_warning(make_folder):
    root = make_folder({"big_a": (0, 5), "big_b": (1, 5), "small": (2, 2), "big_c": (3, 5)})
    with pytest.warns(UserWarning, match="'small'.*left out"):
        episodes = make_episode_dataset(
            "image_folder", "all", root, way=3, shot=1, query=3, image_size=8, num_episodes=5,
            on_small_class="exclude",
        )
    normalization = load_split("image_folder", "all", root).normalization
    for (support, support_labels, query), query_labels in episodes:
        classes = colour_to_class(mean_colours(np.concatenate([support, query]), normalization))
        assert set(classes) == {0, 1, 3}  # every usable class, never the small one
    # Excluding may leave too few classes for `way`: a clear error.
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="after leaving out unusable classes"):
        make_episode_dataset("image_folder", "all", root, way=4, shot=1, query=3, on_small_class="exclude")


@pytest.fixture
def folder_with_bad_files(make_folder):
    """Three classes of 3 images; class b has a truncated JPEG, class c a text file named .png."""
    root = make_folder({"a": (0, 3), "b": (1, 2), "c": (2, 2)})
    good = tf.io.encode_jpeg(tf.fill([20, 20, 3], tf.constant(90, tf.uint8))).numpy()
    truncated = os.path.join(root, "b", "truncated.jpg")
    with open(truncated, "wb") as stream:
        stream.write(good[: len(good) // 2])
    not_an_image = os.path.join(root, "c", "notes.png")
    with open(not_an_image, "w") as stream:
        stream.write("this is not a PNG")
    return root, truncated, not_an_image


def test_unreadable_image_fails_the_iteration_naming_the_file(folder_with_bad_files):
    root, truncated, not_an_image = folder_with_bad_files
    # 3 images per class, all used in each 3-way episode: episode 0 reads both bad files.
    episodes = make_episode_dataset("image_folder", "all", root, way=3, shot=1, query=2, image_size=8, num_episodes=2)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Could not read or decode.*(truncated\.jpg|notes\.png)"):
        for _ in episodes:
            pass


def test_unreadable_image_in_the_last_episode_is_not_dropped_silently(make_folder):
    root = make_folder({"a": (0, 3), "b": (1, 2)})
    broken = os.path.join(root, "b", "broken.png")
    with open(broken, "wb") as stream:
        stream.write(b"\x89PNG\r\n\x1a\n")
    # One episode, using every image: the bad one makes its only batch short.
    episodes = make_episode_dataset("image_folder", "all", root, way=2, shot=1, query=2, image_size=8, num_episodes=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="broken.png"):
        list(episodes)


def test_unreadable_images_can_be_skipped_and_counted(folder_with_bad_files):
    root, truncated, not_an_image = folder_with_bad_files
    with pytest.warns(UserWarning, match="skipped 2 unreadable image file"):
        data = prepare_split("image_folder", "all", root, min_images_per_class=2, min_classes=3, on_bad_image="skip")
    assert sorted(data.skipped) == sorted([truncated, not_an_image])
    assert truncated not in data.paths and not_an_image not in data.paths
    np.testing.assert_array_equal(data.class_sizes(), [3, 2, 2])
    with pytest.warns(UserWarning, match="skipped 2"):
        episodes = make_episode_dataset(
            "image_folder", "all", root, way=3, shot=1, query=1, image_size=8, num_episodes=3, on_bad_image="skip",
        )
    assert len(list(episodes)) == 3
    # After skipping, a class may become too small for the episode shape.
    with pytest.warns(UserWarning, match="skipped 2"), pytest.raises(ValueError, match="'b' \\(2 images\\)"):
        make_episode_dataset("image_folder", "all", root, way=3, shot=1, query=2, on_bad_image="skip")


def test_unreadable_image_in_pretraining_is_named(folder_with_bad_files):
    root, truncated, not_an_image = folder_with_bad_files
    for training in (True, False):
        batches = make_pretrain_dataset(
            "image_folder", "all", root, batch_size=4, image_size=8, training=training, num_epochs=1 if training else None,
        )
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"truncated\.jpg|notes\.png"):
            list(batches)


def test_class_whose_images_are_all_unreadable_is_reported_not_dropped(make_folder):
    root = make_folder({"a": (0, 3), "b": (1, 3)})
    os.makedirs(os.path.join(root, "c"))
    for i in range(3):
        with open(os.path.join(root, "c", f"{i}.jpg"), "wb") as stream:
            stream.write(b"\xff\xd8 not really a JPEG")
    with pytest.warns(UserWarning, match="skipped 3"), pytest.raises(ValueError, match=r"'c' \(0 images\)"):
        make_episode_dataset("image_folder", "all", root, way=2, shot=1, query=1, on_bad_image="skip")
    with pytest.warns(UserWarning) as warnings:
        episodes = make_episode_dataset(
            "image_folder", "all", root, way=2, shot=1, query=1, image_size=8, num_episodes=2,
            on_bad_image="skip", on_small_class="exclude",
        )
    assert any("'c' (0 images)" in str(w.message) for w in warnings)
    normalization = load_split("image_folder", "all", root).normalization
    for (support, _, query), _ in episodes:
        assert set(colour_to_class(mean_colours(np.concatenate([support, query]), normalization))) == {0, 1}
