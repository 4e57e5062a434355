"""`make_episode_dataset`: shapes, labels, determinism, class disjointness."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tests.data.data_fixtures import DEMO_OPTIONS, FOLDER_SPLITS, colour_to_class, mean_colours
from tf_deepemd.data import EpisodeShape, load_split, make_episode_dataset, sample_episodes
from tf_deepemd.data.preprocessing import preprocess_image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def demo_episodes(demo_dir, **kwargs):
    arguments = dict(way=5, shot=2, query=3, image_size=24, num_episodes=4)
    arguments.update(kwargs)
    return make_episode_dataset("demo", "test", demo_dir, **arguments, **DEMO_OPTIONS)


def test_element_spec_shapes_dtypes_and_labels(demo_dir):
    episodes = demo_episodes(demo_dir)
    (support, support_labels, query), query_labels = episodes.element_spec
    assert support == tf.TensorSpec([10, 24, 24, 3], tf.float32)
    assert query == tf.TensorSpec([15, 24, 24, 3], tf.float32)
    assert support_labels == tf.TensorSpec([10], tf.int32)
    assert query_labels == tf.TensorSpec([15], tf.int32)
    assert int(episodes.cardinality()) == 4
    # In order, and untuned: deleting an autotuned iterator can wait up to a minute.
    assert episodes.options().deterministic and episodes.options().autotune.enabled is False
    count = 0
    for (support, support_labels, query), query_labels in episodes:
        np.testing.assert_array_equal(support_labels, [0, 1, 2, 3, 4] * 2)
        np.testing.assert_array_equal(query_labels, [0, 1, 2, 3, 4] * 3)
        assert np.isfinite(support.numpy()).all() and np.isfinite(query.numpy()).all()
        count += 1
    assert count == 4


def test_episodes_hold_exactly_the_sampled_images_preprocessed(demo_dir):
    """Reference: sample in NumPy, transform each image alone, compare."""
    shape = EpisodeShape(way=5, shot=2, query=3)
    data = load_split("demo", "test", demo_dir, **DEMO_OPTIONS)
    _, indices = sample_episodes(data.indices_by_class(), shape, num_episodes=2, seed=11)
    episodes = list(demo_episodes(demo_dir, num_episodes=2, seed=11))
    for episode, episode_indices in zip(episodes, indices):
        (support, _, query), _ = episode
        produced = np.concatenate([support.numpy(), query.numpy()])
        expected = np.stack([
            preprocess_image(tf.constant(data.images[i]), 24, False, data.normalization).numpy()
            for i in episode_indices
        ])
        np.testing.assert_allclose(produced, expected, atol=1e-5)


def test_labels_match_the_classes_of_the_images(folder_root):
    """Every image of label k comes from the same class, a different one per k."""
    split_classes = {k for k, _ in FOLDER_SPLITS["train"].values()}
    episodes = make_episode_dataset(
        "image_folder", "train", folder_root, way=4, shot=2, query=2, image_size=12, num_episodes=6, seed=3,
    )
    normalization = load_split("image_folder", "train", folder_root).normalization
    seen_classes = set()
    for (support, support_labels, query), query_labels in episodes:
        images = np.concatenate([support.numpy(), query.numpy()])
        labels = np.concatenate([support_labels.numpy(), query_labels.numpy()])
        classes = colour_to_class(mean_colours(images, normalization))
        class_of_label = {}
        for label, cls in zip(labels, classes):
            assert class_of_label.setdefault(label, cls) == cls
        assert len(set(class_of_label.values())) == 4
        assert set(class_of_label.values()) <= split_classes
        seen_classes |= set(class_of_label.values())
    assert len(seen_classes) > 4  # episodes vary


def test_eval_episodes_are_reproducible_and_seeded(demo_dir):
    def first(seed, training=False):
        (support, _, query), _ = next(iter(demo_episodes(demo_dir, seed=seed, training=training)))
        return np.concatenate([support.numpy(), query.numpy()])

    np.testing.assert_array_equal(first(1), first(1))
    assert not np.array_equal(first(1), first(2))
    # Training augmentation is seeded too: same seed, same crops and flips.
    np.testing.assert_array_equal(first(1, True), first(1, True))
    assert not np.allclose(first(1, True), first(1))


def test_splits_have_disjoint_classes(demo_dir, folder_root, mini_root, cifar_python_dirs):
    archived, _ = cifar_python_dirs
    cases = {
        "demo": (demo_dir, DEMO_OPTIONS),
        "image_folder": (folder_root, {}),
        "mini_imagenet": (mini_root, {}),
        "cifar_fs": (archived, {}),
        "fc100": (archived, {}),
    }
    for name, (data_dir, options) in cases.items():
        names = [set(load_split(name, split, data_dir, **options).class_names) for split in ("train", "val", "test")]
        assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2]), name


def test_way_above_the_number_of_classes_fails_before_reading(tmp_path, folder_root):
    # cifar_fs/val has 16 classes: known without data, so no FileNotFoundError
    # for this empty folder, the argument error comes first.
    with pytest.raises(ValueError, match=r"`way`=17 is larger than the number of classes of cifar_fs/val \(16\)"):
        make_episode_dataset("cifar_fs", "val", str(tmp_path), way=17)
    with pytest.raises(ValueError, match=r"`way`=7 is larger than the number of classes of image_folder/train \(6\)"):
        make_episode_dataset("image_folder", "train", folder_root, way=7, shot=1, query=1)


@pytest.mark.parametrize(
    "argument, value",
    [("way", 0), ("shot", 1.5), ("query", -1), ("image_size", 0), ("seed", -3), ("num_episodes", 0),
     ("on_small_class", "ignore"), ("on_bad_image", "warn")],
)
def test_bad_arguments_are_named(demo_dir, argument, value):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        make_episode_dataset("demo", "test", demo_dir, **{argument: value}, **DEMO_OPTIONS)


SUBPROCESS_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, {repo!r})
    from tests.data.test_data_episodes import digest
    from tf_deepemd.data import make_episode_dataset

    cases = json.loads(sys.argv[1])
    print(json.dumps([digest(make_episode_dataset(*args, **kwargs)) for args, kwargs in cases]))
    """
)


