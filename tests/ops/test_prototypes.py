"""class_means and the support-label checks."""

import numpy as np
import pytest
import tensorflow as tf

from tf_deepemd.ops.checks import check_support_labels
from tf_deepemd.ops.prototypes import class_means


def test_class_means_any_shot_and_node_layout(rng):
    labels = np.array([2, 0, 1, 2, 0, 2], np.int32)
    support = rng.normal(size=(6, 4, 3))
    means = class_means(support, labels, 3).numpy()
    assert means.shape == (3, 4, 3)
    for k in range(3):
        np.testing.assert_allclose(means[k], support[labels == k].mean(0), atol=1e-12)


def test_check_support_labels_rejects_bad_labels():
    np.testing.assert_array_equal(check_support_labels([1, 0, 1], 2).numpy(), [1, 0, 1])
    with pytest.raises(tf.errors.InvalidArgumentError, match="< `way`"):
        check_support_labels([0, 3], 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match=">= 0"):
        check_support_labels([0, -1], 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="needs a support example"):
        check_support_labels([0, 0, 2], 3)


def test_class_means_rejects_float_labels():
    with pytest.raises(ValueError, match="support_labels"):
        class_means(tf.zeros([2, 3]), tf.zeros([2]), 2)


def test_class_means_of_a_batch_of_episodes(rng):
    labels = np.array([[2, 0, 1, 2, 0, 2], [0, 1, 2, 0, 1, 2]], np.int32)
    support = rng.normal(size=(2, 6, 4, 3))
    means = class_means(support, labels, 3).numpy()
    assert means.shape == (2, 3, 4, 3)
    for e in range(2):
        for k in range(3):
            np.testing.assert_allclose(means[e, k], support[e][labels[e] == k].mean(0), atol=1e-12)
    # Each episode needs every class, checked per episode.
    np.testing.assert_array_equal(check_support_labels(labels, 3).numpy(), labels)
    with pytest.raises(tf.errors.InvalidArgumentError, match="needs a support example"):
        check_support_labels(np.array([[0, 1, 2], [0, 0, 1]], np.int32), 3)
