"""Figures: node geometry, matching data, PNG files written by the functions, the callback and the tool."""

import csv
import os
import subprocess
import sys

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("matplotlib")

from tests.training.tiny_config import configure_tiny, tiny_bindings  # noqa: E402
from tf_deepemd.data import load_split  # noqa: E402
from tf_deepemd.layers.deepemd_head import DeepEMDHead  # noqa: E402
from tf_deepemd.models import make_encoder, make_model  # noqa: E402
from tf_deepemd.visualization import (  # noqa: E402
    AccuracyPlot,
    match_images,
    node_boxes,
    plot_episode,
    plot_matching,
    plot_training_curves,
    predict_episode,
    read_csv_log,
    sample_episode,
    weight_heatmap,
)
from tf_deepemd.visualization.from_run import visualize_run  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_BACKBONE = {"widths": (8, 8, 8, 8), "num_pools": 2}  # 16 px -> 4 x 4 x 8
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert os.path.isfile(path), path
    with open(path, "rb") as stream:
        head = stream.read(8)
    assert head == PNG_SIGNATURE and os.path.getsize(path) > 5000, path


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(3)
    model = make_model("conv4", "fcn", backbone_options=TINY_BACKBONE, gradient_mode="stop_flow")
    model.build([(None, 16, 16, 3), (None,), (None, 16, 16, 3)])
    return model


@pytest.fixture(autouse=True)
def clear_gin():
    yield
    gin.clear_config()


def write_log(path, rows, columns=("epoch", "accuracy", "loss", "val_episode_accuracy", "val_episode_accuracy_ci95")):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(columns)
        writer.writerows(rows)


def test_fcn_node_boxes_are_the_pooling_regions(rng):
    """Each pyramid node is the mean of the dense cells inside its box (PyTorch bins, overlapping for 3)."""
    encoder = make_encoder("fcn", "conv4", backbone_options=TINY_BACKBONE, feature_pyramid=(3, 2, 1))
    images = tf.constant(rng.normal(size=(2, 16, 16, 3)), tf.float32)
    nodes = encoder(images).numpy()
    boxes = node_boxes(encoder, 16)
    assert boxes.shape == (9 + 4 + 1 + 16, 4) == (nodes.shape[1], 4)
    dense_boxes, dense_nodes = boxes[-16:], nodes[:, -16:]
    # The dense cells tile the image exactly, row-major.
    np.testing.assert_allclose(dense_boxes[5], [0.25, 0.25, 0.5, 0.5])
    coverage = sum(
        np.outer((np.arange(16) + 0.5) / 16 >= b[0], np.ones(16)) * ((np.arange(16) + 0.5) / 16 < b[2])[:, None]
        * (((np.arange(16) + 0.5) / 16 >= b[1]) & ((np.arange(16) + 0.5) / 16 < b[3]))[None, :]
        for b in dense_boxes
    )
    np.testing.assert_array_equal(coverage, np.ones((16, 16)))
    centres = np.stack([(dense_boxes[:, 0] + dense_boxes[:, 2]) / 2, (dense_boxes[:, 1] + dense_boxes[:, 3]) / 2], 1)
    for k, box in enumerate(boxes[:-16]):
        inside = ((centres[:, 0] > box[0]) & (centres[:, 0] < box[2]) & (centres[:, 1] > box[1])
                  & (centres[:, 1] < box[3]))
        np.testing.assert_allclose(nodes[:, k], dense_nodes[:, inside].mean(1), rtol=1e-5, atol=1e-6)


def test_grid_node_boxes_are_its_crops():
    encoder = make_encoder("grid", "conv4", backbone_options=TINY_BACKBONE, patch_list=(2,), patch_ratio=1.0)
    np.testing.assert_allclose(
        node_boxes(encoder, 16), [[0, 0, 0.5, 0.5], [0, 0.5, 0.5, 1], [0.5, 0, 1, 0.5], [0.5, 0.5, 1, 1]]
    )
    with pytest.raises(ValueError, match="`encoder`"):
        node_boxes(keras.layers.Dense(2), 16)


def test_weight_heatmap_averages_covering_nodes():
    boxes = np.array([[0.0, 0.0, 1.0, 0.5], [0.0, 0.25, 1.0, 1.0]])  # overlap on x in [0.25, 0.5)
    heat = weight_heatmap(boxes, [2.0, 4.0], resolution=4)
    np.testing.assert_allclose(heat[0], [2.0, 3.0, 4.0, 4.0])


def test_match_images_is_the_heads_matching(tiny_model, rng):
    query, support = (tf.constant(rng.normal(size=(16, 16, 3)), tf.float32) for _ in range(2))
    match = match_images(tiny_model, query, support)
    nodes = tiny_model.encoder(tf.stack([query, support]))
    expected = tiny_model.head.match(nodes[:1], nodes[1:])
    np.testing.assert_allclose(match.flow, expected["flow"][0, 0], atol=1e-6)
    np.testing.assert_allclose(match.query_weights, expected["source_weights"][0, 0], rtol=1e-6)
    assert match.flow.sum() == pytest.approx(16, rel=1e-4) and match.query_weights.sum() == pytest.approx(16)
    assert match.score == pytest.approx(np.sum(match.similarity * match.flow) / 16, abs=1e-5)
    assert match.logit == pytest.approx(tiny_model.head.temperature * match.score, rel=1e-5)
    uniform = match_images(tiny_model, query, support, node_weights="uniform")
    np.testing.assert_allclose(uniform.support_weights, np.ones(16))
    with pytest.raises(ValueError, match="`support_image`"):
        match_images(tiny_model, query, tf.zeros([20, 20, 3]))
    with pytest.raises(ValueError, match="`node_weights`"):
        match_images(tiny_model, query, support, node_weights="mean")
    assert isinstance(tiny_model.head, DeepEMDHead)


