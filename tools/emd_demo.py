"""A one-minute tour of the solver: python tools/emd_demo.py

Solves a batch of DeepEMD-style matching problems (random ReLU node features,
cost = 1 - cosine similarity, cross-reference node weights), checks a few
against SciPy's HiGHS LP solver, and shows the gradient that makes the layer
trainable.
"""

import time

import numpy as np
from absl import app, flags
import tool_entry
from tool_entry import FLAGS, define_thread_flags, import_tensorflow, run

flags.DEFINE_integer("problems", 375, "EMD problems solved in one batch (375: one 5-way 15-query "
                     "episode); the first 5 are checked against HiGHS.", lower_bound=5)
flags.DEFINE_integer("nodes", 25, "nodes per side of each problem (25: a 5 x 5 feature map).", lower_bound=1)
define_thread_flags()
flags.adopt_module_key_flags(tool_entry)  # --help lists the shared flags too


def deepemd_problems(rng, batch, nodes, channels=64):
    query = np.maximum(rng.normal(size=(batch, nodes, channels)), 0.0)
    support = np.maximum(rng.normal(size=(batch, nodes, channels)), 0.0)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    cost = 1.0 - np.einsum("bnc,bmc->bnm", unit(query), unit(support))
    source = np.maximum(np.einsum("bnc,bc->bn", query, support.mean(1)), 0) + 1e-3
    target = np.maximum(np.einsum("bnc,bc->bn", support, query.mean(1)), 0) + 1e-3
    source *= nodes / source.sum(-1, keepdims=True)
    target *= nodes / target.sum(-1, keepdims=True)
    return cost.astype(np.float32), source.astype(np.float32), target.astype(np.float32)


def highs_transport_cost(cost, source, target):
    """The same LP (row sums <= source, column sums <= target, total = min) by HiGHS."""
    from scipy.optimize import linprog

    cost, source, target = (np.asarray(x, np.float64) for x in (cost, source, target))
    n, m = cost.shape
    rows = np.kron(np.eye(n), np.ones((1, m)))
    cols = np.kron(np.ones((1, n)), np.eye(m))
    result = linprog(cost.ravel(), A_ub=np.vstack([rows, cols]),
                     b_ub=np.concatenate([source, target]), A_eq=np.ones((1, n * m)),
                     b_eq=[min(source.sum(), target.sum())], method="highs")
    return result.fun


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import_tensorflow(FLAGS.verbose)
    import tensorflow as tf

    import tf_deepemd
    from tf_deepemd.training.launch import configure_runtime

    configure_runtime(FLAGS.intra_op_threads, FLAGS.inter_op_threads)
    rng = np.random.default_rng(0)
    problems, nodes = FLAGS.problems, FLAGS.nodes
    cost, source, target = deepemd_problems(rng, batch=problems, nodes=nodes)
    print(f"{problems} EMD problems of {nodes} x {nodes} nodes (375 of 25 x 25: one 5-way 15-query "
          "episode of DeepEMD-FCN)")

    solve = tf.function(lambda c, a, b: tf_deepemd.solve_emd(c, a, b))
    result = solve(cost, source, target)  # traces the graph once
    start = time.perf_counter()
    result = solve(cost, source, target)
    elapsed = time.perf_counter() - start
    print(f"  solved in {elapsed * 1e3:.0f} ms, {int(result.num_iterations)} interior-point "
          f"iterations, {float(tf.reduce_mean(tf.cast(result.converged, tf.float32))):.0%} converged")

    reference = np.array([highs_transport_cost(*p) for p in zip(cost[:5], source[:5], target[:5])])
    ours = result.transport_cost.numpy()[:5]
    print("  transport cost, tf_deepemd vs HiGHS (first 5):")
    for a, b in zip(ours, reference):
        print(f"    {a:.6f}  {b:.6f}  (relative difference {abs(a - b) / b:.1e})")

    cost_t = tf.constant(cost[:1])
    with tf.GradientTape() as tape:
        tape.watch(cost_t)
        flow = tf_deepemd.emd(cost_t, source[:1], target[:1])
        similarity_score = tf.reduce_sum((1.0 - cost_t) * flow)
    gradient = tape.gradient(similarity_score, cost_t)
    print(f"  d score / d cost is finite and non-zero: max |grad| = "
          f"{float(tf.reduce_max(tf.abs(gradient))):.3f}")


if __name__ == "__main__":
    run(main)
