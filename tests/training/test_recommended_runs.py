"""Whole tiny runs with the official author's recommended settings (issue 11, item 4).

Both training stages with the cosine schedule, new validation episodes every
epoch (official ``-random_val_task``) and every epoch's weights kept
(official ``-save_all``): the logged learning rates are the closed form, each
epoch is validated on that epoch's episodes, the kept weights are the
validated ones, and a run interrupted in both stages resumes to the
uninterrupted run's epochs, weights and scores. A Sampling model trained with
2 patches is tested with 3 (``test/SamplingEncoder.num_patches``).
"""

import csv
import json
import math
import os

import gin
import keras
import numpy as np
import pytest

from tests.training.test_experiment import Interrupt, InterruptAfter
from tests.training.test_resume import weights
from tests.training.tiny_config import configure_tiny
from tf_deepemd import run_folder
from tf_deepemd.training import meta_train, model_config, pretrain
from tf_deepemd.training.data_source import DataSource, ValidationEpisodes
from tf_deepemd.training.evaluate import EpisodeEvaluator
from tf_deepemd.training.experiment import run_experiment

EPOCHS = 3
RECOMMENDED = (
    f"pretrain.epochs = {EPOCHS}",
    f"meta_train.epochs = {EPOCHS}",
    "pretrain.lr_schedule = 'cosine'",
    "meta_train.lr_schedule = 'cosine'",
    "pretrain.random_val_episodes = True",
    "meta_train.random_val_episodes = True",
    "pretrain.keep_epoch_weights = True",
    "meta_train.keep_epoch_weights = True",
)
INITIAL_LEARNING_RATE = {"pretrain": 0.1, "meta_train": 5e-4}  # the defaults; tiny keeps them
STAGES = ("pretrain", "meta_train")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("demo"))


def recommended_run(model_dir, demo_dir, callbacks=()):
    """Runs the tiny run with `RECOMMENDED`; returns the epochs whose validation episodes were asked for."""
    configure_tiny(demo_dir, *RECOMMENDED)
    asked = []
    original = ValidationEpisodes.__call__

    def recording(self, epoch):
        asked.append(epoch)
        return original(self, epoch)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ValidationEpisodes, "__call__", recording)
        try:
            run_experiment(model_dir=model_dir, callbacks=list(callbacks))
        except Interrupt:
            pass
    return asked


@pytest.fixture(scope="module")
def uninterrupted(demo_dir, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("uninterrupted"))
    return model_dir, recommended_run(model_dir, demo_dir)


def epoch_rows(model_dir, stage):
    """The last logged row of each epoch, by epoch."""
    with open(os.path.join(model_dir, stage, "log.csv")) as stream:
        return [row for _, row in sorted({int(row["epoch"]): row for row in csv.DictReader(stream)}.items())]


def test_cosine_schedule_sets_the_logged_learning_rates(uninterrupted):
    model_dir, _ = uninterrupted
    for stage in STAGES:
        logged = [float(row["learning_rate"]) for row in epoch_rows(model_dir, stage)]
        initial = INITIAL_LEARNING_RATE[stage]
        # 3 epochs: cos(0) = 1, cos(pi/3) = 1/2, cos(2pi/3) = -1/2.
        np.testing.assert_allclose(logged, [initial, 0.75 * initial, 0.25 * initial], rtol=1e-6)
        closed_form = [initial * (1 + math.cos(math.pi * e / EPOCHS)) / 2 for e in range(EPOCHS)]
        np.testing.assert_allclose(logged, closed_form, rtol=1e-6)


def test_every_epoch_is_validated_on_its_episodes_with_its_kept_weights(uninterrupted, demo_dir):
    model_dir, asked = uninterrupted
    assert asked == [*range(EPOCHS), *range(EPOCHS)]  # pre-training, then meta-training
    configure_tiny(demo_dir, *RECOMMENDED)
    source = DataSource("demo", demo_dir, image_size=16, options={"images_per_class": 20}, seed=1)
    validation = {
        "pretrain": pretrain.build_data(pretrain.PretrainSettings(), source).val_episodes,
        "meta_train": meta_train.build_data(meta_train.MetaTrainSettings(), source, 5, 1).val_episodes,
    }
    model = run_folder.new_episode_model(model_config.configured_model, 16, 1)
    evaluator = EpisodeEvaluator(model)
    for stage in STAGES:
        files = run_folder.StageFiles(model_dir, stage)
        assert sorted(os.listdir(os.path.join(files.dir, "epochs"))) == [
            f"epoch-{n}.weights.h5" for n in range(1, EPOCHS + 1)]
        for epoch, row in enumerate(epoch_rows(model_dir, stage)):
            model.load_weights(files.epoch_weights(epoch + 1))
            score = evaluator(validation[stage](epoch)).accuracy / 100.0
            assert float(row["val_episode_accuracy"]) == pytest.approx(score, abs=1e-9), (stage, epoch)
        # The best weights are those of the best epoch.
        best_epoch = files.best()["epoch"]
        kept, best = weights(files.epoch_weights(best_epoch + 1)), weights(files.best_weights)
        assert kept.keys() == best.keys()
        for name in kept:
            np.testing.assert_array_equal(kept[name], best[name], err_msg=f"{stage} {name}")


