"""Every shipped gin config parses with every binding known, and binds what it promises."""

import glob
import os

import gin
import pytest

from tf_deepemd.encoders import GridEncoder, SamplingEncoder
from tf_deepemd.layers import SFC, ClassMeanPrototypes, DeepEMDHead
from tf_deepemd.models.naming import method_name
from tf_deepemd.training import model_config
from tf_deepemd.training.gin_config import parse_config
from tf_deepemd.training.meta_train import MetaTrainSettings
from tf_deepemd.training.pretrain import PretrainSettings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(REPO, "gin_configs")
TOP_LEVEL = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.gin")))
BENCHMARKS = [
    f"{dataset}_{shot}shot.gin"
    for dataset in ("mini", "tiered", "cub", "fc100", "cifar_fs")
    for shot in (1, 5)
]


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def parse(name, *bindings):
    # Parsed from another working directory: includes must not depend on it.
    cwd = os.getcwd()
    os.chdir("/")
    try:
        parse_config([os.path.join(CONFIG_DIR, name)], bindings, search_paths=[CONFIG_DIR])
    finally:
        os.chdir(cwd)


def test_every_benchmark_and_cpu_config_exists():
    names = {os.path.basename(path) for path in TOP_LEVEL}
    for name in BENCHMARKS + ["quickstart.gin", "cifar_fs_cpu.gin", "fc100_cpu.gin"]:
        assert name in names, name


@pytest.mark.parametrize("path", TOP_LEVEL + sorted(glob.glob(os.path.join(CONFIG_DIR, "base", "*.gin"))),
                         ids=os.path.basename)
def test_config_parses_with_no_unknown_binding(path):
    parse(os.path.relpath(path, CONFIG_DIR))
    # The settings objects accept every bound value.
    PretrainSettings().check()
    MetaTrainSettings().check()


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_configs_bind_the_official_protocol(name):
    parse(name)
    shot = 5 if "5shot" in name else 1
    q = gin.query_parameter
    assert q("run_experiment.shot") == shot
    assert q("run_experiment.test_episodes") == (600 if shot == 5 else 5000)
    assert q("run_experiment.image_size") == 84
    assert q("make_model.backbone") == "resnet12"
    assert q("run_experiment.model_dir") == f"runs/{name[:-4]}"
    pretrain, meta = PretrainSettings(), MetaTrainSettings()
    assert (pretrain.epochs, pretrain.batch_size, pretrain.learning_rate) == (120, 128, 0.1)
    assert (pretrain.lr_step_epochs, pretrain.lr_gamma, pretrain.val_episodes) == (30, 0.2, 100)
    assert (meta.epochs, meta.episodes_per_epoch, meta.shot, meta.learning_rate) == (100, 50, 1, 5e-4)
    assert (meta.lr_step_epochs, meta.lr_gamma, meta.val_episodes) == (10, 0.5, 1000)
    assert (q("make_optimizer.momentum"), q("make_optimizer.nesterov"), q("make_optimizer.weight_decay")) == (
        0.9, True, 5e-4)
    # The official model: DeepEMD-FCN, constant-flow training, SFC (lr 100, 100 epochs of 4).
    model = model_config.configured_model()
    head, sfc = model.head, model.prototypes
    assert isinstance(head, DeepEMDHead) and isinstance(sfc, SFC)
    assert (head.node_weights, head.gradient_mode, head.temperature) == (
        "cross_reference", "stop_flow", 12.5)
    assert (sfc.learning_rate, sfc.steps, sfc.batch_size, sfc.gradient_mode) == (
        100.0, 100, 4, "stop_flow")


@pytest.mark.parametrize(
    "binding, check",
    [
        ("make_model.encoder = 'grid'", lambda m: isinstance(m.encoder, GridEncoder)),
        ("make_model.encoder = 'sampling'", lambda m: isinstance(m.encoder, SamplingEncoder)),
        ("make_model.head = 'protonet'", lambda m: method_name(m) == "protonet"),
        ("make_model.head = 'cosine'", lambda m: method_name(m) == "cosine"),
        ("make_model.node_weights = 'uniform'",
         lambda m: method_name(m) == "deepemd_fcn_uniform"),
        ("make_model.gradient_mode = 'kkt'",
         lambda m: m.head.gradient_mode == "kkt" and m.prototypes.gradient_mode == "stop_flow"),
        ("make_model.prototypes = 'mean'", lambda m: isinstance(m.prototypes, ClassMeanPrototypes)),
    ],
)
def test_one_binding_switches_the_method(binding, check):
    parse("mini_1shot.gin", binding)
    model = model_config.configured_model()  # constructs layers only; no weights are built
    assert check(model)


def test_data_dir_is_one_overridable_binding():
    parse("cifar_fs_cpu.gin")
    with pytest.raises(ValueError, match="no value bound for parameter 'data_dir'"):
        gin.query_parameter("run_experiment.data_dir")  # no default location: the user's data
    gin.clear_config()
    parse("cifar_fs_cpu.gin", "run_experiment.data_dir = '/elsewhere'")
    assert gin.query_parameter("run_experiment.data_dir") == "/elsewhere"


def test_unknown_binding_is_an_error():
    with pytest.raises(ValueError, match="pretrain"):
        parse("quickstart.gin", "pretrain.epoch_count = 3")
