"""The dataset registry and its gin registration."""

import gin
import numpy as np
import pytest

from tests.data.data_fixtures import DEMO_OPTIONS
from tf_deepemd import data as data_api
from tf_deepemd.data import DatasetInfo, ImageSplit, dataset_info, list_datasets, load_split


def test_known_datasets_and_class_counts():
    assert set(list_datasets()) >= {
        "mini_imagenet", "tiered_imagenet", "cub", "cifar_fs", "fc100", "image_folder", "demo",
    }
    assert dataset_info("cifar_fs").num_classes == {"train": 64, "val": 16, "test": 20}
    assert dataset_info("fc100").num_classes == {"train": 60, "val": 20, "test": 20}
    assert dataset_info("cub").num_classes == {"train": 100, "val": 50, "test": 50}
    assert "351/97/160" in dataset_info("tiered_imagenet").layout
    assert "source" in dataset_info("cifar_fs").options()


def test_unknown_names_and_splits_list_the_choices():
    with pytest.raises(ValueError, match="Unknown dataset `name` 'omniglot'; known datasets: cifar_fs, cub, demo"):
        load_split("omniglot", "train")
    with pytest.raises(ValueError, match=r"`split` 'dev' is not a split of 'cifar_fs'; expected \('train', 'val', 'test'\)"):
        load_split("cifar_fs", "dev")


def test_register_a_custom_reader():
    def read_tiny(split, data_dir, size=2):
        return ImageSplit(
            dataset="tiny", split=split, class_names=("a", "b"), labels=np.arange(2),
            normalization=data_api.FEAT_NORMALIZATION,
            images=np.full((2, size, size, 3), 9, np.uint8),
        )

    data_api.register_dataset(DatasetInfo("tiny_test_set", read_tiny, ("train",), None, "memory"))
    assert load_split("tiny_test_set", "train", size=3).images.shape == (2, 3, 3, 3)
    with pytest.raises(ValueError, match="already registered"):
        data_api.register_dataset(DatasetInfo("tiny_test_set", read_tiny, ("train",), None, "memory"))


def test_gin_binds_the_pipeline_factories(demo_dir):
    gin.clear_config()
    try:
        gin.parse_config([
            "tf_deepemd.data.make_episode_dataset.way = 3",
            "tf_deepemd.data.make_episode_dataset.query = 2",
            "tf_deepemd.data.make_episode_dataset.num_episodes = 2",
            "tf_deepemd.data.make_pretrain_dataset.batch_size = 8",
        ])
        make_episodes = gin.get_configurable("tf_deepemd.data.make_episode_dataset")
        episodes = make_episodes("demo", "val", demo_dir, image_size=16, **DEMO_OPTIONS)
        (support, support_labels, query), query_labels = episodes.element_spec
        assert support.shape == (3, 16, 16, 3) and query_labels.shape == (6,)
        make_pretrain = gin.get_configurable("tf_deepemd.data.make_pretrain_dataset")
        batches = make_pretrain("demo", "val", demo_dir, image_size=16, **DEMO_OPTIONS)
        assert batches.element_spec[0].shape == (8, 16, 16, 3)
    finally:
        gin.clear_config()
