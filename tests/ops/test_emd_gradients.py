"""Gradients of tf_deepemd.emd on every solver path, at the default tolerance.

References: central finite differences (float64) of the exact QP solution
on its active set (a dense KKT solve in NumPy, `active_set_flows`), and the
LP sensitivity d sum(cost * flow) / d cost = flow.
`pytest -s tests/ops/test_emd_gradients.py` prints the worst error per path.
"""

import numpy as np
import pytest
import tensorflow as tf

import tf_deepemd
from tests.reference import ACTIVE_THRESHOLD, active_set_flows, deepemd_problems

pytestmark = pytest.mark.usefixtures("emd_implementation")

# Tolerance of the solve whose active set (support cells, saturated marginals)
# the reference keeps.
REFERENCE_TOLERANCE = 1e-13
# A problem is next to a kink when a support flow or an off-support
# multiplier is below this: an interior point stopped at the default
# tolerance (complementarity products ~1e-10) cannot tell such a cell's side
# (it compares l2 * flow with the multiplier, ~sqrt(l2 * 1e-10) apart), and
# the derivative jumps there.
KINK_MARGIN = 1e-4
STEP = 1e-4  # the reference is affine in the inputs on a fixed active set
BATCH = 8
DIRECTIONS = 4
TOTALS = {"equal": (1.0, 1.0), "more source": (1.3, 1.0), "more target": (1.0, 1.3)}


def problems(rng, batch, n, m, totals):
    cost, source, target = deepemd_problems(rng, batch, n, channels=64, num_target_nodes=m)
    source_scale, target_scale = TOTALS[totals]
    return cost, source * source_scale, target * target_scale


def active_sets(cost, source, target, l2_strength):
    """(support [B, N, M], saturated rows [B, N], saturated columns [B, M]) of
    a solve at `REFERENCE_TOLERANCE`, and its flow."""
    flow = tf_deepemd.emd(cost, source, target, l2_strength=l2_strength,
                          tolerance=REFERENCE_TOLERANCE).numpy()
    rows = source - flow.sum(-1) < ACTIVE_THRESHOLD
    cols = target - flow.sum(-2) < ACTIVE_THRESHOLD
    return (flow > ACTIVE_THRESHOLD, rows, cols), flow


def directional_errors(rng, arrays, l2_strength, equal_totals):
    """Worst relative error per argument of the gradient of a random linear
    functional of the flow, along random directions, against central
    differences of `active_set_flows`, over the problems not next to a kink.
    Errors are relative to |FD|, floored at 1 % of the problem's largest
    directional derivative (directions along which the flow does not move).
    Returns ({argument: worst error}, problems left out as next to a kink)."""
    weights = rng.normal(size=arrays[0].shape)
    active, reference_flow = active_sets(*arrays, l2_strength)
    exact, margins = active_set_flows(*arrays, l2_strength, active)
    checked = margins >= KINK_MARGIN
    # The NumPy re-expression solves the solver's problem: away from kinks
    # both agree to the tight solve's accuracy.
    np.testing.assert_allclose(exact[checked], reference_flow[checked], atol=1e-8)

    inputs = [tf.constant(x) for x in arrays]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        flow = tf_deepemd.emd(*inputs, l2_strength=l2_strength)
        value = tf.reduce_sum(flow * weights)
    gradients = [g.numpy() for g in tape.gradient(value, inputs)]

    analytic, numeric = {}, {}
    for which, name in enumerate(("cost", "source_weights", "target_weights")):
        directions = rng.normal(size=(DIRECTIONS,) + arrays[which].shape)
        if which > 0 and equal_totals:
            directions -= directions.mean(-1, keepdims=True)  # keeps the totals equal
        values = []
        for direction in directions:
            for sign in (1.0, -1.0):
                shifted = [x + sign * STEP * direction if k == which else x
                           for k, x in enumerate(arrays)]
                flows = active_set_flows(*shifted, l2_strength, active)[0]
                values.append(np.sum(flows * weights, axis=(-2, -1)))
        values = np.array(values).reshape(DIRECTIONS, 2, -1)
        numeric[name] = ((values[:, 0] - values[:, 1]) / (2 * STEP))[:, checked]
        axes = tuple(range(2, directions.ndim))
        analytic[name] = np.sum(gradients[which][None] * directions, axis=axes)[:, checked]
    scale = np.max([np.abs(v).max(axis=0) for v in numeric.values()], axis=0)  # [checked]
    errors = {
        name: float(np.max(np.abs(analytic[name] - numeric[name])
                           / np.maximum(np.abs(numeric[name]), 0.01 * scale)))
        for name in numeric
    }
    return errors, int((~checked).sum())


@pytest.mark.parametrize("totals", list(TOTALS))
@pytest.mark.parametrize("shape", [(6, 9), (9, 6)])
@pytest.mark.parametrize("l2_strength", [0.05, 0.5, 5.0])
def test_l2_gradients_match_finite_differences(rng, l2_strength, shape, totals,
                                               emd_implementation):
    arrays = problems(rng, BATCH, *shape, totals)
    errors, near_kinks = directional_errors(rng, arrays, l2_strength, totals == "equal")
    print(f"l2 {l2_strength}, {shape[0]}x{shape[1]}, {totals} totals: worst relative error "
          + ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
          + f" ({near_kinks} of {BATCH} problems next to a kink)")
    assert near_kinks <= BATCH // 4, f"{near_kinks} of {BATCH} problems next to a kink"
    # The kernel differentiates the exact solution; the interior point the
    # iterate it stopped at.
    limit = 1e-6 if emd_implementation == "kernel" else 1e-4
    for name, error in errors.items():
        assert error <= limit, f"{name}: worst relative error {error:.2e}"


