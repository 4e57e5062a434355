"""How hard is the `demo` dataset? Raw pixels vs a small trained network.

Question: is the demo task non-trivial, i.e. does a learned representation
clearly beat pixels? Both are scored by the same ProtoNet rule (nearest
support embedding, Euclidean) on 5-way 1-shot, 15-query episodes of the 20
*test* classes:

* raw pixels: the normalised 32x32x3 image, flattened;
* trained: the global-average-pooled output of a 4-block conv net (32-64-64-64
  channels, ~0.1 M parameters) trained as a 64-way classifier on the train
  classes with the library's pre-training pipeline for `--train-seconds`
  (default 60) of wall-clock time.

Usage:
    python benchmarks/data_demo_difficulty.py [--train-seconds 60] [--episodes 1000]

Prints a table and writes benchmarks/results/data_demo_difficulty.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402

from tf_deepemd.data import demo, make_episode_dataset, make_pretrain_dataset  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "data_demo_difficulty.json")


def small_conv_net(num_classes: int, image_size: int) -> tuple[keras.Model, keras.Model]:
    """(classifier, embedding) sharing a 4-block conv trunk."""
    inputs = keras.Input((image_size, image_size, 3))
    x = inputs
    for width in (32, 64, 64, 64):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    embedding = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(num_classes)(embedding)
    return keras.Model(inputs, logits), keras.Model(inputs, embedding)


class StopAfter(keras.callbacks.Callback):
    """Stops training after a wall-clock budget."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.start = None
        self.steps = 0

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True


def protonet_accuracy(episodes, embed) -> np.ndarray:
    """Per-episode accuracy (%) of nearest-support-embedding classification."""
    accuracies = []
    for (support, support_labels, query), query_labels in episodes:
        support_features = embed(support)
        query_features = embed(query)
        way = int(tf.reduce_max(support_labels)) + 1
        prototypes = tf.math.unsorted_segment_mean(support_features, support_labels, way)
        distances = tf.reduce_sum(
            tf.square(query_features[:, None, :] - prototypes[None, :, :]), axis=-1
        )
        predictions = tf.argmin(distances, axis=1, output_type=tf.int32)
        accuracies.append(100.0 * float(tf.reduce_mean(tf.cast(predictions == query_labels, tf.float32))))
    return np.array(accuracies)


def summary(accuracies: np.ndarray) -> dict:
    return {
        "mean": float(accuracies.mean()),
        "ci95": float(1.96 * accuracies.std() / np.sqrt(len(accuracies))),
        "episodes": int(len(accuracies)),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="demo cache folder (default: a temporary one)")
    parser.add_argument("--train-seconds", type=float, default=60.0)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--images-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.data_dir:
        run(args, args.data_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="tf_deepemd_demo_") as data_dir:
            run(args, data_dir)


def run(args, data_dir):
    image_size = 32
    options = dict(data_dir=data_dir, image_size=image_size, generated_size=image_size,
                   images_per_class=args.images_per_class)

    start = time.perf_counter()
    demo.generate_images(args.images_per_class, image_size, seed=0)  # timed alone, uncached
    generation_seconds = time.perf_counter() - start
    pretrain = make_pretrain_dataset("demo", "train", batch_size=64, seed=args.seed, **options)

    def test_episodes():
        return make_episode_dataset(
            "demo", "test", way=5, shot=1, query=15, num_episodes=args.episodes, seed=1, **options
        )

    raw = protonet_accuracy(test_episodes(), lambda images: tf.reshape(images, [tf.shape(images)[0], -1]))

    keras.utils.set_random_seed(args.seed)
    classifier, embedding = small_conv_net(pretrain.num_classes, image_size)
    classifier.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    stopper = StopAfter(args.train_seconds)
    history = classifier.fit(
        pretrain, epochs=1000, steps_per_epoch=pretrain.steps_per_epoch, callbacks=[stopper],
        shuffle=False, verbose=0,
    )
    trained = protonet_accuracy(test_episodes(), lambda images: embedding(images, training=False))

    results = {
        "question": "5-way 1-shot ProtoNet accuracy on demo test classes: raw pixels vs a small trained conv net",
        "demo": {"images_per_class": args.images_per_class, "image_size": image_size, "seed": 0},
        "generation_seconds": generation_seconds,
        "raw_pixels": summary(raw),
        "trained_conv_net": summary(trained),
        "training": {
            "seconds": args.train_seconds,
            "steps": stopper.steps,
            "batch_size": 64,
            "final_train_accuracy": float(history.history["accuracy"][-1]),
            "parameters": int(classifier.count_params()),
        },
        "chance": 20.0,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "tensorflow": tf.__version__},
    }
    print(f"demo generation ({args.images_per_class} images/class, {image_size}px): {generation_seconds:.1f} s")
    print(f"{'features':<28}{'5-way 1-shot acc. (%)':>24}")
    for name, key in (("raw pixels", "raw_pixels"), ("small conv net (trained)", "trained_conv_net")):
        print(f"{name:<28}{results[key]['mean']:>17.1f} +- {results[key]['ci95']:.1f}")
    print(
        f"(chance 20 %; conv net: {stopper.steps} steps in {args.train_seconds:.0f} s, "
        f"final train accuracy {100 * results['training']['final_train_accuracy']:.1f} %)"
    )
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as stream:
        json.dump(results, stream, indent=2)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