def test_interrupted_run_resumes_with_the_same_episodes_and_epoch_weights(uninterrupted, demo_dir, tmp_path):
    reference_dir, _ = uninterrupted
    model_dir = str(tmp_path / "resumed")
    asked = [recommended_run(model_dir, demo_dir, [InterruptAfter("PretrainClassifier", 0)]),
             recommended_run(model_dir, demo_dir, [InterruptAfter("DeepEMD", 1)]),
             recommended_run(model_dir, demo_dir)]
    # Each run validates the epochs it trains, by their index: the same episodes as uninterrupted.
    assert asked == [[0], [1, 2, 0, 1], [2]]
    for stage in STAGES:
        ours, theirs = epoch_rows(model_dir, stage), epoch_rows(reference_dir, stage)
        assert [row["epoch"] for row in ours] == [row["epoch"] for row in theirs] == ["1", "2", "3"]  # from 1, as the console
        for row, reference in zip(ours, theirs):
            assert float(row["learning_rate"]) == float(reference["learning_rate"])
            np.testing.assert_allclose(float(row["loss"]), float(reference["loss"]), rtol=1e-4)
            assert float(row["val_episode_accuracy"]) == pytest.approx(
                float(reference["val_episode_accuracy"]), abs=1e-9)
        for epoch in range(1, EPOCHS + 1):
            path = run_folder.StageFiles(model_dir, stage).epoch_weights(epoch)
            resumed, reference = weights(path), weights(path.replace(model_dir, reference_dir))
            assert resumed.keys() == reference.keys()
            for name in resumed:
                np.testing.assert_allclose(resumed[name], reference[name], rtol=1e-4, atol=1e-6,
                                           err_msg=f"{stage} epoch {epoch} {name}")


class PatchesSeen(keras.callbacks.Callback):
    """Records the number of Sampling patches of the model each stage runs."""

    def __init__(self):
        super().__init__()
        self.seen = {"meta_train": set(), "test": set()}

    def on_train_batch_end(self, batch, logs=None):
        self.seen["meta_train"].add(self.model.encoder.num_patches)

    def on_predict_batch_end(self, batch, logs=None):
        self.seen["test"].add(self.model.encoder.num_patches)


def per_episode_accuracies(model_dir, results_file):
    with open(os.path.join(model_dir, "test", results_file)) as stream:
        return json.load(stream)["accuracies"]


def test_sampling_trains_with_few_patches_and_tests_with_more(demo_dir, tmp_path):
    model_dir = str(tmp_path / "sampling")
    sampling = ("make_model.encoder = 'sampling'", "SamplingEncoder.num_patches = 2",
                "run_experiment.stages = ('meta_train', 'test')")
    configure_tiny(demo_dir, *sampling, "test/SamplingEncoder.num_patches = 3")
    patches = PatchesSeen()
    results = run_experiment(model_dir=model_dir, callbacks=[patches])
    assert patches.seen == {"meta_train": {2}, "test": {3}}
    assert results["method"] == "deepemd_sampling"
    # The same test as a plain 3-patch model of the trained weights gives (no scope).
    configure_tiny(demo_dir, *sampling, "SamplingEncoder.num_patches = 3",
                   "run_experiment.stages = ('test',)")
    patches = PatchesSeen()
    plain = run_experiment(model_dir=model_dir, results_file="plain.json", callbacks=[patches])
    assert patches.seen["test"] == {3}
    assert plain["weights"] == results["weights"]
    scoped = per_episode_accuracies(model_dir, "results.json")
    assert per_episode_accuracies(model_dir, "plain.json") == scoped
    gin.clear_config()
