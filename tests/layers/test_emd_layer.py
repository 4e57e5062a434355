"""EMDLayer: serialization, model.fit, export to a SavedModel served by the session loader."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import op_def_registry

import tf_deepemd
from tests.reference import highs_emd
from tests.saved_model_checks import PYTHON_OPS, SESSION_RUNNER, graph_op_types, runs_on_cpu

NODES = 4


def make_flow_model():
    """features [B, NODES, 8] -> learned cost [B, NODES, NODES] -> flow."""
    features = keras.Input((NODES, 8), name="features")
    source = keras.Input((NODES,), name="source_weights")
    target = keras.Input((NODES,), name="target_weights")
    hidden = keras.layers.Dense(NODES, name="cost_head")(features)
    cost = keras.layers.Activation("softplus")(hidden)
    # Enough L2 that the flow moves smoothly with the cost (an LP vertex has
    # zero derivative almost everywhere).
    flow = tf_deepemd.EMDLayer(l2_strength=1.0, name="emd")(cost, source, target)
    return keras.Model([features, source, target], flow)


def test_config_round_trip():
    layer = tf_deepemd.EMDLayer(l2_strength=0.1, tolerance=1e-8, max_iterations=30, name="x")
    clone = tf_deepemd.EMDLayer.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, tf_deepemd.EMDLayer)
    assert restored.l2_strength == 0.1 and restored.max_iterations == 30


def test_layer_matches_reference(rng):
    cost = rng.uniform(size=(6, 5, 7)).astype(np.float32)
    source = rng.uniform(0.5, 1, size=(6, 5)).astype(np.float32)
    target = rng.uniform(0.5, 1, size=(6, 7)).astype(np.float32)
    flow = tf_deepemd.EMDLayer()(cost, source, target).numpy()
    for i in range(6):
        reference, _ = highs_emd(cost[i], source[i], target[i])
        np.testing.assert_allclose(np.sum(flow[i] * cost[i]), reference, rtol=1e-4)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"l2_strength": -1.0}, "l2_strength must be >= 0"),
        ({"tolerance": 0}, "tolerance must be > 0"),
        ({"tolerance": -1e-8}, "tolerance must be > 0"),
        ({"max_iterations": 0}, "max_iterations must be >= 1"),
        ({"num_shards": 0}, "num_shards must be >= 1"),
    ],
)
def test_constructor_rejects_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        tf_deepemd.EMDLayer(**arguments)


def test_num_shards_none_means_the_default(rng):
    """num_shards=None: one loop per core (`default_num_shards()`), the same
    flows as an explicit single loop."""
    cost = rng.uniform(size=(7, 4, 5))
    source = rng.uniform(0.5, 1, size=(7, 4))
    target = rng.uniform(0.5, 1, size=(7, 5))
    default_layer = tf_deepemd.EMDLayer()
    assert default_layer.num_shards is None
    solve = tf.function(lambda *inputs: default_layer(*inputs))
    np.testing.assert_allclose(solve(cost, source, target),
                               tf_deepemd.EMDLayer(num_shards=1)(cost, source, target), atol=1e-9)


def make_dataset(rng, count):
    """Targets: the flow that matches node i to node perm(i) for a per-sample permutation
    encoded in the features, so that the cost head has something to learn."""
    permutations = np.stack([rng.permutation(NODES) for _ in range(count)])
    features = rng.normal(size=(count, NODES, 8)).astype(np.float32) * 0.1
    features[np.arange(count)[:, None], np.arange(NODES)[None, :], permutations] += 1.0
    target_flow = np.zeros((count, NODES, NODES), np.float32)
    target_flow[np.arange(count)[:, None], np.arange(NODES)[None, :], permutations] = 1.0
    ones = np.ones((count, NODES), np.float32)
    return (features, ones, ones), target_flow


def test_trains_with_model_fit(rng):
    keras.utils.set_random_seed(int(rng.integers(1 << 30)))
    model = make_flow_model()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    inputs, target_flow = make_dataset(rng, 64)
    history = model.fit(inputs, target_flow, epochs=8, batch_size=16, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses


def test_export_serves_in_a_fresh_process(rng, tmp_path):
    model = make_flow_model()
    (features, source, target), _ = make_dataset(rng, 3)
    source = source * rng.uniform(0.5, 1.5, size=source.shape).astype(np.float32)
    target = target * source.sum(-1, keepdims=True) / target.sum(-1, keepdims=True)
    expected = model.predict([features, source, target], verbose=0)

    export_dir = str(tmp_path / "flow_model")
    # A Keras model of the user's own is exported with the stock-op solver
    # inside `stock_ops_only` (without it, the graph holds the kernel's op).
    with tf_deepemd.stock_ops_only():
        model.export(export_dir, verbose=False)

    ops = graph_op_types(export_dir)
    assert not ops & PYTHON_OPS
    assert all(op_def_registry.get(op) is not None and runs_on_cpu(op) for op in ops), ops
    assert "Cholesky" in ops  # the solver itself is in the graph

    # 1. TF Serving's loader: the TF1 session loader, in a fresh process.
    inputs_file = str(tmp_path / "inputs.npz")
    outputs_file = str(tmp_path / "outputs.npz")
    np.savez(inputs_file, features=features, source_weights=source, target_weights=target)
    jobs_file = tmp_path / "jobs.json"
    jobs_file.write_text(json.dumps(
        [{"signature": "serving_default", "inputs": inputs_file, "outputs": outputs_file}]
    ))
    subprocess.run(
        [sys.executable, SESSION_RUNNER, export_dir, str(jobs_file)],
        capture_output=True, text=True, check=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    with np.load(outputs_file) as outputs:
        (served,) = (outputs[name] for name in outputs.files)
    np.testing.assert_allclose(served, expected, atol=1e-5)

    # 2. saved_model_cli run, as documented for TF Serving debugging.
    for name, value in (("features", features), ("source", source), ("target", target)):
        np.save(str(tmp_path / f"{name}.npy"), value)
    output_dir = tmp_path / "cli_out"
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    subprocess.run(
        [
            cli, "run", "--dir", export_dir, "--tag_set", "serve",
            "--signature_def", "serving_default",
            "--inputs",
            f"features={tmp_path / 'features.npy'};"
            f"source_weights={tmp_path / 'source.npy'};"
            f"target_weights={tmp_path / 'target.npy'}",
            "--outdir", str(output_dir),
        ],
        capture_output=True, text=True, check=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    (output_file,) = output_dir.iterdir()
    np.testing.assert_allclose(np.load(output_file), expected, atol=1e-5)


def test_keras_file_round_trip(rng, tmp_path):
    model = make_flow_model()
    (features, source, target), _ = make_dataset(rng, 2)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        restored.predict([features, source, target], verbose=0),
        model.predict([features, source, target], verbose=0),
        atol=1e-6,
    )
