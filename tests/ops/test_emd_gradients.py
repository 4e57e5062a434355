"""Gradients of tf_deepemd.emd on every solver path, at the default tolerance.

References: central finite differences (float64) of solves at a tight
tolerance, and the LP sensitivity d sum(cost * flow) / d cost = flow.
`pytest -s tests/ops/test_emd_gradients.py` prints the worst error per path.
"""

import numpy as np
import pytest
import tensorflow as tf

import tf_deepemd
from tests.reference import deepemd_problems

# Tolerance of the solves whose finite differences are the reference: their
# rounding noise (~1e-13 / step) stays far below the checked 1e-4.
REFERENCE_TOLERANCE = 1e-13
# Two steps: where their differences disagree, a change of the solution's
# support (a kink) lies within the step and the direction is left out.
STEPS = (1e-5, 1e-6)
DIRECTIONS = 4
TOTALS = {"equal": (1.0, 1.0), "more source": (1.3, 1.0), "more target": (1.0, 1.3)}


def problems(rng, batch, n, m, totals):
    cost, source, target = deepemd_problems(rng, batch, n, channels=64, num_target_nodes=m)
    source_scale, target_scale = TOTALS[totals]
    return cost, source * source_scale, target * target_scale


def directional_errors(rng, arrays, l2_strength, equal_totals):
    """Worst relative error per argument of the gradient of a random linear
    functional of the flow, along random directions, against central
    differences. Errors are relative to |FD|, floored at 1 % of the
    problem's largest directional derivative (directions along which the
    flow does not move). Returns ({argument: worst error}, kinks left out,
    directions checked)."""
    weights = rng.normal(size=arrays[0].shape)

    def functional(cost, source, target, tolerance):
        """[k * B] values of the functional on k stacked copies of the batch."""
        flow = tf_deepemd.emd(cost, source, target, l2_strength=l2_strength, tolerance=tolerance)
        copies = np.tile(weights, (flow.shape[0] // len(weights), 1, 1))
        return tf.reduce_sum(flow * copies, axis=[-2, -1]).numpy()

    inputs = [tf.constant(x) for x in arrays]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        flow = tf_deepemd.emd(*inputs, l2_strength=l2_strength)
        value = tf.reduce_sum(flow * weights)
    gradients = [g.numpy() for g in tape.gradient(value, inputs)]

    batch = len(weights)
    analytic, numeric, smooth = {}, {}, {}
    for which, name in enumerate(("cost", "source_weights", "target_weights")):
        directions = rng.normal(size=(DIRECTIONS,) + arrays[which].shape)
        if which > 0 and equal_totals:
            directions -= directions.mean(-1, keepdims=True)  # keeps the totals equal
        perturbed = [[], [], []]
        for step in STEPS:
            for sign in (1.0, -1.0):
                for direction in directions:
                    for k in range(3):
                        shift = sign * step * direction if k == which else 0.0
                        perturbed[k].append(arrays[k] + shift)
        values = functional(*(np.concatenate(p) for p in perturbed), tolerance=REFERENCE_TOLERANCE)
        values = values.reshape(len(STEPS), 2, DIRECTIONS, batch)
        differences = (values[:, 0] - values[:, 1]) / (2 * np.array(STEPS)[:, None, None])
        numeric[name] = differences[-1]
        smooth[name] = np.abs(differences[0] - differences[1])
        axes = tuple(range(2, directions.ndim))
        analytic[name] = np.sum(gradients[which][None] * directions, axis=axes)
    scale = np.max([np.abs(v).max(axis=0) for v in numeric.values()], axis=0)  # [batch]
    errors, kinks, checked = {}, 0, 0
    for name in numeric:
        kink = smooth[name] > 1e-6 * scale
        error = np.abs(analytic[name] - numeric[name]) / np.maximum(np.abs(numeric[name]),
                                                                  0.01 * scale)
        errors[name] = float(np.max(np.where(kink, 0.0, error)))
        kinks += int(kink.sum())
        checked += kink.size
    return errors, kinks, checked


def report(path, errors, kinks, checked):
    print(f"{path}: worst relative error " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
          + f" ({kinks} of {checked} directions crossed a kink)")


@pytest.mark.parametrize("totals", list(TOTALS))
@pytest.mark.parametrize("shape", [(6, 9), (9, 6)])
@pytest.mark.parametrize("l2_strength", [0.05, 0.5, 5.0])
def test_l2_gradients_match_finite_differences(rng, l2_strength, shape, totals):
    arrays = problems(rng, 4, *shape, totals)
    errors, kinks, checked = directional_errors(rng, arrays, l2_strength, totals == "equal")
    report(f"l2 {l2_strength}, {shape[0]}x{shape[1]}, {totals} totals", errors, kinks, checked)
    assert kinks <= checked // 4, f"{kinks} of {checked} directions crossed a kink"
    for name, error in errors.items():
        assert error <= 1e-4, f"{name}: worst relative error {error:.2e}"


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
