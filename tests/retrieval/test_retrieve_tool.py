"""tools/retrieve.py and `retrieve_run` on the generated demo data with a tiny untrained model."""

import json
import os
import subprocess
import sys

import gin
import numpy as np
import pytest

from tests.data.data_fixtures import write_class_folder
from tests.export.test_export_tool import fake_finished_run
from tests.training.tiny_config import configure_tiny, tiny_bindings
from tf_deepemd.retrieval import galleries
from tf_deepemd.retrieval.evaluate import RetrievalSettings
from tf_deepemd.retrieval.from_run import retrieve_run
from tf_deepemd.retrieval.index import load_index
from tf_deepemd.training.gin_config import parse_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETTINGS = RetrievalSettings(shortlist_size=8, max_queries=16, query_batch_size=8, recall_ks=(1, 2, 4, 8))


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("demo"))


@pytest.fixture(autouse=True)
def clear_gin():
    yield
    gin.clear_config()


def test_tool_writes_json_and_prints_table(tmp_path, demo_dir):
    output = str(tmp_path / "retrieval.json")
    command = [sys.executable, os.path.join(REPO, "tools", "retrieve.py"), f"--model_dir={tmp_path / 'run'}",
               "--shortlist=8", "--max_queries=16", "--query_batch_size=8", f"--output={output}",
               "--methods=global,cross_reference"]  # uniform too: in-process below
    command += [f"--gin_bindings={binding}" for binding in tiny_bindings(demo_dir)]
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "UNTRAINED" in completed.stderr  # no weights in the model dir: said loudly
    for line in ("global features (cosine)", "EMD re-rank, cross-reference (K=8)", "queries/s", "R@8"):
        assert line in completed.stdout
    with open(output) as stream:
        results = json.load(stream)
    assert (results["dataset"], results["split"], results["gallery_size"]) == ("demo", "test", 400)
    assert results["queries"] == 16 and results["num_classes"] == 20 and not results["trained"]
    assert sorted(results["methods"]) == ["cross_reference", "global"]
    for method in ("global", "cross_reference"):
        row = results["methods"][method]
        assert 0 <= row["recall@1"] <= row["recall@2"] <= row["recall@4"] <= row["recall@8"] <= 100
        assert 0 < row["mAP"] <= 100 and row["queries_per_second"] > 0


def test_index_file_is_reused_and_checked(tmp_path, demo_dir):
    configure_tiny(demo_dir)
    index_file = str(tmp_path / "gallery.npz")
    first, output = retrieve_run(str(tmp_path / "run"), index_file=index_file, settings=SETTINGS)
    assert os.path.isfile(output) and "embed_seconds" in first
    index = load_index(index_file)
    assert index.size == 400 and index.metadata["image_size"] == [16, 16]
    assert sorted(np.bincount(index.labels)) == [20] * 20
    # Same settings: the saved index is used (no embedding), with the same results.
    second, _ = retrieve_run(str(tmp_path / "run"), index_file=index_file, settings=SETTINGS)
    assert "embed_seconds" not in second
    for method in ("global", "uniform", "cross_reference"):
        assert second["methods"][method]["mAP"] == pytest.approx(first["methods"][method]["mAP"])
    # Another image size: the stale index is refused, naming the argument.
    configure_tiny(demo_dir, "run_experiment.image_size = 20")
    with pytest.raises(ValueError, match="`index_file`"):
        retrieve_run(str(tmp_path / "run"), index_file=index_file, settings=SETTINGS)


def test_bad_settings_name_the_setting(tmp_path, demo_dir):
    configure_tiny(demo_dir)
    too_long = RetrievalSettings(shortlist_size=400)  # the gallery has 400 images: 399 candidates
    with pytest.raises(ValueError, match="`shortlist_size`"):
        retrieve_run(str(tmp_path / "run"), settings=too_long)
    with pytest.raises(ValueError, match="`split` 'dml_test'"):
        retrieve_run(str(tmp_path / "run"), settings=RetrievalSettings(split="dml_test"))
    with pytest.raises(ValueError, match="retrieval.shortlist_size"):
        retrieve_run(str(tmp_path / "run"), settings=RetrievalSettings(shortlist_size=0))
    with pytest.raises(ValueError, match="methods"):
        retrieve_run(str(tmp_path / "run"), settings=RetrievalSettings(methods=("global", "mean")))


@pytest.mark.parametrize("name, dataset, split", [("retrieval_cifar100.gin", "cifar_fs", "test"),
                                                  ("retrieval_cub.gin", "cub", "dml_test")])
