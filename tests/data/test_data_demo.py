"""The generated `demo` dataset."""

import os

import numpy as np
import pytest

from tests.data.data_fixtures import DEMO_OPTIONS
from tf_deepemd.data import dataset_info, load_split
from tf_deepemd.data import demo


def test_splits_have_64_16_20_disjoint_classes(demo_dir):
    seen = set()
    for split, expected in (("train", 64), ("val", 16), ("test", 20)):
        data = load_split("demo", split, demo_dir, **DEMO_OPTIONS)
        assert data.num_classes == expected == dataset_info("demo").num_classes[split]
        assert data.images.shape == (expected * 16, 32, 32, 3) and data.images.dtype == np.uint8
        np.testing.assert_array_equal(data.class_sizes(), 16)
        assert not seen & set(data.class_names)
        seen |= set(data.class_names)
    # Val/test use the train statistics.
    assert load_split("demo", "test", demo_dir, **DEMO_OPTIONS).normalization == data.normalization


def test_generation_is_deterministic_and_depends_on_the_seed():
    first = demo.generate_images(3, 24, seed=5)
    np.testing.assert_array_equal(first, demo.generate_images(3, 24, seed=5))
    assert first.shape == (100, 3, 24, 24, 3)
    assert not np.array_equal(first, demo.generate_images(3, 24, seed=6))


def test_classes_differ_and_images_within_a_class_vary(demo_dir):
    images = load_split("demo", "train", demo_dir, **DEMO_OPTIONS).images.reshape(64, 16, 32, 32, 3)
    images = images.astype(np.float32)
    # Object position, scale and clutter change from image to image...
    assert np.abs(images[:, 0] - images[:, 1]).mean() > 20
    # ...and the class signal is the object: per-class mean images differ.
    class_means = images.mean(axis=1)
    assert np.abs(class_means[0] - class_means[1]).mean() > 5


def test_cache_is_written_atomically_and_reused(tmp_path):
    options = {"images_per_class": 2, "generated_size": 16, "generation_seed": 3}
    demo.load_or_generate.cache_clear()
    data = load_split("demo", "val", str(tmp_path), **options)
    name = demo.cache_file_name(2, 16, 3)
    assert sorted(os.listdir(tmp_path)) == [name]  # no temporary file left behind
    path = tmp_path / name
    stamp = path.stat().st_mtime_ns
    demo.load_or_generate.cache_clear()
    again = load_split("demo", "val", str(tmp_path), **options)
    assert path.stat().st_mtime_ns == stamp  # read back, not generated again
    np.testing.assert_array_equal(again.images, data.images)
    # A damaged cache file is replaced by a fresh generation.
    path.write_bytes(b"truncated")
    demo.load_or_generate.cache_clear()
    regenerated = load_split("demo", "val", str(tmp_path), **options)
    np.testing.assert_array_equal(regenerated.images, data.images)


def test_bad_parameters_are_named(tmp_path):
    with pytest.raises(ValueError, match="`images_per_class`"):
        load_split("demo", "train", str(tmp_path), images_per_class=0)
    with pytest.raises(ValueError, match="`generated_size`"):
        load_split("demo", "train", str(tmp_path), generated_size=4)
    with pytest.raises(ValueError, match="Unknown option.*'colour'.*images_per_class"):
        load_split("demo", "train", str(tmp_path), colour="red")
