"""How fast an interior-point EMD solver made of TensorFlow ops could be, at best.

    python benchmarks/solver_floor.py [--rounds 3] [--repeats 15]

For four speed goals (forward on 375 and on 5 DeepEMD-style problems
of 25x25, forward+backward on 50 of 9x9, and one SFC update of 12 5-shot
episodes, 240 problems of 16x16; float32 inputs, TensorFlow's default
threads), times in one process, interleaved over ``--rounds``:

* ``solver``: `tf_deepemd.emd` inside a `tf.function` (with its gradient for
  the forward+backward goal);
* ``newton algebra``: only the linear algebra every iteration of a Newton-type
  interior-point method needs, for as many iterations as the solver runs on
  these problems: the Schur complement `D^T D` (batched matmul), its
  Cholesky factorisation and two solves with it (predictor and corrector),
  float64 as in the solver, in a `tf.while_loop` (plus one factorisation and
  solve for a backward pass); and the same in float32 (which cannot
  factorise the ill-conditioned systems near the optimum, but bounds a
  solver that would iterate in float32 and polish in float64);
* ``elementwise chain`` and ``empty loop``: a `tf.while_loop` of the same
  iterations whose body is a chain of as many elementwise ops on the
  `[B, N, N]` cells as the solver's loop body has ops (counted in its traced
  graph), and the same loop with an empty body: their difference is the cost
  of those ops;
* the goal's peer: OpenCV's `cv2.EMD` per problem (the official test-time
  path), or qpth forward+backward in the official 'L2' form.

Each floor is well under what such a solver costs (it needs the algebra,
the elementwise work, and more): where the float64 algebra alone is over a
goal's budget, no interior-point solver made of TensorFlow ops that
factorises in float64 meets that goal on this machine. Prints a table, the
measured cost per op and how many such ops per iteration each budget leaves
beside the algebra, and writes benchmarks/results/solver_floor.json.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emd_solver import deepemd_problems, setup_cv2, setup_qpth, setup_tf_deepemd  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "solver_floor.json")
# (batch, N, goal, backward, the peer, its time budget: x the peer's time, or milliseconds).
CASES = [
    (375, 25, "forward, one 5-way 15-query episode, <= 0.5x the cv2 loop", False, "cv2 loop",
     0.5, None),
    (5, 25, "forward, one query, <= 2x the cv2 loop", False, "cv2 loop", 2.0, None),
    (50, 9, "forward+backward, >= 100x faster than qpth", True, "qpth L2 fwd+bwd", 0.01, None),
    # 5-shot SFC at 2 episodes/s, 12 episodes per call: 700 updates in 6 s.
    (240, 16, "one SFC update of 12 5-shot episodes (forward only), 8.6 ms", False, "cv2 loop",
     None, 8.6),
]
# Ops that cost no kernel launch worth counting in a loop body.
_FREE_OPS = {"Const", "Identity", "NoOp", "Placeholder", "_Arg", "_Retval"}


def solver_iterations_and_body_ops(solve, inputs):
    """Iterations the solver runs on `inputs` and the ops of its largest loop body."""
    import tensorflow as tf

    concrete = tf.function(solve).get_concrete_function(*inputs)
    bodies = [f for f in concrete.graph.as_graph_def().library.function
              if "while_body" in f.signature.name]
    body_ops = max(sum(node.op not in _FREE_OPS for node in f.node_def) for f in bodies)
    return int(concrete(*inputs).num_iterations), body_ops


def setup_floors(cost, source, target, backward):
    """({name: zero-argument callable} for the solver and the floors, the solver's
    iterations and loop-body ops on these problems). With `backward`, the solver
    runs forward and backward and the algebra adds the backward's factorisation
    and solve."""
    import tensorflow as tf

    import tf_deepemd

    inputs = [tf.constant(x, tf.float32) for x in (cost, source, target)]
    iterations, body_ops = solver_iterations_and_body_ops(tf_deepemd.solve_emd, inputs)
    batch, num_nodes, _ = cost.shape
    rng = np.random.default_rng(0)
    scaling = rng.uniform(0.1, 1.0, (batch, num_nodes, num_nodes))
    rhs = rng.normal(size=(batch, num_nodes, 1))

    @tf.function
    def newton_algebra(scaling, rhs):
        ridge = tf.eye(num_nodes, dtype=scaling.dtype) * num_nodes  # keeps D^T D well conditioned

        def factorise():
            return tf.linalg.cholesky(tf.matmul(scaling, scaling, transpose_a=True) + ridge)

        def body(step, total):
            factor = factorise()
            predictor = tf.linalg.cholesky_solve(factor, rhs + total)
            return step + 1, total + tf.linalg.cholesky_solve(factor, rhs + predictor)

        total = tf.while_loop(lambda step, _: step < iterations, body,
                              (tf.constant(0), tf.zeros_like(rhs)))[1]
        if backward:
            total += tf.linalg.cholesky_solve(factorise(), rhs + total)
        return total

    def elementwise_loop(num_ops):
        # Two kinds of op alternating, with operands that are arguments: Grappler
        # folds a chain of multiplications (by a constant, or by one argument)
        # into a single op, which made an earlier version of this floor 5-10x
        # too low at small sizes.
        @tf.function
        def run(cells, scale, lower):
            def body(step, cells):
                for op in range(num_ops):
                    cells = cells * scale if op % 2 else tf.maximum(cells, lower)
                return step + 1, cells

            return tf.while_loop(lambda step, _: step < iterations, body,
                                 (tf.constant(0), cells))[1]

        return run

    chain, empty_loop = elementwise_loop(body_ops), elementwise_loop(0)
    algebra_inputs = {dtype: [tf.constant(x, dtype) for x in (scaling, rhs)]
                      for dtype in (tf.float64, tf.float32)}
    chain_inputs = [tf.constant(x, tf.float64) for x in (scaling, 0.999, 1e-3)]
    runs = {
        "solver": setup_tf_deepemd(cost, source, target, tf.float32, backward),
        "newton algebra": lambda: newton_algebra(*algebra_inputs[tf.float64]).numpy(),
        "newton algebra in float32": lambda: newton_algebra(*algebra_inputs[tf.float32]).numpy(),
        "elementwise chain": lambda: chain(*chain_inputs).numpy(),
        "empty loop": lambda: empty_loop(*chain_inputs).numpy(),
    }
    return runs, {"iterations": iterations, "body_ops": body_ops}


def median_ms(run, repeats):
    run()  # warm-up: tracing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args()

    cases = []
    peers = {"cv2 loop": setup_cv2,
             "qpth L2 fwd+bwd": lambda *problems: setup_qpth(*problems, backward=True)}
    for batch, num_nodes, goal, backward, peer, x_peer, budget_ms in CASES:
        cost, source, target = deepemd_problems(args.seed, batch, num_nodes)
        runs, facts = setup_floors(cost, source, target, backward)
        runs[peer] = peers[peer](cost, source, target)
        cases.append({"batch": batch, "nodes": num_nodes, "goal": goal, "peer": peer,
                      "x_peer": x_peer,
                      "budget_ms": budget_ms, **facts, "runs": runs,
                      "ms": {name: [] for name in runs}})
    for _ in range(args.rounds):
        for case in cases:
            for name, run in case["runs"].items():
                case["ms"][name].append(median_ms(run, args.repeats))

    results = []
    print("| problems | method | median ms (rounds) | x the peer | of the goal's budget |")
    print("|---|---|---|---|---|")
    for case in cases:
        row = {k: v for k, v in case.items() if k != "runs"}
        median = {name: float(np.median(ms)) for name, ms in case["ms"].items()}
        if row["budget_ms"] is None:
            row["budget_ms"] = row["x_peer"] * median[case["peer"]]
        # What the budget leaves per iteration beside the algebra (which includes
        # the call and the loop), in ops at the measured per-op cost.
        per_op_ms = ((median["elementwise chain"] - median["empty loop"])
                     / (case["iterations"] * case["body_ops"]))
        row["per_op_us"] = 1e3 * per_op_ms
        row["ops_per_iteration_beside_algebra"] = (
            (row["budget_ms"] - median["newton algebra"]) / (case["iterations"] * per_op_ms))
        results.append(row)
        for name, ms in case["ms"].items():
            print(f"| {case['batch']} x {case['nodes']}x{case['nodes']} | {name} | "
                  f"{median[name]:.2f} ({', '.join(f'{m:.2f}' for m in ms)}) | "
                  f"{median[name] / median[case['peer']]:.2f} | "
                  f"{median[name] / row['budget_ms']:.2f} |")
    for row in results:
        print(f"{row['batch']} x {row['nodes']}x{row['nodes']}, {row['goal']}: budget "
              f"{row['budget_ms']:.2f} ms; the solver runs {row['iterations']} iterations of "
              f"{row['body_ops']} ops at {row['per_op_us']:.1f} us per op (elementwise); the "
              f"budget leaves {row['ops_per_iteration_beside_algebra']:.0f} such ops per "
              f"iteration beside the float64 algebra")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as file:
        json.dump({"command": " ".join(sys.argv), "cpu_count": os.cpu_count(), "cases": results},
                  file, indent=1)


if __name__ == "__main__":
    main()