def test_retrieval_configs_parse(name, dataset, split):
    gin.clear_config()
    parse_config([os.path.join(REPO, "gin_configs", name)], search_paths=[os.path.join(REPO, "gin_configs")])
    settings = RetrievalSettings()
    settings.check()
    assert (settings.split, settings.shortlist_size, tuple(settings.recall_ks)) == (split, 100, (1, 2, 4, 8))
    assert gin.query_parameter("run_experiment.dataset") == dataset


def test_cub_dml_split_is_classes_101_to_200(tmp_path):
    """On a fake CUB tree (one image per class; class c has c % 3 + 1 images)."""
    names = [name for split in ("train", "val", "test") for name in galleries.cub.split_classes(split)]
    for name in names:
        write_class_folder(str(tmp_path / "CUB_200_2011" / "images" / name), 0, _class_number(name) % 3 + 1)
    gallery = galleries.load_gallery_split("cub", "dml_test", str(tmp_path))
    assert [_class_number(name) for name in gallery.class_names] == list(range(101, 201))
    np.testing.assert_array_equal(gallery.class_sizes(), [c % 3 + 1 for c in range(101, 201)])
    assert all(f"/{gallery.class_names[label]}/" in path for path, label in zip(gallery.paths, gallery.labels))
    assert galleries.dml_overlap("dml_test") + galleries.dml_overlap("dml_train") == 100
    with pytest.raises(ValueError, match="`split` 'dml_test'"):
        galleries.load_gallery_split("cifar_fs", "dml_test", str(tmp_path))


def _class_number(name):
    return int(name.split(".")[0])


# The remaining flags of tools/retrieve.py, through the command line.


def run_retrieve(demo_dir, *flags):
    command = [sys.executable, os.path.join(REPO, "tools", "retrieve.py"), *flags]
    command += [f"--gin_bindings={binding}" for binding in tiny_bindings(demo_dir)]
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_split_ks_tolerance_weights_and_index_flags(tmp_path, demo_dir):
    configure_tiny(demo_dir)
    _, weights = fake_finished_run(str(tmp_path / "other_run"), seed=5)
    index_file, output = str(tmp_path / "val_index.npz"), str(tmp_path / "val.json")
    flags = [f"--model_dir={tmp_path / 'run'}", "--split=val", "--recall_ks=1,3", "--methods=uniform",
             "--shortlist=4", "--max_queries=8", "--query_batch_size=4", "--solver_tolerance=1e-4",
             f"--weights={weights}", f"--index_file={index_file}", f"--output={output}"]
    completed = run_retrieve(demo_dir, *flags)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "UNTRAINED" not in completed.stderr and "gallery embedded at" in completed.stdout
    with open(output) as stream:
        results = json.load(stream)
    # demo val: 16 classes of 20 images.
    assert (results["split"], results["gallery_size"], results["num_classes"]) == ("val", 320, 16)
    assert results["queries"] == 8 and results["shortlist_size"] == 4
    assert list(results["methods"]) == ["uniform"]
    assert sorted(key for key in results["methods"]["uniform"] if key.startswith("recall@")) == ["recall@1", "recall@3"]
    assert results["solver"]["solver_tolerance"] == 1e-4
    assert results["weights"] == os.path.abspath(weights) and results["trained"]
    index = load_index(index_file)
    assert index.size == 320 and index.metadata["split"] == "val"
    assert "R@3" in completed.stdout and "R@2" not in completed.stdout

    # The same command again: the saved index is reused (no embedding) and the scores repeat.
    again = run_retrieve(demo_dir, *flags)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "gallery embedded at" not in again.stdout
    with open(output) as stream:
        assert json.load(stream)["methods"]["uniform"]["recall@3"] == results["methods"]["uniform"]["recall@3"]


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--methods=global,mean", "retrieval.methods: `methods` must be distinct names"),
        ("--recall_ks=0", "retrieval.recall_ks: `ks` must be positive integers"),
        ("--shortlist=0", "retrieval.shortlist_size must be >= 1"),
        ("--solver_tolerance=0", "retrieval.solver_tolerance must be > 0"),
        ("--split=dml_test", "`split` 'dml_test'"),
        ("--weights=/nowhere/best.weights.h5", "/nowhere/best.weights.h5"),
    ],
)
def test_bad_flags_exit_2_with_one_line_naming_them(tmp_path, demo_dir, flag, message):
    output = tmp_path / "out.json"
    completed = run_retrieve(demo_dir, f"--model_dir={tmp_path / 'run'}", f"--output={output}", flag)
    assert completed.returncode == 2, completed.stderr[-3000:]
    error_lines = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0], completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    assert not output.exists()
