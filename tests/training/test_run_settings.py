"""A run's settings as the tools after training read them, without the training stack."""

import inspect

import gin

from tf_deepemd import make_model, training
from tf_deepemd.training import model_config
from tf_deepemd.training.experiment import run_experiment
from tf_deepemd.training.gin_config import parse_config
from tf_deepemd.training.run_settings import DEFAULT_RUN, RunSettings, run_settings


def test_unbound_settings_are_the_defaults_of_run_experiment():
    gin.clear_config()
    parameters = inspect.signature(run_experiment).parameters
    settings = run_settings()
    for name in ("image_size", "test_split", "way", "shot", "query", "seed", "dataset", "data_dir"):
        assert getattr(settings, name) == parameters[name].default, name
    assert settings == DEFAULT_RUN == RunSettings()


def test_bound_settings_win_and_model_dir_overrides():
    gin.clear_config()
    try:
        parse_config([], ["run_experiment.way = 3", "run_experiment.model_dir = 'runs/a'",
                          "run_experiment.dataset_options = {'images_per_class': 20}"])
        settings = run_settings("runs/b")
        assert (settings.way, settings.model_dir, settings.shot) == (3, "runs/b", 1)
        assert settings.dataset_options == {"images_per_class": 20}
    finally:
        gin.clear_config()


def test_the_configured_model_takes_the_arguments_of_the_one_make_model():
    """gin's ``make_model`` binds `tf_deepemd.make_model`'s arguments; it is no second contract."""
    gin.clear_config()
    try:
        parse_config([], ["make_model.backbone = 'conv4'", "make_model.head = 'protonet'"])
        configured = model_config.configured_model()
        direct = make_model(backbone="conv4", head="protonet")
        assert type(configured.head) is type(direct.head)
        assert type(configured.backbone) is type(direct.backbone)
        assert not hasattr(training, "make_model")
    finally:
        gin.clear_config()
