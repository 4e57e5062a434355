"""Time to the first result of the solver in a fresh process, this checkout against a git revision.

    python benchmarks/first_trace.py --baseline_rev=26973b1 [--rounds 3] [--batch 375] [--nodes 16]
        [--via function,layer]

Each measurement is a fresh Python process (TensorFlow caches traces and
AutoGraph conversions per process) that imports `tf_deepemd` and times, for
float32 DeepEMD-style problems (the quickstart's 375 of 16x16 by default):

* ``first call``: the solver inside a user's `tf.function` (AutoGraph on, as
  `tf.function` defaults), traced and run once; ``--via function`` calls
  `tf_deepemd.emd` there, ``--via layer`` a `tf_deepemd.EMDLayer` (Keras
  layers are not converted by AutoGraph, as in the library's own models);
* ``second call``: the same function again (steady state, for scale).

The checkout and the revision (extracted with `git archive` into a temporary
folder and put first on PYTHONPATH) alternate over ``--rounds``. Prints the
medians and the ratio of the checkout's to the revision's, and writes
benchmarks/results/first_trace.json.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results", "first_trace.json")

# Run in the child process: prints {"first call": s, "second call": s}.
_CHILD = """
import json, sys, time
sys.path.insert(0, {benchmarks!r})
import tensorflow as tf
import tf_deepemd
from emd_solver import deepemd_problems
inputs = [tf.constant(x, tf.float32) for x in deepemd_problems(0, {batch}, {nodes})]
emd = tf_deepemd.EMDLayer() if {via!r} == "layer" else tf_deepemd.emd
solve = tf.function(lambda *x: emd(*x))
times = {{}}
for name in ("first call", "second call"):
    start = time.perf_counter()
    solve(*inputs).numpy()
    times[name] = time.perf_counter() - start
print(json.dumps(times))
"""


def run_child(script, pythonpath):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=pythonpath)
    output = subprocess.run([sys.executable, script], env=env, check=True,
                            capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline_rev", required=True, help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=375)
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--via", default="function,layer",
                        help="comma-separated: function (tf_deepemd.emd), layer (EMDLayer)")
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args()

    vias = args.via.split(",")
    if not set(vias) <= {"function", "layer"}:
        parser.error(f"--via takes function and/or layer, got {args.via!r}")
    with tempfile.TemporaryDirectory() as scratch:
        # Files, not `python -c`: AutoGraph reads the source of what it converts.
        scripts = {}
        for via in vias:
            scripts[via] = os.path.join(scratch, f"first_trace_{via}.py")
            with open(scripts[via], "w") as file:
                file.write(_CHILD.format(benchmarks=HERE, batch=args.batch, nodes=args.nodes,
                                         via=via))
        baseline_dir = os.path.join(scratch, "baseline")
        os.makedirs(baseline_dir)
        archive = subprocess.run(["git", "-C", REPO, "archive", args.baseline_rev, "tf_deepemd"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", baseline_dir], input=archive, check=True)
        checkouts = {"this checkout": REPO, args.baseline_rev: baseline_dir}
        times = {(via, label): [] for via in vias for label in checkouts}
        for _ in range(args.rounds):
            for via in vias:
                for label, path in checkouts.items():
                    times[via, label].append(run_child(scripts[via], path))

    results = {}
    for via in vias:
        rows = {}
        for label in checkouts:
            runs = times[via, label]
            rows[label] = {name: [run[name] for run in runs] for name in runs[0]}
            print(f"via {via}, {label}: " + ", ".join(
                f"{name} {np.median(values):.2f} s ({', '.join(f'{v:.2f}' for v in values)})"
                for name, values in rows[label].items()))
        current, baseline = (rows[label]["first call"] for label in checkouts)
        ratio = float(np.median(current) / np.median(baseline))
        print(f"via {via}, first call, this checkout / {args.baseline_rev}: {ratio:.2f}")
        results[via] = {"seconds": rows, "first_call_ratio": ratio}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as file:
        json.dump({"command": " ".join(sys.argv), "problems": [args.batch, args.nodes],
                   "via": results}, file, indent=1)


if __name__ == "__main__":
    main()
