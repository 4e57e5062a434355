"""What a TF Serving client waits for: request latency of an exported model, cold and warm.

    python benchmarks/export_serving_latency.py [--gin_file gin_configs/quickstart.gin]
                                                [--model_dir runs/quickstart] [--repeats 5]
                                                [--output results.json]

Exports the run's model (untrained if ``--model_dir`` has no weights: the
latency does not depend on the weights) into a temporary folder, then, in a
FRESH process, loads it with the TF1 session loader TF Serving uses and
times ``serving_default`` requests of 5-way episodes with 15 queries at the
run's image size, as raw uint8 pixels of that size:

* load: the session loader (what TF Serving does before serving a version);
* first 1-shot request after loading, then the median of ``--repeats``;
* first 5-shot request (the SFC branch, traced separately inside the
  graph) after the 1-shot ones, then the median.

The first-request overhead is what the warmup file (``--warmup``) moves
into model loading. Prints one JSON object (and writes it to ``--output``
if given).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

TIMER = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import tensorflow as tf
    from tf_deepemd.export.warmup import episode_requests

    path, image_size, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    tf1 = tf.compat.v1
    results = {}
    start = time.perf_counter()
    session = tf1.Session(graph=tf.Graph())
    signature = tf1.saved_model.loader.load(session, ["serve"], path).signature_def["serving_default"]
    results["load_s"] = time.perf_counter() - start
    fetch = {name: info.name for name, info in signature.outputs.items()}

    def timed(request):
        feed = {signature.inputs[name].name: value for name, value in request.items()}
        start = time.perf_counter()
        session.run(fetch, feed)
        return time.perf_counter() - start

    for shot in (1, 5):
        (request,) = episode_requests(image_size, way=5, shots=(shot,), queries=15, seed=shot)
        results[f"{shot}shot_first_s"] = timed(request)
        results[f"{shot}shot_median_s"] = float(np.median([timed(request) for _ in range(repeats)]))
    print(json.dumps(results))
    """
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gin_file", default=os.path.join(REPO, "gin_configs", "quickstart.gin"))
    parser.add_argument("--gin_bindings", action="append", default=[])
    parser.add_argument("--model_dir", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    sys.path.insert(0, REPO)
    import gin
    import tensorflow as tf

    from tf_deepemd.export.from_run import export_run
    from tf_deepemd.training.gin_config import parse_config

    parse_config([args.gin_file], args.gin_bindings, [os.path.join(REPO, "gin_configs")])
    image_size = int(gin.query_parameter("run_experiment.image_size"))
    with tempfile.TemporaryDirectory() as folder:
        result, weights = export_run(os.path.join(folder, "deepemd"), args.model_dir)
        timer = subprocess.run(
            [sys.executable, "-c", TIMER, result.path, str(image_size), str(args.repeats)],
            capture_output=True, text=True, check=True, cwd=REPO,
            env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3"),
        )
    timings = json.loads(timer.stdout.strip().splitlines()[-1])
    report = {
        "config": os.path.relpath(args.gin_file, REPO),
        "bindings": args.gin_bindings,
        "trained_weights": weights is not None,
        "image_size": image_size,
        "episode": "5-way, 15 queries",
        "repeats": args.repeats,
        "seconds": {key: round(value, 3) for key, value in timings.items()},
        "tensorflow": tf.__version__,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))
    if args.output:
        with open(args.output, "w") as stream:
            json.dump(report, stream, indent=2)
            stream.write("\n")


if __name__ == "__main__":
    main()
