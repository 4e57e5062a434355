"""The episode sampler: plain NumPy, no images."""

import numpy as np
import pytest

from tf_deepemd.data.sampling import EpisodeShape, sample_episode, sample_episodes


def classes_of_sizes(sizes):
    """indices_by_class for classes of the given sizes, indices in one global range."""
    bounds = np.cumsum([0] + list(sizes))
    return [np.arange(bounds[c], bounds[c + 1]) for c in range(len(sizes))]


def test_episodes_have_distinct_classes_and_images_of_those_classes(rng):
    sizes = rng.integers(6, 30, size=12)
    indices_by_class = classes_of_sizes(sizes)
    class_of_index = np.repeat(np.arange(12), sizes)
    shape = EpisodeShape(way=5, shot=2, query=3)
    classes, images = sample_episodes(indices_by_class, shape, num_episodes=50, seed=int(rng.integers(1000)))
    assert classes.shape == (50, 5) and images.shape == (50, 25)
    for episode_classes, episode_images in zip(classes, images):
        assert len(set(episode_classes)) == 5
        assert len(set(episode_images)) == 25
        grid = episode_images.reshape(shape.images_per_class, shape.way)  # interleaved
        # Column c holds images of episode class c only: label = position.
        np.testing.assert_array_equal(class_of_index[grid], np.broadcast_to(episode_classes, grid.shape))


def test_labels_are_interleaved_positions():
    shape = EpisodeShape(way=3, shot=2, query=4)
    np.testing.assert_array_equal(shape.support_labels(), [0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(shape.query_labels(), [0, 1, 2] * 4)
    assert shape.support_labels().dtype == np.int32


def test_same_seed_same_episodes_and_prefix_property():
    indices_by_class = classes_of_sizes([20] * 10)
    shape = EpisodeShape(5, 1, 15)
    first = sample_episodes(indices_by_class, shape, 30, seed=7)
    again = sample_episodes(indices_by_class, shape, 30, seed=7)
    longer = sample_episodes(indices_by_class, shape, 60, seed=7)
    other = sample_episodes(indices_by_class, shape, 30, seed=8)
    np.testing.assert_array_equal(first[1], again[1])
    np.testing.assert_array_equal(first[1], longer[1][:30])
    assert not np.array_equal(first[1], other[1])
    # Episode i can be drawn on its own.
    classes, grid = sample_episode(indices_by_class, shape, seed=7, episode_index=12)
    np.testing.assert_array_equal(grid.reshape(-1), first[1][12])
    np.testing.assert_array_equal(classes, first[0][12])


def test_classes_and_images_are_drawn_uniformly():
    indices_by_class = classes_of_sizes([10] * 8)
    classes, images = sample_episodes(indices_by_class, EpisodeShape(4, 1, 1), 4000, seed=0)
    class_counts = np.bincount(classes.reshape(-1), minlength=8)
    # Each class is expected in half of the episodes: 2000 +- 3 sigma (~95).
    assert np.all(np.abs(class_counts - 2000) < 100), class_counts
    image_counts = np.bincount(images.reshape(-1), minlength=80)
    # Each image: expected 4000 * 4/8 * 2/10 = 400 picks, sigma ~19.
    assert np.all(np.abs(image_counts - 400) < 80), image_counts
    # All orders of the chosen classes occur (the label of a class is random).
    first_label_counts = np.bincount(classes[:, 0], minlength=8)
    assert np.all(first_label_counts > 400)


def test_errors_name_the_problem():
    indices_by_class = classes_of_sizes([5, 5, 3])
    with pytest.raises(ValueError, match="`way`=4 is larger than the number of classes"):
        sample_episodes(indices_by_class, EpisodeShape(4, 1, 1), 1, seed=0)
    with pytest.raises(ValueError, match=r"fewer than shot\+query=5 images: class indices \[2\]"):
        sample_episodes(indices_by_class, EpisodeShape(2, 1, 4), 1, seed=0)
    with pytest.raises(ValueError, match="`seed`"):
        sample_episodes(indices_by_class, EpisodeShape(2, 1, 1), 1, seed=-1)
    with pytest.raises(ValueError, match="`num_episodes`"):
        sample_episodes(indices_by_class, EpisodeShape(2, 1, 1), 0, seed=0)
    for bad in (0, 2.0, True, "5"):
        with pytest.raises(ValueError, match="`shot`"):
            EpisodeShape(5, bad, 15)
