"""Tiny run settings shared by the training and tool tests (seconds per run)."""

import gin

from tf_deepemd.training.gin_config import parse_config

# 16 px demo images, an 8-channel Conv-4, 3-query episodes, 2 epochs per stage.
TINY_BINDINGS = (
    "run_experiment.dataset = 'demo'",
    "run_experiment.dataset_options = {'images_per_class': 20}",
    "run_experiment.image_size = 16",
    "run_experiment.query = 3",
    "run_experiment.test_episodes = 6",
    "run_experiment.verbose = 0",
    "make_model.backbone = 'conv4'",
    "make_model.backbone_options = {'widths': (8, 8, 8, 8), 'num_pools': 2}",
    "make_model.gradient_mode = 'stop_flow'",
    "pretrain.epochs = 2",
    "pretrain.batch_size = 32",
    "pretrain.steps_per_epoch = 3",
    "pretrain.val_episodes = 4",
    "pretrain.val_query = 3",
    "meta_train.epochs = 2",
    "meta_train.episodes_per_epoch = 3",
    "meta_train.query = 3",
    "meta_train.val_episodes = 4",
)


def tiny_bindings(data_dir, *extra):
    """The tiny bindings with the demo cache in ``data_dir``, then ``extra``."""
    return TINY_BINDINGS + (f"run_experiment.data_dir = {str(data_dir)!r}",) + tuple(extra)


def configure_tiny(data_dir, *extra):
    """Clears gin and binds the tiny settings (in-process runs)."""
    gin.clear_config()
    parse_config(gin_bindings=tiny_bindings(data_dir, *extra))
