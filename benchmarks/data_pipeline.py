"""Throughput of the data pipelines, in images per second, on this machine.

Question: can the episodic and pre-training pipelines feed a model on a
2-core CPU, and what does each stage cost? Cases:

* in-memory datasets: `demo` (generated) and CIFAR-FS (from
  <data dir>/cifar-100-python.tar.gz, skipped without one), at 32 and 84 px;
* file datasets: `image_folder` over generated JPEG files, both 84x84 files
  (pre-resized miniImageNet style) and 500x375 files (original-size
  ImageNet style, as DeepEMD's miniImageNet copy), with a decode-only
  baseline (`tf.io.read_file` + `decode_image`, nothing else) as a ceiling;
* evaluation (resize + centre crop) and training (random resized crop + flip)
  transforms; episodes are 5-way 1-shot 15-query (80 images), pre-training
  batches 128 images.

Each case: build, take 2 elements to warm up, then time `--seconds` worth of
elements (at least 3). Usage:

    python benchmarks/data_pipeline.py [--seconds 4] [--data-dir /path/to/cifar100]

The CIFAR-FS data folder is `--data-dir`, else the environment variable DATA_DIR.

Prints a table and writes benchmarks/results/data_pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tf_deepemd.data import make_episode_dataset, make_pretrain_dataset  # noqa: E402
from tf_deepemd.data.preprocessing import decode_image_file  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "data_pipeline.json")


def images_per_element(element) -> int:
    if isinstance(element[0], tuple):  # episode: ((support, labels, query), labels)
        (support, _, query), _ = element
        return int(support.shape[0]) + int(query.shape[0])
    return int(element[0].shape[0])


def measure(dataset, seconds: float) -> dict:
    iterator = iter(dataset)
    for _ in range(2):
        next(iterator)
    images, elements = 0, 0
    start = time.perf_counter()
    while elements < 3 or time.perf_counter() - start < seconds:
        try:
            element = next(iterator)
        except StopIteration:
            break
        images += images_per_element(element)
        elements += 1
    elapsed = time.perf_counter() - start
    return {"images_per_second": images / elapsed, "elements": elements, "seconds": elapsed}


def write_jpeg_folder(root: str, classes: int, per_class: int, height: int, width: int) -> str:
    """A class-per-folder tree of smooth random JPEGs (quality 90)."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = os.path.join(root, f"class_{c:03d}")
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            coarse = rng.uniform(0, 255, size=(1, 8, 8, 3)).astype(np.float32)
            image = tf.image.resize(coarse, [height, width])[0]
            image += rng.normal(0, 12, size=(height, width, 3)).astype(np.float32)
            data = tf.io.encode_jpeg(tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8), quality=90)
            tf.io.write_file(os.path.join(folder, f"{i:04d}.jpg"), data)
    return root


def decode_only(root: str) -> tf.data.Dataset:
    paths = sorted(
        os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names
    )
    return (
        tf.data.Dataset.from_tensor_slices(paths)
        .repeat()
        .map(decode_image_file, num_parallel_calls=tf.data.AUTOTUNE)
        .map(lambda image: tf.image.resize(image, [84, 84]))  # batching needs one shape
        .batch(80)
        .map(lambda images: (images,))
        .prefetch(tf.data.AUTOTUNE)
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR"),
                        help="folder holding cifar-100-python.tar.gz (default: $DATA_DIR)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tf_deepemd_bench_") as work:
        run(args, work)


def run(args, work):
    episodes = dict(way=5, shot=1, query=15, num_episodes=100_000 // 80 + 10, seed=0)
    cases = []

    demo = dict(data_dir=os.path.join(work, "demo"))
    for size in (32, 84):
        for training in (False, True):
            cases.append((f"demo episodes {size}px", "eval" if not training else "train",
                          lambda s=size, t=training: make_episode_dataset(
                              "demo", "train", image_size=s, training=t, **episodes, **demo)))
    cases.append(("demo pretrain batch 128, 32px", "train",
                  lambda: make_pretrain_dataset("demo", "train", batch_size=128, image_size=32, **demo)))

    archive = os.path.join(args.data_dir or "", "cifar-100-python.tar.gz")
    if args.data_dir and os.path.isfile(archive):
        for size in (32, 84):
            for training in (False, True):
                cases.append((f"cifar_fs episodes {size}px", "eval" if not training else "train",
                              lambda s=size, t=training: make_episode_dataset(
                                  "cifar_fs", "train", args.data_dir, image_size=s, training=t, **episodes)))
        cases.append(("cifar_fs pretrain batch 128, 32px", "train",
                      lambda: make_pretrain_dataset("cifar_fs", "train", args.data_dir,
                                                    batch_size=128, image_size=32)))
    else:
        print(f"(no {archive}: CIFAR-FS cases skipped; pass --data-dir or set DATA_DIR)")

    for height, width in ((84, 84), (375, 500)):
        root = write_jpeg_folder(os.path.join(work, f"jpeg_{width}x{height}"), 10, 40, height, width)
        label = f"JPEG folder {width}x{height} -> 84px"
        cases.append((label + " (decode only)", "-", lambda r=root: decode_only(r)))
        for training in (False, True):
            cases.append((label, "eval" if not training else "train",
                          lambda r=root, t=training: make_episode_dataset(
                              "image_folder", "all", r, image_size=84, training=t, **episodes)))
        cases.append((f"JPEG folder {width}x{height} pretrain batch 128", "train",
                      lambda r=root: make_pretrain_dataset("image_folder", "all", r, batch_size=128, image_size=84)))

    rows = []
    print(f"{'pipeline':<46}{'transform':>10}{'images/s':>12}{'build s':>9}")
    for name, transform, build in cases:
        start = time.perf_counter()
        dataset = build()
        build_seconds = time.perf_counter() - start
        result = measure(dataset, args.seconds)
        result.update(pipeline=name, transform=transform, build_seconds=build_seconds)
        rows.append(result)
        print(f"{name:<46}{transform:>10}{result['images_per_second']:>12.0f}{build_seconds:>9.2f}")

    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as stream:
        json.dump(
            {
                "question": "images/s of the tf_deepemd.data pipelines on this machine",
                "episode": "5-way 1-shot 15-query (80 images)",
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "tensorflow": tf.__version__,
                },
                "results": rows,
            },
            stream,
            indent=2,
        )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
