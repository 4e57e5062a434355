"""`make_pretrain_dataset`: shuffled, augmented batches over all classes."""

import numpy as np
import pytest
import tensorflow as tf

from tests.data.data_fixtures import DEMO_OPTIONS, colour_to_class, mean_colours
from tf_deepemd.data import load_split, make_pretrain_dataset


def pretrain(demo_dir, **kwargs):
    arguments = dict(batch_size=32, image_size=16, seed=0)
    arguments.update(kwargs)
    return make_pretrain_dataset("demo", "val", demo_dir, **arguments, **DEMO_OPTIONS)


def test_spec_and_attributes(demo_dir):
    batches = pretrain(demo_dir)
    assert batches.element_spec == (
        tf.TensorSpec([32, 16, 16, 3], tf.float32), tf.TensorSpec([32], tf.int32),
    )
    assert batches.num_classes == 16 and batches.num_images == 256 and batches.steps_per_epoch == 8
    assert len(batches.class_names) == 16
    assert batches.options().deterministic and batches.options().autotune.enabled is False


def test_each_epoch_visits_every_image_once_in_a_new_order(demo_dir):
    batches = pretrain(demo_dir, num_epochs=2)
    labels = np.stack([y.numpy() for _, y in batches])
    assert labels.shape == (16, 32)  # 2 epochs x 8 batches
    first, second = labels[:8].reshape(-1), labels[8:].reshape(-1)
    # 16 images of each of the 16 classes per epoch; 0..num_classes-1.
    np.testing.assert_array_equal(np.bincount(first, minlength=16), 16)
    np.testing.assert_array_equal(np.bincount(second, minlength=16), 16)
    assert not np.array_equal(first, second)
    assert len(set(first[:32].tolist())) > 8  # shuffled across classes, not class by class


def test_training_stream_is_endless_and_reproducible(demo_dir):
    def take(seed, count=10):
        return [(x.numpy(), y.numpy()) for x, y in pretrain(demo_dir, seed=seed).take(count)]

    first = take(4)
    assert len(first) == 10  # more than one epoch of 8 batches
    for (x1, y1), (x2, y2) in zip(first, take(4)):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(first[0][1], take(5, 1)[0][1])


def test_evaluation_pass_is_in_order_with_a_final_partial_batch(folder_root):
    batches = make_pretrain_dataset("image_folder", "train", folder_root, batch_size=16, image_size=8, training=False)
    data = load_split("image_folder", "train", folder_root)
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in batches])
    assert [len(y) for y in labels] == [16, 16, 7] and batches.steps_per_epoch == 3
    labels = np.concatenate(labels)
    np.testing.assert_array_equal(labels, data.labels)
    # The label is the class of the image (colour ids 0-5 = labels 0-5 here).
    classes = colour_to_class(mean_colours(np.concatenate(images), data.normalization))
    np.testing.assert_array_equal(classes, labels)


def test_bad_arguments(demo_dir):
    with pytest.raises(ValueError, match="`batch_size`=300 is larger than the 256 images"):
        pretrain(demo_dir, batch_size=300)
    with pytest.raises(ValueError, match="`num_epochs`"):
        pretrain(demo_dir, training=False, num_epochs=2)
    with pytest.raises(ValueError, match="`batch_size`"):
        pretrain(demo_dir, batch_size=0)
