"""EMD solvers side by side on identical DeepEMD-style problems.

    python benchmarks/emd_solver.py [--batches 50 375] [--nodes 9 25 50] [--repeats 5]

Compares, on the same problems (cost = 1 - cosine of random 640-d ReLU
features, cross-reference weights normalised to sum N, as in the official
DeepEMD code):

* tf_deepemd.emd, forward and forward+backward, float32 and float64 inputs;
* OpenCV `cv2.EMD` in a per-pair Python loop (the official test-time path);
* POT `ot.emd` in a loop;
* HiGHS (highspy) in a loop: also the reference objective;
* qpth 0.0.18 in the official 'L2' training form (l2 1e-6), forward and
  forward+backward, when torch and qpth are installed (one torch thread:
  with two, torch 2.13's batched LU corrupts its pivots).

Each (method, batch, N) runs in its own worker process so that its peak memory
(growth of the resident set during the timed runs, VmHWM) is its own.
Times are the median of `--repeats` runs after one warm-up. The objective
error is max over problems of |objective - HiGHS| / HiGHS. Prints a table and
writes benchmarks/results/emd_solver.json.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "emd_solver.json")
QPTH_L2_STRENGTH = 1e-6  # train_meta.py's default for the 'L2' form


def deepemd_problems(seed, batch, num_nodes, channels=640):
    """cost [B, N, N], source [B, N], target [B, N] float64 (see module doc)."""
    rng = np.random.default_rng(seed)
    query = np.maximum(rng.normal(size=(batch, num_nodes, channels)), 0.0)
    support = np.maximum(rng.normal(size=(batch, num_nodes, channels)), 0.0)

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    cost = 1.0 - np.einsum("bnc,bmc->bnm", unit(query), unit(support))
    source = np.maximum(np.einsum("bnc,bc->bn", query, support.mean(1)), 0.0) + 1e-3
    target = np.maximum(np.einsum("bnc,bc->bn", support, query.mean(1)), 0.0) + 1e-3
    source *= num_nodes / source.sum(-1, keepdims=True)
    target *= num_nodes / target.sum(-1, keepdims=True)
    return cost, source, target


# ---------------------------------------------------------------------------
# Methods: each `setup(cost, source, target)` returns a zero-argument callable
# that solves the whole batch and returns the per-problem objectives.
# ---------------------------------------------------------------------------


def setup_tf_deepemd(cost, source, target, dtype, backward):
    import tensorflow as tf

    import tf_deepemd

    # One thread per operation, and the solver's shards (one per core) run
    # concurrently: its operations are too small to split across threads
    # (TF's default of 2 intra-op threads was ~1.5x slower here).
    tf.config.threading.set_intra_op_parallelism_threads(1)

    inputs = [tf.constant(x, dtype) for x in (cost, source, target)]
    spec = [tf.TensorSpec(x.shape, dtype) for x in inputs]

    @tf.function(input_signature=spec)
    def forward(cost, source, target):
        flow = tf_deepemd.emd(cost, source, target)
        return tf.reduce_sum(cost * flow, axis=[-2, -1])

    @tf.function(input_signature=spec)
    def forward_backward(cost, source, target):
        with tf.GradientTape() as tape:
            tape.watch([cost, source, target])
            flow = tf_deepemd.emd(cost, source, target)
            # DeepEMD's logits weigh the flow with the similarity 1 - cost.
            loss = tf.reduce_sum((1.0 - cost) * flow)
        gradients = tape.gradient(loss, [cost, source, target])
        with tf.control_dependencies(gradients):
            return tf.reduce_sum(cost * flow, axis=[-2, -1])

    function = forward_backward if backward else forward
    return lambda: function(*inputs).numpy()


def setup_cv2(cost, source, target):
    import cv2

    cost, source, target = (x.astype(np.float32) for x in (cost, source, target))

    def run():
        objectives = []
        for c, a, b in zip(cost, source, target):
            _, _, flow = cv2.EMD(a[:, None], b[:, None], cv2.DIST_USER, c)
            objectives.append(float(np.sum(flow * c)))
        return np.array(objectives)

    return run


def setup_pot(cost, source, target):
    import ot

    def run():
        return np.array([np.sum(ot.emd(a, b, c) * c) for c, a, b in zip(cost, source, target)])

    return run


def highs_objective(cost, source, target):
    """One EMD LP with highspy (balanced: equality marginals)."""
    import highspy

    num_rows, num_cols = cost.shape
    lp = highspy.HighsLp()
    lp.num_col_ = num_rows * num_cols
    lp.num_row_ = num_rows + num_cols
    lp.col_cost_ = cost.ravel()
    lp.col_lower_ = np.zeros(num_rows * num_cols)
    lp.col_upper_ = np.full(num_rows * num_cols, highspy.kHighsInf)
    lp.row_lower_ = np.concatenate([source, target])
    lp.row_upper_ = np.concatenate([source, target])
    rows, cols = np.divmod(np.arange(num_rows * num_cols), num_cols)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.arange(0, 2 * num_rows * num_cols + 1, 2)
    lp.a_matrix_.index_ = np.stack([rows, num_rows + cols], axis=1).ravel()
    lp.a_matrix_.value_ = np.ones(2 * num_rows * num_cols)
    solver = highspy.Highs()
    solver.setOptionValue("output_flag", False)
    solver.passModel(lp)
    solver.run()
    return solver.getInfo().objective_function_value


def setup_highs(cost, source, target):
    # The balanced problem with equality marginals; the targets are rescaled to
    # the source total so that rounding cannot make it infeasible.
    target = target * source.sum(-1, keepdims=True) / target.sum(-1, keepdims=True)
    return lambda: np.array(
        [highs_objective(c, a, b) for c, a, b in zip(cost, source, target)]
    )


def setup_qpth(cost, source, target, backward):
    import torch
    from qpth.qp import QPFunction

    torch.set_num_threads(1)
    batch, num_rows, num_cols = cost.shape
    num_vars = num_rows * num_cols
    dtype = torch.float64
    cost_t = torch.tensor(cost, dtype=dtype, requires_grad=backward)
    source_t = torch.tensor(source, dtype=dtype, requires_grad=backward)
    target_t = torch.tensor(target, dtype=dtype, requires_grad=backward)

    # emd_inference_qpth, form 'L2': Q = l2 I, p = cost; -x <= 0, row sums <=
    # source, column sums <= target; total flow = min of the totals.
    eye = torch.eye(num_vars, dtype=dtype)
    row_sum = torch.kron(torch.eye(num_rows, dtype=dtype), torch.ones(1, num_cols, dtype=dtype))
    col_sum = torch.kron(torch.ones(1, num_rows, dtype=dtype), torch.eye(num_cols, dtype=dtype))
    inequality = torch.cat([-eye, row_sum, col_sum]).expand(batch, -1, -1)
    equality = torch.ones(batch, 1, num_vars, dtype=dtype)
    quadratic = (QPTH_L2_STRENGTH * eye).expand(batch, -1, -1)

    def run():
        bounds = torch.cat(
            [torch.zeros(batch, num_vars, dtype=dtype), source_t, target_t], dim=1
        )
        total = torch.minimum(source_t.sum(-1), target_t.sum(-1))[:, None]
        flow = QPFunction(verbose=-1)(
            quadratic, cost_t.reshape(batch, -1), inequality, bounds, equality, total
        ).view(batch, num_rows, num_cols)
        if backward:
            ((1.0 - cost_t) * flow).sum().backward()
        return (cost_t * flow).sum((-2, -1)).detach().numpy()

    return run


METHODS = {
    "tf_deepemd fwd f32": lambda *p: setup_tf_deepemd(*p, "float32", False),
    "tf_deepemd fwd f64": lambda *p: setup_tf_deepemd(*p, "float64", False),
    "tf_deepemd fwd+bwd f32": lambda *p: setup_tf_deepemd(*p, "float32", True),
    "tf_deepemd fwd+bwd f64": lambda *p: setup_tf_deepemd(*p, "float64", True),
    "cv2.EMD loop": setup_cv2,
    "POT ot.emd loop": setup_pot,
    "HiGHS loop": setup_highs,
    "qpth L2 fwd": lambda *p: setup_qpth(*p, False),
    "qpth L2 fwd+bwd": lambda *p: setup_qpth(*p, True),
}
OPTIONAL_MODULES = {"cv2.EMD loop": "cv2", "POT ot.emd loop": "ot", "HiGHS loop": "highspy",
                    "qpth L2 fwd": "qpth", "qpth L2 fwd+bwd": "qpth"}


def _status_mb(field):
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise KeyError(field)


def worker(method, problems_file, repeats):
    """Runs one method on one batch in this process; prints a JSON line.

    Peak memory is the high-water mark of the resident set during the timed
    runs (reset after the warm-up through /proc/self/clear_refs) minus the
    resident set before them: what one more solve of the batch costs, without
    one-time costs such as imports and graph tracing.
    """
    data = np.load(problems_file)
    cost, source, target = data["cost"], data["source"], data["target"]
    run = METHODS[method](cost, source, target)
    objectives = run()  # warm-up (tracing, first allocations)
    baseline = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as file:
        file.write("5")  # resets VmHWM to the current resident set
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        objectives = run()
        times.append(time.perf_counter() - start)
    print(json.dumps({
        "seconds": float(np.median(times)),
        "all_seconds": times,
        "peak_mb": max(_status_mb("VmHWM") - baseline, 0.0),
        "objectives": np.asarray(objectives, np.float64).tolist(),
    }))


def available(method):
    module = OPTIONAL_MODULES.get(method)
    return module is None or importlib.util.find_spec(module) is not None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[50, 375])
    parser.add_argument("--nodes", type=int, nargs="+", default=[9, 25, 50])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--qpth_max_variables", type=int, default=50 * 625,
                        help="skip qpth above batch*N*N (its memory grows as batch*N^4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=RESULTS)
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "PROBLEMS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.repeats)
        return

    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for batch in args.batches:
            for nodes in args.nodes:
                problems_file = os.path.join(scratch, f"problems_{batch}_{nodes}.npz")
                cost, source, target = deepemd_problems(args.seed, batch, nodes)
                np.savez(problems_file, cost=cost, source=source, target=target)
                reference = setup_highs(cost, source, target)()
                for method in args.methods:
                    if not available(method):
                        print(f"skip {method}: not installed", file=sys.stderr)
                        continue
                    if method.startswith("qpth") and batch * nodes * nodes > args.qpth_max_variables:
                        continue
                    command = [sys.executable, __file__, "--repeats", str(args.repeats),
                               "--worker", method, problems_file]
                    completed = subprocess.run(command, capture_output=True, text=True,
                                               env=environment)
                    if completed.returncode != 0:
                        error = completed.stderr.strip().splitlines()[-1:]
                        print(f"{method} B={batch} N={nodes} failed: {error}", file=sys.stderr)
                        rows.append({"method": method, "batch": batch, "nodes": nodes,
                                     "error": error})
                        continue
                    result = json.loads(completed.stdout.strip().splitlines()[-1])
                    objectives = np.array(result.pop("objectives"))
                    result["objective_error"] = float(
                        np.max(np.abs(objectives - reference) / np.abs(reference))
                    )
                    row = {"method": method, "batch": batch, "nodes": nodes, **result}
                    rows.append(row)
                    print(f"{method:24s} B={batch:4d} N={nodes:3d} {row['seconds'] * 1e3:10.1f} ms "
                          f"{row['peak_mb']:9.1f} MB  err {row['objective_error']:.1e}",
                          file=sys.stderr, flush=True)

    print(format_table(rows))
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as file:
        json.dump({"command": " ".join(sys.argv), "cpu_count": os.cpu_count(), "rows": rows},
                  file, indent=1)


def format_table(rows):
    """Markdown table; ratios are against the cv2 loop of the same batch and N."""
    baseline = {(r["batch"], r["nodes"]): r["seconds"] for r in rows
                if r["method"] == "cv2.EMD loop" and "seconds" in r}
    lines = ["| method | batch | N | median ms | x cv2 loop | peak MB | objective error |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "seconds" not in r:
            lines.append(f"| {r['method']} | {r['batch']} | {r['nodes']} | failed | | | |")
            continue
        ratio = r["seconds"] / baseline[(r["batch"], r["nodes"])] if (r["batch"], r["nodes"]) in baseline else float("nan")
        lines.append(
            f"| {r['method']} | {r['batch']} | {r['nodes']} | {r['seconds'] * 1e3:.1f} | "
            f"{ratio:.2f} | {r['peak_mb']:.0f} | {r['objective_error']:.1e} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
