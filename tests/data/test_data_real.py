"""Opt-in checks on the real CIFAR-100 in the `shared/data` folder beside the repository.

Run with ``TF_DEEPEMD_REAL_DATA=1 pytest tests/data/test_data_real.py``;
skipped otherwise, and when the data is absent (``TF_DEEPEMD_SHARED_DATA``
may point elsewhere).
"""

import os

import numpy as np
import pytest

from tf_deepemd.data import load_split, make_episode_dataset

SHARED_DATA = os.environ.get(
    "TF_DEEPEMD_SHARED_DATA",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data"),
)
ARCHIVE = os.path.join(SHARED_DATA, "cifar-100-python.tar.gz")

pytestmark = [
    pytest.mark.real_data,
    pytest.mark.skipif(os.environ.get("TF_DEEPEMD_REAL_DATA") != "1", reason="set TF_DEEPEMD_REAL_DATA=1 to run"),
    pytest.mark.skipif(not os.path.isfile(ARCHIVE), reason=f"no {ARCHIVE}"),
]


@pytest.mark.parametrize("name, counts", [("cifar_fs", (64, 16, 20)), ("fc100", (60, 20, 20))])
def test_cifar_benchmarks_have_100_classes_of_600_images(name, counts):
    all_names = set()
    for split, expected in zip(("train", "val", "test"), counts):
        data = load_split(name, split, SHARED_DATA)
        assert data.num_classes == expected
        np.testing.assert_array_equal(data.class_sizes(), 600)
        assert data.images.shape == (expected * 600, 32, 32, 3)
        assert not all_names & set(data.class_names)
        all_names |= set(data.class_names)
    assert len(all_names) == 100
    (support, _, query), _ = next(iter(make_episode_dataset(name, "test", SHARED_DATA, image_size=32, num_episodes=1)))
    assert support.shape == (5, 32, 32, 3) and query.shape == (75, 32, 32, 3)