@pytest.mark.parametrize("totals", list(TOTALS))
@pytest.mark.parametrize("shape", [(6, 9), (9, 6)])
def test_lp_gradient_of_the_transport_cost_is_the_flow(rng, shape, totals):
    """d sum(cost * flow) / d cost = flow: the flow's own derivative
    contributes sum(cost * d flow) = 0 at a vertex (the LP sensitivity)."""
    cost, source, target = (tf.constant(x) for x in problems(rng, 30, *shape, totals))
    with tf.GradientTape() as tape:
        tape.watch(cost)
        flow = tf_deepemd.emd(cost, source, target)
        value = tf.reduce_sum(cost * flow)
    gradient = tape.gradient(value, cost).numpy()
    error = np.abs(gradient - flow.numpy()).max()
    print(f"LP {shape[0]}x{shape[1]}, {totals} totals: max |d transport_cost / d cost - flow| "
          f"{error:.1e}")
    assert error <= 1e-5


@pytest.mark.parametrize("l2_strength", [0.0, 0.5])
def test_zero_mass_nodes_get_zero_gradient(rng, l2_strength):
    cost, source, target = problems(rng, 6, 6, 8, "equal")
    source[:, 2] = 0.0
    target[:, [0, 5]] = 0.0
    target[:3] *= source[:3].sum(-1, keepdims=True) / target[:3].sum(-1, keepdims=True)
    inputs = [tf.constant(x) for x in (cost, source, target)]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        flow = tf_deepemd.emd(*inputs, l2_strength=l2_strength)
        value = tf.reduce_sum(flow * rng.normal(size=flow.shape))
    grad_cost, grad_source, grad_target = (g.numpy() for g in tape.gradient(value, inputs))
    for gradient in (grad_cost, grad_source, grad_target):
        assert np.all(np.isfinite(gradient))
    assert np.abs(grad_cost[:, 2, :]).max() <= 1e-12
    assert np.abs(grad_cost[:, :, [0, 5]]).max() <= 1e-12
    np.testing.assert_array_equal(flow.numpy()[:, 2, :], 0.0)


def test_gradient_with_respect_to_a_tensor_l2_strength(rng):
    cost, source, target = problems(rng, 4, 7, 5, "more source")
    weights = rng.normal(size=cost.shape)

    def functional(l2_strength, tolerance=None):
        flow = tf_deepemd.emd(cost, source, target, l2_strength=l2_strength, tolerance=tolerance)
        return tf.reduce_sum(flow * weights)

    l2_strength = tf.Variable(0.5, dtype=tf.float64)
    with tf.GradientTape() as tape:
        value = functional(l2_strength)
    analytic = tape.gradient(value, l2_strength).numpy()
    step = 1e-6
    numeric = (functional(0.5 + step, REFERENCE_TOLERANCE)
               - functional(0.5 - step, REFERENCE_TOLERANCE)).numpy() / (2 * step)
    assert abs(analytic - numeric) <= 1e-4 * abs(numeric), (analytic, numeric)
    # A float32 tensor works as well and gives the same flow.
    np.testing.assert_allclose(
        tf_deepemd.emd(cost, source, target, l2_strength=tf.constant(0.5, tf.float32)),
        tf_deepemd.emd(cost, source, target, l2_strength=0.5), atol=1e-9,
    )


def test_unbalanced_l2_gradient_where_the_marginals_fix_the_flow(rng):
    """Hand-computed: rows 0 and 1 are saturated (their dummy cells off the
    support), row 2 fills the rest of both columns and sends its surplus to
    the dummy. Four support cells, four active marginals: the flow is fixed
    by the masses, so d flow / d cost = 0, and one more unit of source 0
    (target j) moves along x00 - x20 (x2j)."""
    cost = tf.constant([[[0.0, 1.0], [1.0, 0.0], [0.1, 0.1]]], tf.float64)
    source = tf.constant([[0.4, 0.4, 0.5]], tf.float64)
    target = tf.constant([[0.5, 0.5]], tf.float64)
    weights = rng.normal(size=(1, 3, 2))
    with tf.GradientTape() as tape:
        tape.watch([cost, source, target])
        flow = tf_deepemd.emd(cost, source, target, l2_strength=0.05)
        value = tf.reduce_sum(flow * weights)
    grad_cost, grad_source, grad_target = (g.numpy()[0] for g in
                                           tape.gradient(value, [cost, source, target]))
    np.testing.assert_allclose(flow[0], [[0.4, 0.0], [0.0, 0.4], [0.1, 0.1]], atol=1e-9)
    w = weights[0]
    assert np.abs(grad_cost).max() <= 1e-9, grad_cost
    np.testing.assert_allclose(grad_source, [w[0, 0] - w[2, 0], w[1, 1] - w[2, 1], 0.0],
                               atol=1e-8)
    np.testing.assert_allclose(grad_target, [w[2, 0], w[2, 1]], atol=1e-8)
