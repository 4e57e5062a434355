"""The compiled EMD kernel against independent references: HiGHS (linear
program), a KKT certificate of the QP solution (a NumPy solve on its active
set whose optimality conditions are checked), finite differences of exact
solutions, the stock-op solver, and its own runs on other thread counts."""

import json
import os
import resource
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tf_deepemd
from tests.reference import ACTIVE_THRESHOLD, active_set_flows, deepemd_problems, highs_emd

pytestmark = pytest.mark.skipif(not tf_deepemd.kernel_available(),
                                reason="the compiled kernel is not built")


def kernel_solve(cost, source, target, l2_strength=0.0):
    return tf_deepemd.solve_emd(cost, source, target, l2_strength=l2_strength,
                                implementation="kernel")


def mixed_problems(rng, count):
    """Random problems of every kind the kernel must handle: DeepEMD's,
    unequal totals either way, N = 1 or M = 1, nodes without mass, any cost
    and mass scale; each as (cost [N, M], source [N], target [M])."""
    problems = []
    for index in range(count):
        n, m = (int(k) for k in rng.integers(1, 16, size=2))
        cost = rng.uniform(0.0, 1.0, (n, m)) * 10.0 ** rng.uniform(-3, 3)
        source = rng.uniform(0.1, 1.0, n) * 10.0 ** rng.uniform(-3, 3)
        target = rng.uniform(0.1, 1.0, m)
        kind = index % 4
        if kind == 0:
            target *= source.sum() / target.sum()
        elif kind == 1:
            target *= 1.7 * source.sum() / target.sum()
        elif kind == 2:
            target *= 0.6 * source.sum() / target.sum()
        else:  # nodes without mass, equal totals
            source[rng.random(n) < 0.3] = 0.0
            target[rng.random(m) < 0.3] = 0.0
            source[0], target[-1] = max(source[0], 0.5), max(target[-1], 0.5)
            target *= source.sum() / target.sum()
        problems.append((cost, source, target))
    return problems


def test_linear_program_matches_highs(rng):
    worst_objective, worst_flow = 0.0, 0.0
    for cost, source, target in mixed_problems(rng, 200):
        result = kernel_solve(cost, source, target)
        objective, flow = highs_emd(cost, source, target)
        worst_objective = max(worst_objective,
                              abs(result.transport_cost.numpy() - objective) / abs(objective))
        # Continuous random costs: the optimum is unique.
        worst_flow = max(worst_flow, np.abs(result.flow.numpy() - flow).max() / flow.max())
        assert result.converged.numpy()
    print(f"LP vs HiGHS, 200 problems: objective {worst_objective:.1e}, flow {worst_flow:.1e}")
    assert worst_objective <= 1e-10
    assert worst_flow <= 1e-8  # HiGHS's own flows are exact to ~1e-9 of the largest


def qp_certificate(cost, source, target, l2_strength, flow):
    """The exact QP solution on the active set of `flow`, and its margin:
    >= 0 proves it optimal (support flows, off-support multipliers, the
    heavier side's slacks and multipliers all non-negative). Computed on the
    problem rescaled to unit cost and mass (the same minimiser, rescaled),
    where the thresholds of the active set are meaningful."""
    cost_scale, mass_scale = cost.max(), max(source.sum(), target.sum())
    cost, source, target = cost / cost_scale, source / mass_scale, target / mass_scale
    l2_strength, flow = l2_strength * mass_scale / cost_scale, flow / mass_scale
    support = flow > ACTIVE_THRESHOLD
    rows = source - flow.sum(-1) < ACTIVE_THRESHOLD
    cols = target - flow.sum(-2) < ACTIVE_THRESHOLD
    flows, margins = active_set_flows(cost[None], source[None], target[None], l2_strength,
                                      (support[None], rows[None], cols[None]))
    return flows[0] * mass_scale, margins[0]


