"""EMD solvers side by side on identical DeepEMD-style problems.

    python benchmarks/emd_solver.py [--batches 50 375] [--nodes 9 25 50] [--repeats 15]
    python benchmarks/emd_solver.py --goals [--baseline OLD_EMD.py]

Compares, on the same problems (cost = 1 - cosine of random 640-d ReLU
features, cross-reference weights normalised to sum N, as in the official
DeepEMD code):

* tf_deepemd.emd with the compiled kernel (`implementation='kernel'`):
  forward and forward+backward, float32 and float64 inputs, in a
  `tf.function` and (one query) eagerly; the 'L2' form forward+backward;
* tf_deepemd.emd with the stock-op interior point (`implementation='tf_ops'`);
* OpenCV `cv2.EMD` in a per-pair Python loop (the official test-time path);
* POT in a loop: `ot.emd` and its C++ network simplex `emd_c` called directly;
* HiGHS (highspy) in a loop: also the reference objective;
* qpth 0.0.18 in the official 'L2' form (l2 1e-4, the default of the
  official solver function), forward and forward+backward, when torch and
  qpth are installed (one torch thread: with two, torch 2.13's batched LU
  corrupts its pivots).

`--baseline PATH` adds the same tf_deepemd methods run with another version
of the solver module (a self-contained copy of the solver's `emd` from an
earlier version), so that before and after are timed in one run; the table
then ends with the time ratios new / baseline.

`--goals` runs only the cases of the speed goals and prints them as ratios
of this run's medians, with the ratio of each round (`--rounds`): see GOALS.

TensorFlow runs with its default thread pools unless `--intra_op_threads` is
given. Each (method, batch, N) runs in its own worker process so that its peak memory
(growth of the resident set during the timed runs, VmHWM) is its own.
Times are the median of `--repeats` runs after one warm-up (pooled over
`--rounds` interleaved runs of every method). The objective
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
GOAL_RESULTS = os.path.join(HERE, "results", "emd_solver_goals.json")
# The 'L2' form's strength: the official solver function's default (its
# training script passes 1e-6); tf_deepemd and qpth solve the same problems.
L2_STRENGTH = 1e-4


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


def load_solver(baseline_path=None):
    """`tf_deepemd.emd`, or `emd` of the solver module file at `baseline_path`."""
    if baseline_path is None:
        import tf_deepemd

        return tf_deepemd.emd
    spec = importlib.util.spec_from_file_location("baseline_emd", baseline_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.emd


def setup_tf_deepemd(cost, source, target, dtype, backward, implementation="kernel",
                     l2_strength=0.0, eager=False, baseline_path=None):
    import tensorflow as tf

    emd = load_solver(baseline_path)
    options = {} if baseline_path else {"implementation": implementation}
    if l2_strength:
        options["l2_strength"] = l2_strength
    inputs = [tf.constant(x, dtype) for x in (cost, source, target)]
    spec = [tf.TensorSpec(x.shape, dtype) for x in inputs]

    def forward(cost, source, target):
        flow = emd(cost, source, target, **options)
        return tf.reduce_sum(cost * flow, axis=[-2, -1])

    def forward_backward(cost, source, target):
        with tf.GradientTape() as tape:
            tape.watch([cost, source, target])
            flow = emd(cost, source, target, **options)
            # DeepEMD's logits weigh the flow with the similarity 1 - cost.
            loss = tf.reduce_sum((1.0 - cost) * flow)
        gradients = tape.gradient(loss, [cost, source, target])
        with tf.control_dependencies(gradients):
            return tf.reduce_sum(cost * flow, axis=[-2, -1])

    function = forward_backward if backward else forward
    if not eager:
        function = tf.function(function, input_signature=spec)
    return lambda: function(*inputs).numpy()


def setup_empty_function(cost, source, target):
    """The floor of any solver called through a `tf.function`: a call that
    returns its input."""
    import tensorflow as tf

    inputs = [tf.constant(x, tf.float32) for x in (cost, source, target)]
    identity = tf.function(lambda cost, source, target: tf.reduce_sum(cost, axis=[-2, -1]))
    return lambda: identity(*inputs).numpy() * np.nan


def setup_raw_op(cost, source, target):
    """The kernel's op called eagerly on ready tensors, nothing around it:
    the floor of an eager `tf_deepemd.emd` call."""
    import tensorflow as tf

    from tf_deepemd.ops.emd import kernel

    inputs = [tf.constant(x, tf.float32) for x in (cost, source, target)]
    l2_strength = tf.constant(0.0, tf.float64)
    return lambda: kernel.transport_solve(*inputs, l2_strength)[0].numpy().sum((-2, -1)) * np.nan


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


def setup_pot_emd_c(cost, source, target):
    from ot.lp.emd_wrap import emd_c

    cost = np.ascontiguousarray(cost)

    def run():
        return np.array([np.sum(emd_c(a, b, c, 100000, 1)[0] * c)
                         for c, a, b in zip(cost, source, target)])

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
    quadratic = (L2_STRENGTH * eye).expand(batch, -1, -1)

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


# name -> (dtype, backward, implementation, l2_strength, eager)
TF_VARIANTS = {
    "fwd f32": ("float32", False, "kernel", 0.0, False),
    "fwd f64": ("float64", False, "kernel", 0.0, False),
    "fwd f32 eager": ("float32", False, "kernel", 0.0, True),
    "fwd+bwd f32": ("float32", True, "kernel", 0.0, False),
    "fwd+bwd f64": ("float64", True, "kernel", 0.0, False),
    "L2 fwd+bwd f32": ("float32", True, "kernel", L2_STRENGTH, False),
    "tf_ops fwd f32": ("float32", False, "tf_ops", 0.0, False),
    "tf_ops L2 fwd+bwd f32": ("float32", True, "tf_ops", L2_STRENGTH, False),
}
METHODS = {
    **{f"tf_deepemd {name}": lambda *p, v=variant: setup_tf_deepemd(*p, *v)
       for name, variant in TF_VARIANTS.items()},
    "empty tf.function call": setup_empty_function,
    "kernel op alone, eager": setup_raw_op,
    "cv2.EMD loop": setup_cv2,
    "POT ot.emd loop": setup_pot,
    "POT emd_c loop": setup_pot_emd_c,
    "HiGHS loop": setup_highs,
    "qpth L2 fwd": lambda *p: setup_qpth(*p, False),
    "qpth L2 fwd+bwd": lambda *p: setup_qpth(*p, True),
}
# The same variants with the solver module given by --baseline.
BASELINE_METHODS = {f"baseline {name}": variant for name, variant in TF_VARIANTS.items()
                    if variant[2] == "kernel"}
OPTIONAL_MODULES = {"cv2.EMD loop": "cv2", "POT ot.emd loop": "ot", "POT emd_c loop": "ot",
                    "HiGHS loop": "highspy", "qpth L2 fwd": "qpth", "qpth L2 fwd+bwd": "qpth"}
# The speed goals: (name, batch, N, method, peer, target on method time /
# peer time; with no peer, on the method's time in seconds).
GOALS = [
    ("forward 375 x 25x25 / cv2 loop", 375, 25, "tf_deepemd fwd f32", "cv2.EMD loop", 0.25),
    ("forward 375 x 25x25 / POT emd_c loop", 375, 25, "tf_deepemd fwd f32", "POT emd_c loop",
     0.5),
    ("forward 5 x 25x25 / cv2 loop", 5, 25, "tf_deepemd fwd f32", "cv2.EMD loop", 0.5),
    ("forward 5 x 25x25 eager / cv2 loop", 5, 25, "tf_deepemd fwd f32 eager", "cv2.EMD loop",
     0.5),
    ("L2 fwd+bwd 50 x 9x9 / qpth", 50, 9, "tf_deepemd L2 fwd+bwd f32", "qpth L2 fwd+bwd", 1e-3),
    ("L2 fwd+bwd 50 x 25x25 / qpth", 50, 25, "tf_deepemd L2 fwd+bwd f32", "qpth L2 fwd+bwd",
     1e-4),
    ("SFC update 240 x 16x16 forward (seconds)", 240, 16, "tf_deepemd fwd f32", None, 3e-3),
]
# Informational peers timed beside the goals' methods.
GOAL_PEERS = {(240, 16): ["cv2.EMD loop", "POT emd_c loop"],
              (375, 25): ["tf_deepemd tf_ops fwd f32"],
              (5, 25): ["empty tf.function call", "kernel op alone, eager"],
              (50, 9): ["empty tf.function call"]}


def _status_mb(field):
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise KeyError(field)


def worker(method, problems_file, args):
    """Runs one method on one batch in this process; prints a JSON line.

    Peak memory is the high-water mark of the resident set during the timed
    runs (reset after the warm-up through /proc/self/clear_refs) minus the
    resident set before them: what one more solve of the batch costs, without
    one-time costs such as imports and graph tracing.
    """
    if method.startswith(("tf_deepemd", "baseline")) and args.intra_op_threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    data = np.load(problems_file)
    cost, source, target = data["cost"], data["source"], data["target"]
    if method in BASELINE_METHODS:
        run = setup_tf_deepemd(cost, source, target, *BASELINE_METHODS[method],
                               baseline_path=args.baseline)
    else:
        run = METHODS[method](cost, source, target)
    objectives = run()  # warm-up (tracing, first allocations)
    memory_before = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as file:
        file.write("5")  # resets VmHWM to the current resident set
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        objectives = run()
        times.append(time.perf_counter() - start)
    print(json.dumps({
        "seconds": float(np.median(times)),
        "all_seconds": times,
        "peak_mb": max(_status_mb("VmHWM") - memory_before, 0.0),
        "objectives": np.asarray(objectives, np.float64).tolist(),
    }))


def available(method):
    module = OPTIONAL_MODULES.get(method)
    return module is None or importlib.util.find_spec(module) is not None


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[50, 375])
    parser.add_argument("--nodes", type=int, nargs="+", default=[9, 25, 50])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of every method, interleaved; times are pooled")
    parser.add_argument("--qpth_repeats", type=int, default=3,
                        help="repeats of qpth (seconds per run at 50 x 25x25)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--goals", action="store_true",
                        help="only the cases and methods of the speed goals")
    parser.add_argument("--baseline", metavar="EMD_PY",
                        help="solver module file timed beside the current tf_deepemd")
    parser.add_argument("--intra_op_threads", type=int,
                        help="TensorFlow intra-op threads (default: TensorFlow's own)")
    parser.add_argument("--qpth_max_variables", type=int, default=50 * 625,
                        help="skip qpth above batch*N*N (its memory grows as batch*N^4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help=f"default {RESULTS}, with --goals {GOAL_RESULTS}")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "PROBLEMS"),
                        help=argparse.SUPPRESS)
    return parser.parse_args()


def planned_cases(args):
    """[(batch, nodes, [methods])] in the order they run."""
    if args.goals:
        cases = {}
        for _, batch, nodes, method, peer, _ in GOALS:
            methods = cases.setdefault((batch, nodes), [])
            for name in [method, peer, *GOAL_PEERS.get((batch, nodes), [])]:
                if name and name not in methods:
                    methods.append(name)
    else:
        cases = {(batch, nodes): list(args.methods)
                 for batch in args.batches for nodes in args.nodes}
    planned = []
    for (batch, nodes), methods in cases.items():
        if args.baseline:
            methods = methods + [m.replace("tf_deepemd", "baseline") for m in methods
                                 if m.startswith("tf_deepemd")]
        methods = [m for m in methods if not (
            m.startswith("qpth") and batch * nodes * nodes > args.qpth_max_variables)]
        planned.append((batch, nodes, methods))
    return planned


def run_worker(method, problems_file, args, environment):
    repeats = args.qpth_repeats if method.startswith("qpth") else args.repeats
    command = [sys.executable, __file__, "--repeats", str(repeats),
               "--worker", method, problems_file]
    if args.baseline:
        command += ["--baseline", os.path.abspath(args.baseline)]
    if args.intra_op_threads:
        command += ["--intra_op_threads", str(args.intra_op_threads)]
    completed = subprocess.run(command, capture_output=True, text=True, env=environment)
    if completed.returncode != 0:
        return {"error": completed.stderr.strip().splitlines()[-1:]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main():
    args = parse_args()
    args.output = args.output or (GOAL_RESULTS if args.goals else RESULTS)
    if args.worker:
        worker(args.worker[0], args.worker[1], args)
        return

    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        cases = []
        for batch, nodes, methods in planned_cases(args):
            problems_file = os.path.join(scratch, f"problems_{batch}_{nodes}.npz")
            cost, source, target = deepemd_problems(args.seed, batch, nodes)
            np.savez(problems_file, cost=cost, source=source, target=target)
            cases.append((batch, nodes, methods, problems_file, setup_highs(cost, source, target)()))
        # Rounds interleave the methods so that a slow phase of a shared
        # machine does not fall on one of them only.
        for _ in range(args.rounds):
            for batch, nodes, methods, problems_file, reference in cases:
                for method in methods:
                    if not available(method):
                        print(f"skip {method}: not installed", file=sys.stderr)
                        continue
                    result = run_worker(method, problems_file, args, environment)
                    row = rows.setdefault((method, batch, nodes), {
                        "method": method, "batch": batch, "nodes": nodes, "all_seconds": [],
                        "round_seconds": [], "peak_mb": 0.0, "objective_error": 0.0})
                    if "error" in result or "error" in row:
                        row["error"] = result.get("error", row.get("error"))
                        print(f"{method} B={batch} N={nodes} failed: {row['error']}",
                              file=sys.stderr)
                        continue
                    objectives = np.array(result["objectives"])
                    row["objective_error"] = max(row["objective_error"], float(
                        np.max(np.abs(objectives - reference) / np.abs(reference))))
                    row["all_seconds"] += result["all_seconds"]
                    row["round_seconds"].append(result["seconds"])
                    row["seconds"] = float(np.median(row["all_seconds"]))
                    row["peak_mb"] = max(row["peak_mb"], result["peak_mb"])
                    print(f"{method:24s} B={batch:4d} N={nodes:3d} "
                          f"{result['seconds'] * 1e3:10.2f} ms {result['peak_mb']:9.1f} MB  "
                          f"err {row['objective_error']:.1e}", file=sys.stderr, flush=True)
    rows = list(rows.values())

    goals = goal_ratios(rows)
    print(format_table(rows))
    print(format_goals(goals))
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as file:
        json.dump({"command": " ".join(sys.argv), "cpu_count": os.cpu_count(),
                   "intra_op_threads": args.intra_op_threads, "goals": goals, "rows": rows},
                  file, indent=1)


def goal_ratios(rows):
    """The speed goals measured in this run (those whose two rows exist): the
    ratio of the pooled medians and the ratio in each round."""
    by_key = {(r["method"], r["batch"], r["nodes"]): r for r in rows if "seconds" in r}
    goals = []
    for name, batch, nodes, method, peer, goal in GOALS:
        if (method, batch, nodes) not in by_key:
            continue
        ours = by_key[(method, batch, nodes)]
        if peer is None:
            ratio, per_round = ours["seconds"], list(ours["round_seconds"])
        elif (peer, batch, nodes) in by_key:
            theirs = by_key[(peer, batch, nodes)]
            ratio = ours["seconds"] / theirs["seconds"]
            per_round = [a / b for a, b in zip(ours["round_seconds"], theirs["round_seconds"])]
        else:
            continue
        goals.append({"goal": name, "ratio": ratio, "round_ratios": per_round,
                      "target": goal, "met": ratio <= goal})
    return goals


def format_goals(goals):
    return "\n".join(
        f"goal {g['goal']}: {g['ratio']:.3g} (rounds: "
        f"{', '.join(f'{r:.3g}' for r in g['round_ratios'])}; target <= {g['target']}: "
        f"{'met' if g['met'] else 'NOT met'})" for g in goals
    )


def format_table(rows):
    """Markdown table; ratios against the cv2 loop of the same batch and N and,
    for tf_deepemd with --baseline, against the baseline solver."""
    seconds = {(r["method"], r["batch"], r["nodes"]): r["seconds"] for r in rows if "seconds" in r}
    lines = ["| method | batch | N | median ms | x cv2 loop | x baseline | peak MB | objective error |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "seconds" not in r:
            lines.append(f"| {r['method']} | {r['batch']} | {r['nodes']} | failed | | | | |")
            continue
        cv2 = seconds.get(("cv2.EMD loop", r["batch"], r["nodes"]))
        old = seconds.get((r["method"].replace("tf_deepemd", "baseline"), r["batch"], r["nodes"]))
        ratio_cv2 = f"{r['seconds'] / cv2:.2f}" if cv2 else ""
        ratio_old = f"{r['seconds'] / old:.2f}" if old and r["method"].startswith("tf_") else ""
        lines.append(
            f"| {r['method']} | {r['batch']} | {r['nodes']} | {r['seconds'] * 1e3:.2f} | "
            f"{ratio_cv2} | {ratio_old} | {r['peak_mb']:.0f} | {r['objective_error']:.1e} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