def digest(dataset):
    """sha256 of every tensor of every episode (also run in the subprocess)."""
    hasher = hashlib.sha256()
    for (support, support_labels, query), query_labels in dataset:
        for tensor in (support, support_labels, query, query_labels):
            hasher.update(tensor.numpy().tobytes())
    return hasher.hexdigest()


def test_same_episodes_in_another_process(demo_dir, folder_root):
    cases = [
        (["demo", "val", demo_dir], dict(way=5, shot=1, query=4, image_size=20, num_episodes=3, seed=5, **DEMO_OPTIONS)),
        (["demo", "val", demo_dir], dict(way=5, shot=1, query=4, image_size=20, num_episodes=3, seed=5,
                                         training=True, **DEMO_OPTIONS)),
        (["image_folder", "train", folder_root], dict(way=3, shot=2, query=2, image_size=16, num_episodes=3,
                                                      seed=9, training=True)),
    ]
    here = [digest(make_episode_dataset(*args, **kwargs)) for args, kwargs in cases]
    assert len(set(here)) == 3
    result = subprocess.run(
        [sys.executable, "-c", SUBPROCESS_SCRIPT.format(repo=REPO), json.dumps(cases)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    there = json.loads(result.stdout.strip().splitlines()[-1])
    assert there == here


def test_episodes_feed_model_fit_and_evaluate(demo_dir):
    import keras

    class TinyProtoNet(keras.Model):
        """Logits = -squared distance of each query to its class prototype."""

        def __init__(self):
            super().__init__()
            self.embed = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(8)])

        def call(self, inputs):
            support, support_labels, query = inputs
            prototypes = tf.math.unsorted_segment_mean(self.embed(support), support_labels, 5)
            queries = self.embed(query)
            return -tf.reduce_sum(tf.square(queries[:, None] - prototypes[None]), axis=-1)

    model = TinyProtoNet()
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(demo_episodes(demo_dir, training=True), epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    loss, accuracy = model.evaluate(demo_episodes(demo_dir), verbose=0)
    assert np.isfinite(loss) and 0.0 <= accuracy <= 1.0