def test_figures_are_written_with_titles_colour_bars_and_legends(tmp_path, tiny_model, demo_dir):
    split = load_split("demo", "test", demo_dir, images_per_class=20)
    episode = sample_episode(split, way=5, shot=1, query=2, image_size=16, seed=4)
    assert episode.query_images.shape == (10, 16, 16, 3) and episode.query_display.dtype == np.uint8
    assert episode.class_names[0].startswith("pattern_")
    logits = predict_episode(tiny_model, episode)
    assert logits.shape == (10, 5)

    figure = plot_episode(episode, logits, path=str(tmp_path / "episode.png"))
    assert_png(tmp_path / "episode.png")
    assert "5-way 1-shot episode" in figure._suptitle.get_text() and figure.legends

    match = match_images(tiny_model, episode.query_images[0], episode.support_images[0])
    figure = plot_matching(episode.query_display[0], episode.support_display[0], match, num_flows=5,
                           path=str(tmp_path / "matching.png"))
    assert_png(tmp_path / "matching.png")
    colour_bars = [axes for axes in figure.axes if axes.get_label() == "<colorbar>"]
    assert len(colour_bars) == 2 and figure.legends
    assert "score" in figure._suptitle.get_text()

    log_path = str(tmp_path / "meta_train" / "log.csv")
    write_log(log_path, [(0, 0.2, 2.0, 0.3, 0.02), (1, 0.4, 1.5, 0.5, 0.02), (1, 0.45, 1.4, 0.55, 0.02),
                         (2, 0.6, 1.0, 0.6, 0.02)])  # epoch 1 repeated, as after a resume
    figure = plot_training_curves([log_path], path=str(tmp_path / "accuracy.png"))
    assert_png(tmp_path / "accuracy.png")
    assert any(axes.get_legend() for axes in figure.axes)


def test_read_csv_log_keeps_the_last_row_of_an_epoch(tmp_path):
    path = str(tmp_path / "log.csv")
    write_log(path, [(0, 0.2, 2.0, 0.3, 0.02), (1, 0.4, 1.5, 0.5, 0.02), (1, 0.45, 1.4, 0.55, 0.02)])
    values = read_csv_log(path)
    np.testing.assert_array_equal(values["epoch"], [0, 1])
    np.testing.assert_allclose(values["val_episode_accuracy"], [0.3, 0.55])


def test_accuracy_plot_callback_writes_next_to_the_csv_log(tmp_path, rng):
    stage_dir = tmp_path / "pretrain"
    csv_path = str(stage_dir / "log.csv")
    stage_dir.mkdir()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    x, y = rng.normal(size=(32, 4)).astype(np.float32), rng.integers(0, 3, 32)
    model.fit(x, y, epochs=3, verbose=0, validation_data=(x, y),
              callbacks=[keras.callbacks.CSVLogger(csv_path), AccuracyPlot(csv_path)])
    assert_png(str(stage_dir / "accuracy.png"))
    assert list(read_csv_log(csv_path)["epoch"]) == [0, 1, 2]


def test_visualize_run_errors_name_the_argument(tmp_path, demo_dir):
    configure_tiny(demo_dir)
    with pytest.raises(ValueError, match="`figures`"):
        visualize_run(str(tmp_path), str(tmp_path / "run"), figures=("flows",))
    with pytest.raises(ValueError, match="No training log"):
        visualize_run(str(tmp_path), str(tmp_path / "run"), figures=("accuracy",))
    with pytest.raises(ValueError, match="`query_index`"):
        visualize_run(str(tmp_path), str(tmp_path / "run"), figures=("matching",), query_index=99)


def test_visualize_tool_writes_the_three_figures(tmp_path, demo_dir):
    model_dir, output_dir = tmp_path / "run", tmp_path / "figures"
    write_log(str(model_dir / "pretrain" / "log.csv"), [(0, 0.2, 2.0, 0.3, 0.02), (1, 0.4, 1.5, 0.5, 0.02)])
    command = [sys.executable, os.path.join(REPO, "tools", "visualize.py"), f"--model_dir={model_dir}",
               f"--output_dir={output_dir}", "--num_flows=6"]
    command += [f"--gin_bindings={binding}" for binding in tiny_bindings(demo_dir)]
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "UNTRAINED" in completed.stderr
    for name in ("matching", "episode", "accuracy"):
        assert_png(str(output_dir / f"{name}.png"))
        assert f"{name}: {output_dir / name}.png" in completed.stdout


def test_accuracy_plot_without_matplotlib_warns_once_and_never_stops_training(tmp_path, monkeypatch, caplog):
    from tf_deepemd.visualization import figures, training_curves

    def missing():
        raise ImportError(figures.INSTALL_HINT)

    monkeypatch.setattr(training_curves, "require_matplotlib", missing)
    csv_path = str(tmp_path / "log.csv")
    write_log(csv_path, [(0, 0.2, 2.0, 0.3, 0.02)])
    callback = AccuracyPlot(csv_path)
    with caplog.at_level("WARNING"):
        for epoch in range(3):
            callback.on_epoch_end(epoch)
    assert [r.getMessage() for r in caplog.records].count(f"No accuracy plot: {figures.INSTALL_HINT}") == 1
    assert not os.path.exists(tmp_path / "accuracy.png")
