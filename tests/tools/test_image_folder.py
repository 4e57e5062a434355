"""Your own images, as docs/image_folder.md walks through them: gin_configs/image_folder.gin
on generated folders of class folders, trained, tested and exported; settings the
folder cannot hold reported together; small classes left out on request."""

import json
import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from tests.data.data_fixtures import class_colour, write_class_folder
from tf_deepemd.data import load_split
from tf_deepemd.export.from_run import export_run
from tf_deepemd.training.experiment import run_experiment
from tf_deepemd.training.gin_config import parse_config
from tf_deepemd.training.launch import ConfigurationError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(REPO, "gin_configs")

# image_folder.gin as it is, made tiny: 16 px, an 8-channel Conv-4, 3-way
# 1-shot 2-query episodes, a few steps per stage.
TINY = (
    "run_experiment.image_size = 16",
    "run_experiment.way = 3",
    "run_experiment.query = 2",
    "run_experiment.test_episodes = 4",
    "run_experiment.verbose = 0",
    "make_model.backbone = 'conv4'",
    "make_model.backbone_options = {'widths': (8, 8, 8, 8), 'num_pools': 2}",
    "pretrain.epochs = 1",
    "pretrain.batch_size = 16",
    "pretrain.steps_per_epoch = 2",
    "pretrain.val_way = 3",
    "pretrain.val_episodes = 2",
    "pretrain.val_query = 2",
    "meta_train.epochs = 1",
    "meta_train.episodes_per_epoch = 2",
    "meta_train.query = 2",
    "meta_train.val_episodes = 2",
    "SFC.steps = 2",
)


def configure(data_dir, *bindings):
    gin.clear_config()
    parse_config(["image_folder.gin"], TINY + (f"run_experiment.data_dir = {data_dir!r}",) + bindings,
                 [CONFIG_DIR])


@pytest.fixture(autouse=True)
def clean_gin():
    yield
    gin.clear_config()


def test_a_folder_of_class_folders_is_trained_tested_and_exported(tmp_path):
    root = str(tmp_path / "images")
    for k in range(16):  # 64/16/20 %: 10 train, 3 val, 3 test classes
        write_class_folder(os.path.join(root, f"class_{k:02d}"), k % 13, 6)
    configure(root)
    model_dir = str(tmp_path / "run")

    results = run_experiment(model_dir=model_dir)

    # The classes are divided between the splits, none shared, none lost.
    splits = {split: load_split("image_folder", split, root).class_names for split in ("train", "val", "test")}
    assert [len(names) for names in splits.values()] == [10, 3, 3]
    assert sorted(sum(splits.values(), ())) == [f"class_{k:02d}" for k in range(16)]
    with open(os.path.join(model_dir, "results.json")) as stream:
        saved = json.load(stream)
    assert (saved["dataset"], saved["split"], saved["way"], saved["episodes"]) == ("image_folder", "test", 3, 4)
    assert saved["accuracy"] == results["accuracy"] and 0 <= saved["accuracy"] <= 100
    for stage in ("pretrain", "meta_train"):
        assert os.path.isfile(os.path.join(model_dir, stage, "best.weights.h5"))

    export, weights = export_run(str(tmp_path / "exports"), model_dir)
    assert weights == os.path.join(model_dir, "meta_train", "best.weights.h5")
    # The served model classifies an episode of raw pixels from the test classes.
    test_split = load_split("image_folder", "test", root)
    support = np.stack([np.full((16, 16, 3), class_colour(int(name[-2:]) % 13), np.uint8)
                        for name in test_split.class_names])
    served = tf.saved_model.load(export.path).signatures["serving_default"](
        support_images=tf.constant(support), support_labels=tf.constant([0, 1, 2]),
        query_images=tf.constant(support[::-1]),
    )
    assert served["probabilities"].shape == (3, 3)
    np.testing.assert_allclose(np.sum(served["probabilities"], axis=-1), 1.0, rtol=1e-5)


def small_class_folder(root):
    """train/val/test folders; train's class_09 and val's class_13 have 2 images (an episode takes 3)."""
    for split, classes in {"train": range(0, 10), "val": range(10, 14), "test": range(14, 18)}.items():
        for k in classes:
            write_class_folder(os.path.join(root, split, f"class_{k:02d}"), k % 13, 2 if k in (9, 13) else 5)


def test_every_setting_the_folder_cannot_hold_in_one_message(tmp_path):
    root = str(tmp_path / "images")
    small_class_folder(root)
    configure(root, "pretrain.batch_size = 64", "run_experiment.way = 4")

    with pytest.raises(ConfigurationError) as raised:
        run_experiment(model_dir=str(tmp_path / "run"))

    message = str(raised.value)
    assert "cannot hold 4 setting(s)" in message
    assert "[pretrain.batch_size=64] `batch_size`=64 is larger than the 47 images of image_folder/train" in message
    assert "'class_09' (2 images)" in message and "'class_13' (2 images)" in message
    assert "larger than the number of classes of image_folder/test (4)" not in message  # 4 classes hold way 4
    assert "run_experiment.dataset_options={'on_small_class': 'exclude'} leaves small classes out." in message
    assert not os.path.exists(tmp_path / "run")


def test_small_classes_left_out_on_request(tmp_path):
    root = str(tmp_path / "images")
    small_class_folder(root)
    configure(root, "run_experiment.dataset_options = {'on_small_class': 'exclude'}")

    with pytest.warns(UserWarning, match=r"'class_09' \(2 images\)\. They are left out"):
        results = run_experiment(model_dir=str(tmp_path / "run"))

    assert results["episodes"] == 4 and 0 <= results["accuracy"] <= 100


def test_a_bad_policy_is_named_before_any_pipeline_is_built(tmp_path):
    root = str(tmp_path / "images")
    small_class_folder(root)
    configure(root, "run_experiment.dataset_options = {'on_small_class': 'drop'}")

    with pytest.raises(ConfigurationError, match=r"^run_experiment.dataset_options\['on_small_class'\] must be "
                                                 r"one of \('error', 'exclude'\), got 'drop'\."):
        run_experiment(model_dir=str(tmp_path / "run"))


def test_the_tool_reports_the_misfits_as_one_line(tmp_path):
    root = str(tmp_path / "images")
    small_class_folder(root)
    command = [sys.executable, os.path.join(REPO, "tools", "train.py"), "--gin_file=image_folder.gin",
               f"--gin_bindings=run_experiment.data_dir={root!r}", f"--model_dir={tmp_path / 'run'}"]
    completed = subprocess.run(command, cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=REPO),
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert completed.stderr.count("\n") == 1, completed.stderr
    assert completed.stderr.startswith("error: ValueError: The data cannot hold ")
    assert "[pretrain.batch_size=64]" in completed.stderr and "on_small_class" in completed.stderr
