"""The export answers like the Keras model, in the loader TF Serving uses, in a fresh process."""

import json
import os
import subprocess
import sys

import numpy as np

import tf_deepemd
from tests.export.conftest import (
    episode_request,
    evaluation_preprocess,
    graph_preprocess,
    keras_outputs,
)
from tf_deepemd.ops.prototypes import class_means

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "session_runner.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def softmax(logits):
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def emd_request(rng, batch=3, rows=4, cols=5):
    source = rng.uniform(0.2, 1.0, (batch, rows)).astype(np.float32)
    target = rng.uniform(0.2, 1.0, (batch, cols)).astype(np.float32)
    target *= source.sum(-1, keepdims=True) / target.sum(-1, keepdims=True)
    cost = rng.uniform(0.0, 1.0, (batch, rows, cols)).astype(np.float32)
    return {"cost": cost, "source_weights": source, "target_weights": target}


def run_in_session_loader(export_dir, jobs, tmp_path):
    """[(signature, inputs)] -> list of output dicts (or error dicts), one fresh process."""
    specs = []
    for index, (signature, inputs) in enumerate(jobs):
        inputs_file = str(tmp_path / f"inputs{index}.npz")
        np.savez(inputs_file, **inputs)
        specs.append(
            {"signature": signature, "inputs": inputs_file, "outputs": str(tmp_path / f"out{index}.npz")}
        )
    jobs_file = tmp_path / "jobs.json"
    jobs_file.write_text(json.dumps(specs))
    completed = subprocess.run(
        [sys.executable, RUNNER, export_dir, str(jobs_file)],
        capture_output=True, text=True, timeout=300, env=ENV,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(jobs), completed.stdout
    results = []
    for line in lines:
        if "ok" in line:
            with np.load(line["ok"]) as outputs:
                results.append({name: outputs[name] for name in outputs.files})
        else:
            results.append(line)
    return results


def assert_episode_outputs(outputs, expected_logits):
    np.testing.assert_allclose(outputs["logits"], expected_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(outputs["probabilities"], softmax(expected_logits), atol=1e-5)
    assert outputs["classes"].dtype == np.int32
    np.testing.assert_array_equal(outputs["classes"], expected_logits.argmax(-1))


def test_session_loader_in_fresh_process_matches_keras(export, tiny_model, rng, tmp_path):
    one_shot = episode_request(rng, way=5, shot=1)
    two_shot = episode_request(rng, way=3, shot=2)
    two_shot["support_labels"] = rng.permutation(two_shot["support_labels"])  # any order
    images = {"images": rng.integers(0, 256, (3, 9, 30, 3), dtype=np.uint8)}
    problems = emd_request(rng)
    gap_in_labels = dict(one_shot, support_labels=np.array([0, 1, 3, 4, 4], np.int32))
    wrong_rank = dict(one_shot, query_images=one_shot["query_images"][0])

    served = run_in_session_loader(
        export.path,
        [
            ("serving_default", one_shot),
            ("serving_default", two_shot),
            ("embed", images),
            ("emd", problems),
            ("serving_default", gap_in_labels),
            ("serving_default", wrong_rank),
        ],
        tmp_path,
    )

    # One export, any way and shot: 5-way 1-shot, then 3-way 2-shot (SFC).
    # The export holds the stock-op solver; in this process the model runs
    # the compiled kernel. Both solve the matchings exactly enough for equal
    # 1-shot logits. This tiny model's SFC matchings have ties (several
    # optimal flows), where each solver picks its own and SFC's updates
    # follow it: the 2-shot reference is the in-process model on stock ops.
    expected_one = keras_outputs(tiny_model, one_shot)
    with tf_deepemd.stock_ops_only():
        expected_two = keras_outputs(tiny_model, two_shot)
    assert expected_one.shape == (4, 5) and expected_two.shape == (4, 3)
    assert_episode_outputs(served[0], expected_one)
    np.testing.assert_allclose(served[0]["logits"], expected_one, atol=1e-5)
    assert_episode_outputs(served[1], expected_two)
    # ... and the 2-shot answer comes from SFC prototypes, not class means.
    support_nodes = tiny_model.encoder(graph_preprocess(two_shot["support_images"]))
    query_nodes = tiny_model.encoder(graph_preprocess(two_shot["query_images"]))
    mean_logits = tiny_model.head(
        query_nodes, class_means(support_nodes, two_shot["support_labels"], 3)
    )
    assert np.abs(served[1]["logits"] - mean_logits).max() > 1e-2

    expected_nodes = tiny_model.encoder(evaluation_preprocess(images["images"]), training=False)
    assert served[2]["nodes"].shape == (3, 16, 8)
    np.testing.assert_allclose(served[2]["nodes"], expected_nodes, rtol=1e-4, atol=1e-5)

    expected_emd = tf_deepemd.solve_emd(
        problems["cost"], problems["source_weights"], problems["target_weights"]
    )
    np.testing.assert_allclose(served[3]["flow"], expected_emd.flow, atol=1e-5)
    np.testing.assert_allclose(served[3]["distance"], expected_emd.distance, atol=1e-5)

    # The session loader reports bad requests with the signature's assertions.
    assert served[4]["error"] == "InvalidArgumentError", served[4]
    assert "every class 0 .. way-1" in served[4]["message"]
    assert served[5]["error"] == "InvalidArgumentError", served[5]
    assert "`query_images` must have rank 4" in served[5]["message"]


def test_saved_model_cli_run_answers_an_episode(export, tiny_model, rng, tmp_path):
    request = episode_request(rng, way=3, shot=2, queries=2)
    for name, value in request.items():
        np.save(str(tmp_path / f"{name}.npy"), value)
    output_dir = tmp_path / "cli_out"
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    inputs = ";".join(f"{name}={tmp_path / name}.npy" for name in request)
    completed = subprocess.run(
        [
            cli, "run", "--dir", export.path, "--tag_set", "serve",
            "--signature_def", "serving_default", "--inputs", inputs, "--outdir", str(output_dir),
        ],
        capture_output=True, text=True, timeout=300, env=ENV,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    outputs = {path.stem: np.load(path) for path in output_dir.iterdir()}
    assert sorted(outputs) == ["classes", "logits", "probabilities"]
    assert_episode_outputs(outputs, keras_outputs(tiny_model, request))


def test_in_graph_preprocessing_is_evaluation_preprocessing(rng):
    """The export's batched preprocessing equals the evaluation pipeline's per-image transform.

    (The reference outputs above use the export's own preprocessing function
    so that both sides see bit-identical model inputs: the k-shot SFC fit
    (SGD at learning rate 100, as officially) turns input differences of one
    float32 ulp into logit differences of up to ~1 on this tiny untrained
    model.) Shrinking (antialiased), enlarging, non-square and exact sizes.
    """
    for size in ((40, 28), (7, 7), (16, 16), (9, 30)):
        images = rng.integers(0, 256, (2, *size, 3), dtype=np.uint8)
        served = graph_preprocess(images)
        assert served.shape == (2, 16, 16, 3)
        np.testing.assert_allclose(served, evaluation_preprocess(images), atol=2e-6)
