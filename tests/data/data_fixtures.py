"""Helpers for the data tests: generated images and a fake CIFAR-100, no downloads.

Images of class ``k`` (a global id across splits) are filled with the colour
`class_colour(k)`, so a test can read the class back from a preprocessed image
and check that labels were never mixed up.
"""

import json
import os
from importlib import resources

import numpy as np
import tensorflow as tf

# Sizes vary per image so that resizing heterogeneous inputs is exercised.
IMAGE_SIZES = [(24, 30), (40, 36), (33, 33), (20, 44)]

# Small and fast demo variant: 100 classes x 16 images of 32x32.
DEMO_OPTIONS = {"images_per_class": 16, "generated_size": 32}

# Global class ids: train 0-5, val 6-8, test 9-11.
FOLDER_SPLITS = {
    "train": {f"class_{k}": (k, 4 + k) for k in range(6)},  # 4..9 images
    "val": {f"class_{k}": (k, 4) for k in range(6, 9)},
    "test": {f"class_{k}": (k, 4) for k in range(9, 12)},
}

CIFAR_LABELS = json.loads(
    resources.files("tf_deepemd.data").joinpath("splits", "cifar100-labels.json").read_text()
)


def class_colour(k):
    """A colour per class id < 13, channels 20+ apart from every other class."""
    return np.array([10 + 20 * k, 245 - 20 * k, 60 + 20 * (k % 4)], np.uint8)


def mean_colours(images, normalization):
    """Mean RGB (0-255) of each preprocessed image: float ``[N, 3]``."""
    mean, std = (np.asarray(v, np.float32) for v in normalization)
    return (np.asarray(images) * std + mean).mean(axis=(1, 2)) * 255.0


def colour_to_class(colours):
    """Nearest `class_colour` id of each ``[N, 3]`` colour; asserts it is close."""
    palette = np.stack([class_colour(k) for k in range(13)]).astype(np.float32)
    distances = np.abs(colours[:, None, :] - palette[None]).max(axis=-1)
    assert distances.min(axis=1).max() < 5, "an image matches no class colour"
    return distances.argmin(axis=1)


def write_image(path, colour, size=(32, 32)):
    """Writes a constant-colour image, PNG or JPEG by the file extension."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = tf.constant(np.broadcast_to(colour, tuple(size) + (3,)).astype(np.uint8))
    if path.lower().endswith(".png"):
        data = tf.io.encode_png(image)
    else:
        data = tf.io.encode_jpeg(image, quality=98)
    tf.io.write_file(path, data)


def write_class_folder(folder, k, count, ext=".png"):
    for i in range(count):
        write_image(os.path.join(folder, f"img_{i:02d}{ext}"), class_colour(k), IMAGE_SIZES[i % 4])


def fake_cifar_arrays(per_class_train=4, per_class_test=2):
    """Fake CIFAR-100 pickled parts (bytes keys, channel-major ``data``).

    Image ``i`` of fine class ``f``: R = f, G = 255 - f, B = i % 256 (i counts
    the images of its part), so tests can check the channel order.
    """
    parts = {}
    for name, per_class in (("train", per_class_train), ("test", per_class_test)):
        fine = np.repeat(np.arange(100), per_class)
        count = len(fine)
        data = np.empty((count, 3, 32, 32), np.uint8)
        data[:, 0] = fine[:, None, None]
        data[:, 1] = (255 - fine)[:, None, None]
        data[:, 2] = (np.arange(count) % 256)[:, None, None]
        parts[name] = {
            b"data": data.reshape(count, 3072),
            b"fine_labels": fine.tolist(),
            b"coarse_labels": [CIFAR_LABELS["fine_to_coarse"][f] for f in fine],
            b"filenames": [f"{i}.png".encode() for i in range(count)],
            b"batch_label": name.encode(),
        }
    parts["meta"] = {
        b"fine_label_names": [n.encode() for n in CIFAR_LABELS["fine_label_names"]],
        b"coarse_label_names": [n.encode() for n in CIFAR_LABELS["coarse_label_names"]],
    }
    return parts