@pytest.mark.parametrize("l2_strength", [1e-4, 0.05, 5.0])
def test_l2_form_matches_its_kkt_certificate(rng, l2_strength):
    worst, certified = 0.0, 0
    for cost, source, target in mixed_problems(rng, 80):
        # The strength relative to the problem's cost and mass scales.
        l2 = l2_strength * cost.max() / max(source.sum(), target.sum())
        flow = kernel_solve(cost, source, target, l2).flow.numpy()
        # Nodes without mass carry nothing; the certificate is of the rest.
        rows, cols = source > 0, target > 0
        assert np.all(flow[~rows] == 0) and np.all(flow[:, ~cols] == 0)
        cost, source, target, flow = (cost[rows][:, cols], source[rows], target[cols],
                                      flow[rows][:, cols])
        reference, margin = qp_certificate(cost, source, target, l2, flow)
        if margin < 1e-6:
            continue  # a cell or node at a kink: the active set is ambiguous
        certified += 1
        worst = max(worst, np.abs(flow - reference).max() / max(flow.max(), 1e-300))
    print(f"L2 {l2_strength}: {certified} of 80 problems certified, worst flow error {worst:.1e}")
    assert certified >= 72
    assert worst <= 1e-9


@pytest.mark.parametrize("size, count", [(25, 375), (9, 50), (16, 240)])
@pytest.mark.parametrize("l2_strength", [0.0, 1e-4])
def test_agrees_with_the_stock_op_solver_on_deepemd_problems(rng, size, count, l2_strength):
    cost, source, target = deepemd_problems(rng, count, size)
    kernel = kernel_solve(cost, source, target, l2_strength)
    stock = tf_deepemd.solve_emd(cost, source, target, l2_strength=l2_strength,
                                 implementation="tf_ops", tolerance=1e-12)
    np.testing.assert_allclose(kernel.transport_cost, stock.transport_cost, rtol=1e-9)
    if l2_strength > 0:  # unique flow; the interior point's is off by ~tolerance / l2
        np.testing.assert_allclose(kernel.flow, stock.flow, atol=1e-5)


def test_lp_flow_does_not_move_with_the_cost(rng):
    cost, source, target = (tf.constant(x) for x in deepemd_problems(rng, 20, 9))
    weights = rng.normal(size=cost.shape)
    with tf.GradientTape() as tape:
        tape.watch(cost)
        value = tf.reduce_sum(tf_deepemd.emd(cost, source, target, implementation="kernel")
                              * weights)
    assert np.all(tape.gradient(value, cost).numpy() == 0.0)


@pytest.mark.parametrize("totals", ["equal", "more source", "more target"])
def test_lp_mass_gradients_match_finite_differences_of_highs(rng, totals):
    """Away from degenerate vertices (continuous random data) the flow is
    affine in the masses near the optimum: central differences of HiGHS's
    exact flows are its derivative."""
    worst = 0.0
    for _ in range(10):
        cost = rng.uniform(0, 1, (7, 6))
        source, target = rng.uniform(0.5, 1.5, 7), rng.uniform(0.5, 1.5, 6)
        target *= {"equal": 1.0, "more source": 0.8, "more target": 1.25}[totals] \
            * source.sum() / target.sum()
        weights = rng.normal(size=cost.shape)
        masses = [tf.constant(source), tf.constant(target)]
        with tf.GradientTape() as tape:
            tape.watch(masses)
            value = tf.reduce_sum(tf_deepemd.emd(cost, *masses, implementation="kernel")
                                  * weights)
        gradients = [g.numpy() for g in tape.gradient(value, masses)]
        for which in range(2):
            direction = rng.normal(size=masses[which].shape)
            if totals == "equal":
                direction -= direction.mean()  # keeps the totals equal
            step = 1e-4
            values = []
            for sign in (1.0, -1.0):
                shifted = [source, target]
                shifted[which] = shifted[which] + sign * step * direction
                values.append(np.sum(highs_emd(cost, *shifted)[1] * weights))
            numeric = (values[0] - values[1]) / (2 * step)
            analytic = np.sum(gradients[which] * direction)
            worst = max(worst, abs(analytic - numeric) / max(abs(numeric), 1e-3))
    print(f"LP mass gradient vs HiGHS differences, {totals} totals: worst relative {worst:.1e}")
    assert worst <= 1e-6


THREADS_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(int(sys.argv[1]))
import tf_deepemd
from tests.reference import deepemd_problems
rng = np.random.default_rng(7)
out = {}
for l2 in (0.0, 1e-3):
    cost, source, target = (tf.constant(x) for x in deepemd_problems(rng, 300, 16))
    with tf.GradientTape() as tape:
        tape.watch([cost, source, target])
        flow = tf_deepemd.emd(cost, source, target, l2_strength=l2, implementation="kernel")
        value = tf.reduce_sum(flow * np.cos(np.arange(flow.shape[-1])))
    grads = tape.gradient(value, [cost, source, target])
    for name, x in zip(("flow", "cost", "source", "target"), [flow, *grads]):
        out[f"{name}{l2}"] = x.numpy()
