"""The official author's recommended settings, unit level (issue 11, item 4).

The cosine schedule against PyTorch's ``CosineAnnealingLR`` and hand values,
new validation episodes every epoch (reproducible from the run's seed), the
``test/`` gin scope of the test stage's model, and the feature-pyramid
configs (each its benchmark config plus exactly the pyramid binding).
Whole runs with these settings: ``test_recommended_runs.py``.
"""

import math
import os

import gin
import numpy as np
import pytest

from tf_deepemd.encoders import FCNEncoder, SamplingEncoder
from tf_deepemd.training import model_config
from tf_deepemd.training.data_source import META_TRAIN_VALIDATION_SEED_OFFSET, DataSource, ValidationEpisodes
from tf_deepemd.training.gin_config import parse_config
from tf_deepemd.training.meta_train import MetaTrainSettings
from tf_deepemd.training.optimizers import CosineDecay, StepDecay, epoch_schedule
from tf_deepemd.training.pretrain import PretrainSettings
from tf_deepemd.training.settings_record import gin_bindings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(REPO, "gin_configs")
PYRAMID_CONFIGS = [f"{dataset}_{shot}shot_pyramid.gin"
                   for dataset in ("mini", "tiered", "cub", "fc100", "cifar_fs") for shot in (1, 5)]


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


# --- learning-rate schedules -------------------------------------------------

def test_cosine_schedule_hand_values():
    schedule = CosineDecay(0.1, epochs=40)
    # cos(0) = 1, cos(pi/4) = sqrt(2)/2, cos(pi/2) = 0.
    assert schedule(0) == pytest.approx(0.1, rel=1e-12)
    assert schedule(10) == pytest.approx(0.1 * (1 + math.sqrt(2) / 2) / 2, rel=1e-12)
    assert schedule(20) == pytest.approx(0.05, rel=1e-12)
    # cos(pi/3) = 1/2, cos(2pi/3) = -1/2; the half period ends at 0, no restart.
    three = CosineDecay(6e-4, epochs=3)
    np.testing.assert_allclose([three(e) for e in range(3)], [6e-4, 4.5e-4, 1.5e-4], rtol=1e-12)
    assert three(3) == pytest.approx(0.0, abs=1e-18)


def test_cosine_schedule_is_pytorch_cosine_annealing_without_restarts():
    torch = pytest.importorskip("torch")
    epochs, initial = 40, 0.1
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=initial, momentum=0.9, nesterov=True)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    theirs = []
    for _ in range(epochs):  # the official loop: train an epoch, then scheduler.step()
        theirs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    ours = [CosineDecay(initial, epochs)(epoch) for epoch in range(epochs)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-15)


def test_schedule_by_name_step_is_the_default():
    assert isinstance(epoch_schedule("step", 0.1, 120, 30, 0.2), StepDecay)
    assert isinstance(epoch_schedule("cosine", 0.1, 120, 30, 0.2), CosineDecay)
    with pytest.raises(ValueError, match="schedule"):
        epoch_schedule("cosine_restarts", 0.1, 120, 30, 0.2)
    assert PretrainSettings().lr_schedule == MetaTrainSettings().lr_schedule == "step"


@pytest.mark.parametrize("settings, binding",
                         [(PretrainSettings, "pretrain"), (MetaTrainSettings, "meta_train")])
def test_unknown_schedule_is_named_under_its_binding(settings, binding):
    parse_config(gin_bindings=[f"{binding}.lr_schedule = 'warm_restarts'"])
    with pytest.raises(ValueError, match=f"{binding}.lr_schedule must be one of"):
        settings().check()


def test_official_options_are_off_by_default():
    for settings in (PretrainSettings(), MetaTrainSettings()):
        assert settings.random_val_episodes is False and settings.keep_epoch_weights is False


# --- validation episodes by epoch --------------------------------------------

@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("demo"))


def images_by_epoch(demo_dir, seed, new_each_epoch, epochs=3):
    source = DataSource("demo", demo_dir, image_size=16, options={"images_per_class": 20}, seed=seed)
    episodes = ValidationEpisodes(source, 5, 1, 3, num_episodes=2,
                                  seed_offset=META_TRAIN_VALIDATION_SEED_OFFSET,
                                  new_each_epoch=new_each_epoch)
    return [np.stack([inputs[0].numpy() for inputs, _ in episodes(epoch)]) for epoch in range(epochs)]


def test_new_validation_episodes_each_epoch_reproducible_from_the_seed(demo_dir):
    fixed = images_by_epoch(demo_dir, seed=1, new_each_epoch=False)
    new = images_by_epoch(demo_dir, seed=1, new_each_epoch=True)
    again = images_by_epoch(demo_dir, seed=1, new_each_epoch=True)
    other_seed = images_by_epoch(demo_dir, seed=2, new_each_epoch=True)
    # Without the option: the same episodes after every epoch.
    for epoch in (1, 2):
        np.testing.assert_array_equal(fixed[epoch], fixed[0])
    # With it: other episodes each epoch (epoch 0: the default's), ...
    np.testing.assert_array_equal(new[0], fixed[0])
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert not np.array_equal(new[a], new[b]), (a, b)
    # ... the same ones again from the same seed, and others from another seed.
    for epoch in range(3):
        np.testing.assert_array_equal(again[epoch], new[epoch])
        assert not np.array_equal(other_seed[epoch], new[epoch])


# --- the test stage's model: bindings scoped test/ ---------------------------

def test_test_scoped_binding_changes_only_the_test_model():
    sampling = ["make_model.backbone = 'conv4'", "make_model.encoder = 'sampling'",
                "SamplingEncoder.num_patches = 2"]
    parse_config(gin_bindings=sampling)
    assert not model_config.binds_test_model()
    assert model_config.configured_test_model().encoder.num_patches == 2
    gin.clear_config()
    parse_config(gin_bindings=sampling + ["test/SamplingEncoder.num_patches = 25"])
    assert model_config.binds_test_model()
    train_model, test_model = model_config.configured_model(), model_config.configured_test_model()
    assert isinstance(test_model.encoder, SamplingEncoder)
    assert (train_model.encoder.num_patches, test_model.encoder.num_patches) == (2, 25)


# --- the feature-pyramid configs ---------------------------------------------

def parsed_bindings(name):
    gin.clear_config()
    cwd = os.getcwd()
    os.chdir("/")  # includes must not depend on the working directory
    try:
        parse_config([os.path.join(CONFIG_DIR, name)], search_paths=[CONFIG_DIR])
    finally:
        os.chdir(cwd)
    return gin_bindings(gin.config_str())


@pytest.mark.parametrize("name", PYRAMID_CONFIGS)
def test_pyramid_config_is_its_benchmark_plus_the_pyramid(name):
    base = parsed_bindings(name.replace("_pyramid", ""))
    pyramid = parsed_bindings(name)
    changed = {key: value for key, value in pyramid.items() if base.get(key) != value}
    assert changed == {"FCNEncoder.feature_pyramid": "(2, 1)",
                       "run_experiment.model_dir": repr(f"runs/{name[:-4]}")}
    assert set(base) <= set(pyramid)
    encoder = model_config.configured_model().encoder
    assert isinstance(encoder, FCNEncoder) and encoder.feature_pyramid == (2, 1)
    # ResNet-12 at 84 px: 5x5 map, levels 2x2 and 1x1 first, the 5x5 map last.
    assert encoder.compute_output_shape((None, 84, 84, 3)) == (None, 4 + 1 + 25, 640)