np.savez(sys.argv[2], **out)
"""


def test_results_are_bitwise_identical_for_1_and_2_threads(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=repo, TF_CPP_MIN_LOG_LEVEL="3")
    files = []
    for threads in (1, 2):
        files.append(str(tmp_path / f"threads{threads}.npz"))
        subprocess.run([sys.executable, "-c", THREADS_SCRIPT, str(threads), files[-1]],
                       env=env, cwd=repo, check=True, capture_output=True, timeout=300)
    with np.load(files[0]) as one, np.load(files[1]) as two:
        for name in one.files:
            assert one[name].tobytes() == two[name].tobytes(), name


def raw_solve(cost, source, target, l2_strength=0.0):
    from tf_deepemd.ops.emd import kernel

    return kernel.transport_solve(tf.constant(cost), tf.constant(source), tf.constant(target),
                                  tf.constant(l2_strength, tf.float64))


@pytest.mark.parametrize(
    "cost_shape, source_shape, target_shape, message",
    [
        ((2, 3, 4), (2, 4), (2, 4), "source_weights must have shape"),
        ((2, 3, 4), (2, 3), (3, 4), "target_weights must have shape"),
        ((3, 4), (3,), (4,), "cost must have shape"),
        ((1, 4000, 100), (1, 4000), (1, 100), "at most 4096 rows and columns"),
    ],
)
def test_mismatched_shapes_name_the_argument(cost_shape, source_shape, target_shape, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        raw_solve(np.ones(cost_shape), np.ones(source_shape), np.ones(target_shape))


@pytest.mark.parametrize("l2_strength", [0.0, 0.1])
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("cost", np.nan, "cost must be finite"),
        ("cost", -np.inf, "cost must be finite"),
        ("source", -0.5, "source_weights must be non-negative"),
        ("source", np.nan, "source_weights must be non-negative"),
        ("target", np.inf, "target_weights must be finite"),
        ("l2", -1.0, "l2_strength must be finite and >= 0"),
        ("l2", np.nan, "l2_strength must be finite and >= 0"),
    ],
)
def test_bad_values_name_the_argument(l2_strength, field, value, message):
    arrays = {"cost": np.ones((2, 3, 3)), "source": np.ones((2, 3)),
              "target": np.ones((2, 3)), "l2": l2_strength}
    if field == "l2":
        arrays["l2"] = value
    else:
        arrays[field][1, 1] = value
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        raw_solve(arrays["cost"], arrays["source"], arrays["target"], arrays["l2"])


def test_garbage_without_validation_does_not_crash(rng):
    """validate=False hands NaN, Inf, negative and empty masses straight to
    the solvers: any output, but the process lives and the call returns."""
    from tf_deepemd.ops.emd import kernel

    specials = np.array([np.nan, np.inf, -np.inf, -1.0, 0.0, 1e300, 1e-300])
    for l2 in (0.0, 0.3):
        for _ in range(30):
            n, m = (int(k) for k in rng.integers(1, 7, size=2))
            arrays = [rng.normal(size=shape) for shape in ((4, n, m), (4, n), (4, m))]
            for array in arrays:
                mask = rng.random(array.shape) < 0.3
                array[mask] = rng.choice(specials, size=mask.sum())
            kernel.transport_solve(*(tf.constant(a) for a in arrays),
                                   tf.constant(l2, tf.float64), validate=False)


def test_a_large_batch_keeps_memory_flat(rng):
    cost, source, target = (tf.constant(x, tf.float32)
                            for x in deepemd_problems(rng, 20_000, 9, channels=32))
    solve = tf.function(lambda c, a, b: tf_deepemd.emd(c, a, b, implementation="kernel"))
    solve(cost, source, target)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(5):
        flow = solve(cost, source, target)
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"20,000 problems x 5 calls: peak resident memory grew by {growth_mb:.1f} MB")
    assert flow.shape == (20_000, 9, 9)
    assert growth_mb < 20
