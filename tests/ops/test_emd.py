"""tf_deepemd.emd / solve_emd against SciPy's HiGHS, finite differences and KKT checks."""

import numpy as np
import pytest
import tensorflow as tf

import tf_deepemd
from tests.reference import deepemd_problems, highs_emd, highs_emd_batch

pytestmark = pytest.mark.usefixtures("emd_implementation")

RTOL = {np.float64: 1e-6, np.float32: 1e-4}


def check_solution(result, cost, source, target, rtol, objective_floor=0.01):
    """Objective vs HiGHS, marginals, sign, finiteness of one batch of results.

    The objective error is taken relative to |HiGHS objective|, floored at
    `objective_floor * max|cost| * total flow` so that problems whose optimum
    is 0 (identical point sets) are measured on the scale of their costs.
    """
    flow = result.flow.numpy().astype(np.float64)
    objective = result.transport_cost.numpy().astype(np.float64)
    reference = highs_emd_batch(cost, source, target)
    assert np.all(np.isfinite(flow))
    total = np.minimum(source.sum(-1), target.sum(-1))
    scale = np.maximum(source.sum(-1), target.sum(-1))
    floor = objective_floor * np.abs(cost).max(axis=(-2, -1)) * total
    error = np.abs(objective - reference) / np.maximum(np.maximum(np.abs(reference), floor), 1e-300)
    assert error.max() <= rtol, f"worst objective error {error.max():.3g}"
    np.testing.assert_allclose(objective, np.sum(cost * flow, axis=(-2, -1)), rtol=rtol)
    assert flow.min() >= -rtol * scale.max()
    slack = rtol * scale[:, None]
    assert np.all(flow.sum(-1) <= source + slack)
    assert np.all(flow.sum(-2) <= target + slack)
    np.testing.assert_allclose(flow.sum((-2, -1)), total, rtol=rtol, atol=0)
    return error


@pytest.fixture(scope="module")
def deepemd_batch(module_rng):
    cost, source, target = deepemd_problems(module_rng, 1000, 25)
    return cost, source, target, highs_emd_batch(cost, source, target)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_1000_deepemd_problems_match_highs(deepemd_batch, dtype):
    cost, source, target, reference = deepemd_batch
    result = tf_deepemd.solve_emd(cost.astype(dtype), source.astype(dtype), target.astype(dtype))
    assert result.flow.dtype == dtype
    flow = result.flow.numpy().astype(np.float64)
    objective = np.sum(cost * flow, axis=(-2, -1))
    error = np.abs(objective - reference) / reference
    assert error.max() <= RTOL[dtype], f"worst relative objective error {error.max():.3g}"
    rtol = RTOL[dtype]
    np.testing.assert_allclose(flow.sum(-1), source, rtol=0, atol=rtol * 25)
    np.testing.assert_allclose(flow.sum(-2), target, rtol=0, atol=rtol * 25)
    assert flow.min() >= -rtol * 25
    assert np.all(np.isfinite(flow))
    assert result.converged.numpy().mean() >= 0.99


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(7, 12), (12, 7), (1, 9), (9, 1)])
def test_rectangular_problems(rng, dtype, shape):
    cost = rng.uniform(0, 2, size=(20,) + shape)
    source = rng.uniform(0.1, 1, size=(20, shape[0]))
    target = rng.uniform(0.1, 1, size=(20, shape[1]))
    target *= source.sum(-1, keepdims=True) / target.sum(-1, keepdims=True)
    result = tf_deepemd.solve_emd(*(x.astype(dtype) for x in (cost, source, target)))
    check_solution(result, cost, source, target, RTOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_unequal_totals(rng, dtype):
    cost = rng.uniform(0, 1, size=(30, 8, 10))
    source = rng.uniform(0.1, 1, size=(30, 8))
    target = rng.uniform(0.1, 1, size=(30, 10))
    # A third with more source mass, a third with more target mass, a third
    # off by a few percent only.
    target[:10] *= 0.5 * source[:10].sum(-1, keepdims=True) / target[:10].sum(-1, keepdims=True)
    target[10:20] *= 2.0 * source[10:20].sum(-1, keepdims=True) / target[10:20].sum(-1, keepdims=True)
    target[20:] *= 1.03 * source[20:].sum(-1, keepdims=True) / target[20:].sum(-1, keepdims=True)
    result = tf_deepemd.solve_emd(*(x.astype(dtype) for x in (cost, source, target)))
    check_solution(result, cost, source, target, RTOL[dtype])
    flow = result.flow.numpy()
    # The lighter side is shipped completely.
    np.testing.assert_allclose(flow[:10].sum(-2), target[:10], atol=RTOL[dtype] * 10)
    np.testing.assert_allclose(flow[10:20].sum(-1), source[10:20], atol=RTOL[dtype] * 10)


def degenerate_problems(rng):
    """(name, cost, source, target) with ties, zeros and other degeneracies."""
    n = 6
    features = rng.normal(size=(n, 16))
    unit = features / np.linalg.norm(features, axis=-1, keepdims=True)
    uniform = np.ones(n)
    problems = [
        ("integer costs with ties", rng.integers(0, 3, size=(n, n)).astype(float), uniform, uniform),
        ("identical point sets", 1.0 - unit @ unit.T, uniform, uniform),
        ("all-equal costs", np.full((n, n), 0.7), rng.uniform(0.5, 1.5, n), uniform * 1.0),
        ("zero costs", np.zeros((n, n)), uniform, uniform),
        ("zero source weights", rng.uniform(size=(n, n)), np.array([0, 1, 0, 2, 1, 2.0]), uniform),
        ("zero target weights", rng.uniform(size=(n, n)), uniform, np.array([3, 0, 0, 1, 1, 1.0])),
        ("single source node", rng.uniform(size=(1, n)), np.array([n * 1.0]), uniform),
        ("single target node", rng.uniform(size=(n, 1)), uniform, np.array([2.0])),
        ("permutation optimum", 1.0 - np.eye(n)[rng.permutation(n)], uniform, uniform),
    ]
    for name, cost, source, target in problems:
        if name == "all-equal costs":
            target = target * source.sum() / target.sum()
        yield name, cost, source.astype(float), target.astype(float)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_degenerate_problems(rng, dtype):
    for name, cost, source, target in degenerate_problems(rng):
        result = tf_deepemd.solve_emd(*(x.astype(dtype) for x in (cost, source, target)))
        flow = result.flow.numpy().astype(np.float64)
        assert np.all(np.isfinite(flow)), name
        try:
            check_solution(
                tf.nest.map_structure(lambda t: t[None] if t.shape.rank else t, result),
                cost[None], source[None], target[None], RTOL[dtype],
            )
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from error
        # Zero-mass nodes ship nothing at all.
        np.testing.assert_array_equal(flow[source == 0], 0.0, err_msg=name)
        np.testing.assert_array_equal(flow[:, target == 0], 0.0, err_msg=name)


def test_identical_point_sets_give_identity_flow(rng):
    features = rng.normal(size=(9, 32))
    unit = features / np.linalg.norm(features, axis=-1, keepdims=True)
    cost = 1.0 - unit @ unit.T
    flow = tf_deepemd.emd(cost, np.ones(9), np.ones(9)).numpy()
    np.testing.assert_allclose(flow, np.eye(9), atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_extreme_scales(rng, dtype):
    batch, n, m = 40, 10, 12
    cost_scale = 10.0 ** rng.uniform(-6, 3, size=(batch, 1, 1))
    cost = cost_scale * rng.uniform(0, 1, size=(batch, n, m))
    source = 10.0 ** rng.uniform(-4, 4, size=(batch, n))
    target = 10.0 ** rng.uniform(-4, 4, size=(batch, m))
    target[::2] *= source[::2].sum(-1, keepdims=True) / target[::2].sum(-1, keepdims=True)
    # Round to the tested dtype first so that the reference solves the same problem.
    cost, source, target = (x.astype(dtype).astype(np.float64) for x in (cost, source, target))
    result = tf_deepemd.solve_emd(*(x.astype(dtype) for x in (cost, source, target)))
    check_solution(result, cost, source, target, RTOL[dtype])


def test_batch_dimensions_broadcast(rng):
    cost = rng.uniform(size=(2, 3, 5, 4))
    source = rng.uniform(0.5, 1, size=(3, 5))
    target = rng.uniform(0.5, 1, size=(1, 4))
    result = tf_deepemd.solve_emd(cost, source, target)
    assert result.flow.shape == (2, 3, 5, 4)
    assert result.transport_cost.shape == (2, 3)
    assert result.source_potentials.shape == (2, 3, 5)
    assert result.target_potentials.shape == (2, 3, 4)
    for i in range(2):
        for j in range(3):
            reference, _ = highs_emd(cost[i, j], source[j], target[0])
            np.testing.assert_allclose(result.transport_cost[i, j], reference, rtol=1e-6)


def test_distance_and_potentials_are_consistent(rng):
    """Rubner's distance = work / flow; LP duality and complementary slackness."""
    cost = rng.uniform(0, 1, size=(30, 6, 7))
    source = rng.uniform(0.2, 1, size=(30, 6))
    target = rng.uniform(0.2, 1, size=(30, 7))
    target[10:] *= source[10:].sum(-1, keepdims=True) / target[10:].sum(-1, keepdims=True)
    result = tf_deepemd.solve_emd(cost, source, target)
    flow = result.flow.numpy()
    u, v = result.source_potentials.numpy(), result.target_potentials.numpy()
    work = result.transport_cost.numpy()
    np.testing.assert_allclose(result.distance, work / flow.sum((-2, -1)), rtol=1e-9)
    reduced = cost - u[..., :, None] - v[..., None, :]
    # Balanced: dual feasible. Unbalanced (first 10): the lighter side's
    # potentials are free, so only complementary slackness and duality hold.
    assert reduced[10:].min() >= -1e-7
    assert np.abs(reduced * flow).max() <= 1e-7
    np.testing.assert_allclose(
        work, np.sum(u * source, -1) + np.sum(v * target, -1), rtol=1e-7
    )


def test_matches_opencv(rng):
    """The official test-time solver: same work; same distance when balanced.

    (For unequal totals cv2.EMD divides the work by the larger total, where
    Rubner's definition and `distance` divide by the flow.)"""
    cv2 = pytest.importorskip("cv2")
    cost = rng.uniform(0, 1, size=(10, 8, 8)).astype(np.float32)
    source = rng.uniform(0.2, 1, size=(10, 8)).astype(np.float32)
    target = rng.uniform(0.2, 1, size=(10, 8)).astype(np.float32)
    target[5:] *= source[5:].sum(-1, keepdims=True) / target[5:].sum(-1, keepdims=True)
    result = tf_deepemd.solve_emd(cost, source, target)
    for i in range(10):
        distance, _, flow = cv2.EMD(source[i][:, None], target[i][:, None], cv2.DIST_USER, cost[i])
        np.testing.assert_allclose(result.transport_cost[i], np.sum(flow * cost[i]), rtol=1e-4)
        if i >= 5:
            np.testing.assert_allclose(result.distance[i], distance, rtol=1e-4)


def test_l2_form_satisfies_its_kkt_conditions(rng):
    """min c.x + l2/2 |x|^2 on the transportation polytope: stationarity and
    complementarity with the returned potentials (an independent check of
    the QP solution), and the limit l2 -> 0 recovers the LP."""
    cost = rng.uniform(0, 1, size=(10, 5, 6))
    source = rng.uniform(0.2, 1, size=(10, 5))
    target = rng.uniform(0.2, 1, size=(10, 6))
    target *= source.sum(-1, keepdims=True) / target.sum(-1, keepdims=True)
    for l2 in (0.3, 3.0):
        result = tf_deepemd.solve_emd(cost, source, target, l2_strength=l2, tolerance=1e-12)
        flow = result.flow.numpy()
        u, v = result.source_potentials.numpy(), result.target_potentials.numpy()
        reduced = cost + l2 * flow - u[..., :, None] - v[..., None, :]
        assert reduced.min() >= -1e-9
        assert np.abs(reduced * flow).max() <= 1e-9
        np.testing.assert_allclose(flow.sum(-1), source, atol=1e-9)
        np.testing.assert_allclose(flow.sum(-2), target, atol=1e-9)
    lp = tf_deepemd.solve_emd(cost, source, target).transport_cost.numpy()
    tiny = tf_deepemd.solve_emd(cost, source, target, l2_strength=1e-7).transport_cost.numpy()
    np.testing.assert_allclose(tiny, lp, rtol=1e-5)


def finite_difference_gradient(function, inputs, direction_sets, step):
    """Central differences of a scalar function along given directions, batched.

    Args:
      function: maps a tuple of batched arrays (leading axis = perturbation)
        to [batch] values.
      inputs: tuple of arrays (unbatched).
      direction_sets: list of tuples shaped like `inputs`.
      step: finite-difference step.
    """
    plus = [np.stack([x + step * d[i] for d in direction_sets]) for i, x in enumerate(inputs)]
    minus = [np.stack([x - step * d[i] for d in direction_sets]) for i, x in enumerate(inputs)]
    values = function(*(np.concatenate([p, m]) for p, m in zip(plus, minus)))
    count = len(direction_sets)
    return (values[:count] - values[count:]) / (2 * step)


def unit_directions(inputs, which):
    """All unit perturbations of input number `which`."""
    directions = []
    for index in np.ndindex(inputs[which].shape):
        direction = [np.zeros_like(x) for x in inputs]
        direction[which][index] = 1.0
        directions.append(tuple(direction))
    return directions


@pytest.mark.parametrize("balanced", [True, False])
def test_l2_gradients_match_finite_differences(rng, balanced):
    n, m, l2 = 5, 4, 0.5
    cost = rng.uniform(0, 1, size=(n, m))
    source = rng.uniform(0.5, 1.5, size=n)
    target = rng.uniform(0.5, 1.5, size=m)
    # Unbalanced: 20 % more source mass, so that perturbations of either side
    # stay in the same (smooth) regime.
    target *= (1.0 if balanced else 0.8) * source.sum() / target.sum()
    weights = rng.normal(size=(n, m))

    def functional(cost, source, target):
        flow = tf_deepemd.emd(cost, source, target, l2_strength=l2, tolerance=1e-13)
        return tf.reduce_sum(flow * weights, axis=[-2, -1])

    inputs = tuple(tf.constant(x) for x in (cost, source, target))
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        value = functional(*inputs)
    gradients = [g.numpy() for g in tape.gradient(value, inputs)]

    def batched(*args):
        return functional(*args).numpy()

    arrays = (cost, source, target)
    cost_fd = finite_difference_gradient(batched, arrays, unit_directions(arrays, 0), 1e-5)
    np.testing.assert_allclose(
        gradients[0].ravel(), cost_fd, rtol=1e-4, atol=1e-4 * np.abs(cost_fd).max()
    )
    if balanced:
        # Only directions that keep the totals equal are meaningful: move mass
        # into source node i and target node j together.
        directions = []
        for i in range(n):
            for j in range(m):
                direction = [np.zeros_like(x) for x in arrays]
                direction[1][i] = direction[2][j] = 1.0
                directions.append(tuple(direction))
        weight_fd = finite_difference_gradient(batched, arrays, directions, 1e-5)
        weight_ad = (gradients[1][:, None] + gradients[2][None, :]).ravel()
    else:
        directions = unit_directions(arrays, 1) + unit_directions(arrays, 2)
        weight_fd = finite_difference_gradient(batched, arrays, directions, 1e-5)
        weight_ad = np.concatenate([gradients[1], gradients[2]])
    np.testing.assert_allclose(
        weight_ad, weight_fd, rtol=1e-4, atol=1e-4 * np.abs(weight_fd).max()
    )


def nondegenerate_problems(rng, batch, n, m):
    cost = rng.uniform(0, 1, size=(batch, n, m))
    source = rng.uniform(0.5, 1.5, size=(batch, n))
    target = rng.uniform(0.5, 1.5, size=(batch, m))
    target *= source.sum(-1, keepdims=True) / target.sum(-1, keepdims=True)
    return cost, source, target


def test_lp_gradient_of_transport_cost_is_the_flow(rng):
    cost, source, target = nondegenerate_problems(rng, 50, 8, 7)
    cost_t = tf.constant(cost)
    with tf.GradientTape() as tape:
        tape.watch(cost_t)
        value = tf.reduce_sum(cost_t * tf_deepemd.emd(cost_t, source, target))
    gradient = tape.gradient(value, cost_t).numpy()
    flow = tf_deepemd.emd(cost, source, target).numpy()
    np.testing.assert_allclose(gradient, flow, atol=1e-5)


def test_lp_gradient_wrt_weights_is_the_dual_potentials(rng):
    cost, source, target = nondegenerate_problems(rng, 50, 8, 7)
    inputs = [tf.constant(x) for x in (source, target)]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        result = tf_deepemd.solve_emd(cost, *inputs)
        value = tf.reduce_sum(result.transport_cost)
    grad_source, grad_target = (g.numpy() for g in tape.gradient(value, inputs))
    u, v = result.source_potentials.numpy(), result.target_potentials.numpy()
    # Equal up to the constant (t, -t) that balanced problems leave free.
    shift_source = grad_source - u
    shift_target = grad_target - v
    np.testing.assert_allclose(shift_source, shift_source[:, :1] * np.ones_like(u), atol=1e-5)
    np.testing.assert_allclose(shift_target, shift_target[:, :1] * np.ones_like(v), atol=1e-5)
    np.testing.assert_allclose(shift_source[:, 0], -shift_target[:, 0], atol=1e-5)
    # And the LP sensitivity itself, by HiGHS on perturbed problems (balanced
    # direction: one unit more in source node 0 and target node 0).
    step = 1e-6
    for b in range(3):
        plus, _ = highs_emd(cost[b], source[b] + step * np.eye(8)[0], target[b] + step * np.eye(7)[0])
        minus, _ = highs_emd(cost[b], source[b] - step * np.eye(8)[0], target[b] - step * np.eye(7)[0])
        np.testing.assert_allclose(
            grad_source[b, 0] + grad_target[b, 0], (plus - minus) / (2 * step), atol=1e-5
        )


def test_works_inside_tf_function_with_dynamic_shapes(rng):
    solve = tf.function(
        lambda c, a, b: tf_deepemd.emd(c, a, b),
        input_signature=[
            tf.TensorSpec([None, None, None], tf.float32),
            tf.TensorSpec([None, None], tf.float32),
            tf.TensorSpec([None, None], tf.float32),
        ],
    )
    for n, m in ((4, 6), (6, 4)):
        cost, source, target = (x.astype(np.float32) for x in nondegenerate_problems(rng, 3, n, m))
        np.testing.assert_allclose(
            solve(cost, source, target).numpy(),
            tf_deepemd.emd(cost, source, target).numpy(),
            atol=1e-5,
        )


@pytest.mark.emd_implementations("tf_ops")  # interior-point settings
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_recovers_when_the_gap_rises_for_a_step(dtype):
    """A DeepEMD problem (retrieval test gallery, seed 2789262290, images 10
    and 11) whose duality gap rises at iteration 4 and regains its best only
    at iteration 8: the solver must not give up there."""
    from tests.retrieval.test_search import make_gallery
    from tf_deepemd.ops import matching

    nodes, _ = make_gallery(np.random.default_rng(2789262290))
    query, gallery = tf.constant(nodes[10:11]), tf.constant(nodes[11:12])
    source, target = (x.numpy()[0, 0] for x in matching.matching_marginals(query, gallery))
    cost = 1.0 - matching.matching_similarity(query, gallery).numpy()[0, 0]
    result = tf_deepemd.solve_emd(*(x.astype(dtype) for x in (cost, source, target)))
    assert result.converged.numpy()
    check_solution(result, cost[None], source[None], target[None], RTOL[dtype])


@pytest.mark.emd_implementations("tf_ops")  # interior-point settings
@pytest.mark.parametrize("batch", [1, 5, 13])
def test_shards_give_the_same_solution(rng, batch):
    """Any split of the batch into concurrent loops, also one with empty
    shards under a dynamic batch size, returns each problem's own solution."""
    cost, source, target = nondegenerate_problems(rng, batch, 6, 5)
    reference = tf_deepemd.solve_emd(cost, source, target, num_shards=1)
    check_solution(reference, cost, source, target, RTOL[np.float64])
    for num_shards in (2, 3, 8):
        solve = tf.function(
            lambda c, a, b, num_shards=num_shards: tf_deepemd.emd(c, a, b, num_shards=num_shards),
            input_signature=[
                tf.TensorSpec([None, 6, 5], tf.float64),
                tf.TensorSpec([None, 6], tf.float64),
                tf.TensorSpec([None, 5], tf.float64),
            ],
        )
        np.testing.assert_allclose(solve(cost, source, target), reference.flow, atol=1e-8)
    with pytest.raises(ValueError, match="num_shards must be >= 1"):
        tf_deepemd.emd(cost, source, target, num_shards=0)


def test_heavily_unbalanced_totals_keep_the_relative_accuracy(rng):
    """The tolerance follows the transported mass: a light side 1000x lighter
    than the heavy one still gets the float32 objective accuracy."""
    cost = rng.uniform(0, 1, size=(20, 8, 9))
    source = rng.uniform(0.5, 1.5, size=(20, 8)) * 1000.0
    target = rng.uniform(0.5, 1.5, size=(20, 9))
    target[10:], source[10:] = target[10:] * 1000.0, source[10:] / 1000.0
    cost, source, target = (x.astype(np.float32).astype(np.float64) for x in (cost, source, target))
    result = tf_deepemd.solve_emd(*(x.astype(np.float32) for x in (cost, source, target)))
    reference = highs_emd_batch(cost, source, target)
    error = np.abs(result.transport_cost.numpy() - reference) / reference
    assert error.max() <= 1e-5, error.max()
    assert result.converged.numpy().all()


@pytest.mark.parametrize(
    "cost_shape, source_shape, target_shape, message",
    [
        ((5,), (5,), (5,), "cost must have shape"),
        ((4, 5), (3,), (5,), "source_weights must have shape"),
        ((4, 5), (4,), (6,), "target_weights must have shape"),
        ((2, 4, 5), (3, 4), (5,), "do not broadcast"),
    ],
)
def test_bad_shapes_raise_value_error(cost_shape, source_shape, target_shape, message):
    with pytest.raises(ValueError, match=message):
        tf_deepemd.emd(np.ones(cost_shape), np.ones(source_shape), np.ones(target_shape))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("source", -1.0, "source_weights must be non-negative"),
        ("target", np.nan, "target_weights must be non-negative"),
        ("cost", np.inf, "cost must be finite"),
        ("cost", np.nan, "cost must be finite"),
        ("source", np.inf, "source_weights must be finite"),
        ("target", np.inf, "target_weights must be finite"),
    ],
)
def test_bad_values_raise_invalid_argument(field, value, message):
    arrays = {"cost": np.ones((3, 3)), "source": np.ones(3), "target": np.ones(3)}
    arrays[field][1] = value
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        tf_deepemd.emd(arrays["cost"], arrays["source"], arrays["target"])


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="l2_strength must be >= 0"):
        tf_deepemd.emd(np.ones((2, 2)), np.ones(2), np.ones(2), l2_strength=-1.0)
    with pytest.raises(ValueError, match="floating-point"):
        tf_deepemd.emd(np.ones((2, 2), np.int32), np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match="max_iterations"):
        tf_deepemd.emd(np.ones((2, 2)), np.ones(2), np.ones(2), max_iterations=0)


@pytest.mark.emd_implementations("tf_ops")  # interior-point settings
def test_iteration_cap_reports_not_converged(rng):
    cost, source, target = nondegenerate_problems(rng, 5, 10, 10)
    result = tf_deepemd.solve_emd(cost, source, target, max_iterations=2)
    assert result.num_iterations.numpy() == 2
    assert not result.converged.numpy().any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradients_are_finite_at_degenerate_vertices(rng, dtype):
    """Uniform weights with a permutation optimum: N positive flows instead of
    2N - 1, the transportation basis is disconnected and the KKT system nearly
    singular."""
    n = 4
    cost = rng.uniform(0.6, 1.4, size=(20, n, n))
    cost[:, np.arange(n), np.arange(n)] = rng.uniform(0.1, 0.2, size=(20, n))
    inputs = [tf.constant(x.astype(dtype)) for x in (cost, np.ones((20, n)), np.ones((20, n)))]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        result = tf_deepemd.solve_emd(*inputs)
        value = tf.reduce_sum(result.transport_cost)
    grad_cost, grad_source, grad_target = (g.numpy() for g in tape.gradient(value, inputs))
    assert np.all(np.isfinite(grad_cost)) and np.all(np.isfinite(grad_source))
    assert np.all(np.isfinite(grad_target))
    np.testing.assert_allclose(result.flow.numpy(), np.broadcast_to(np.eye(n), (20, n, n)), atol=1e-5)
    np.testing.assert_allclose(grad_cost, result.flow.numpy(), atol=1e-4)
    # One more unit through the diagonal cell (i, i) costs cost[i, i].
    diagonal = cost[:, np.arange(n), np.arange(n)]
    np.testing.assert_allclose(grad_source + grad_target, diagonal, atol=1e-4)


@pytest.mark.parametrize("side", ["source_weights", "target_weights"])
@pytest.mark.parametrize("in_function", [False, True])
def test_a_side_without_mass_raises_invalid_argument(rng, side, in_function):
    cost, source, target = nondegenerate_problems(rng, 3, 4, 5)
    weights = {"source_weights": source, "target_weights": target}
    weights[side][1] = 0.0
    solve = tf_deepemd.emd
    if in_function:
        solve = tf.function(lambda c, a, b: tf_deepemd.emd(c, a, b))
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{side} must have some mass"):
        solve(cost, weights["source_weights"], weights["target_weights"])


def test_without_validation_a_side_without_mass_gets_the_zero_flow(rng):
    cost, source, target = nondegenerate_problems(rng, 4, 5, 6)
    source[1] = 0.0
    target[2] = 0.0
    source[3] = target[3] = 0.0
    result = tf_deepemd.solve_emd(cost, source, target, validate_args=False)
    flow = result.flow.numpy()
    np.testing.assert_array_equal(flow[1:], 0.0)
    np.testing.assert_array_equal(result.transport_cost.numpy()[1:], 0.0)
    np.testing.assert_array_equal(result.distance.numpy()[1:], 0.0)
    # The other problem of the batch is solved as usual.
    check_solution(tf.nest.map_structure(lambda t: t[:1] if t.shape.rank else t, result),
                   cost[:1], source[:1], target[:1], RTOL[np.float64])


def test_without_validation_the_checks_are_skipped(rng):
    """validate_args=False solves valid inputs alike and lets invalid ones
    through without an error (the result is then meaningless)."""
    cost, source, target = nondegenerate_problems(rng, 5, 6, 4)
    checked = tf.function(lambda c, a, b: tf_deepemd.emd(c, a, b))
    unchecked = tf.function(lambda c, a, b: tf_deepemd.emd(c, a, b, validate_args=False))
    np.testing.assert_array_equal(unchecked(cost, source, target), checked(cost, source, target))
    source[0, 0] = -1.0
    cost[1, 0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError):
        checked(cost, source, target)
    assert unchecked(cost, source, target).shape == cost.shape


def has_stable_optimum(cost, source, target, rng, step):
    """Whether HiGHS finds the same plan for cost +- a random perturbation of
    size `step`: when the optimal plans form a face, or nearly (costs tied
    within `step` around a cycle), the two perturbations pick different
    vertices."""
    direction = step * rng.uniform(-1, 1, size=cost.shape)
    plans = [highs_emd(cost + sign * direction, source, target)[1] for sign in (1, -1)]
    return np.abs(plans[0] - plans[1]).max() <= 1e-6


def test_float16_inputs(rng):
    """float16 in, float16 out: the solve runs in float64, so the objective is
    as accurate as the float16 rounding of the inputs and outputs allows.

    d transport_cost / d cost is the optimal plan where that plan is stable;
    rounding to float16 can tie costs around a cycle to within the rounding
    step (seen with TEST_SEED=2 and 5), and then every (nearly) optimal plan is
    a valid gradient, so there it must be a nearly optimal plan, not
    necessarily the returned one."""
    cost, source, target = nondegenerate_problems(rng, 20, 7, 5)
    cost, source, target = (x.astype(np.float16).astype(np.float64) for x in (cost, source, target))
    target *= source.sum(-1, keepdims=True) / target.sum(-1, keepdims=True)
    inputs = [tf.constant(x, tf.float16) for x in (cost, source, target)]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        result = tf_deepemd.solve_emd(*inputs)
        loss = tf.reduce_sum(result.transport_cost)
    gradients = tape.gradient(loss, inputs)
    assert result.flow.dtype == tf.float16 and result.transport_cost.dtype == tf.float16
    assert all(g.dtype == tf.float16 and np.all(np.isfinite(g.numpy())) for g in gradients)
    solved = [x.numpy().astype(np.float64) for x in inputs]
    reference = highs_emd_batch(*solved)
    error = np.abs(result.transport_cost.numpy().astype(np.float64) - reference) / reference
    assert error.max() <= 3e-3, error.max()
    cost_gradient = gradients[0].numpy().astype(np.float64)
    flow = result.flow.numpy().astype(np.float64)
    stable = [has_stable_optimum(c, a, b, rng, step=4e-3) for c, a, b in zip(*solved)]
    assert sum(stable) >= len(stable) // 2, stable  # the elementwise check stays the rule
    for index, (c, a, b) in enumerate(zip(*solved)):
        if stable[index]:
            np.testing.assert_allclose(cost_gradient[index], flow[index], atol=2e-3,
                                       err_msg=f"problem {index}")
        else:
            plan = cost_gradient[index]
            assert plan.min() >= -2e-3, (index, plan.min())
            np.testing.assert_allclose(plan.sum(-1), a, atol=1e-2, err_msg=f"problem {index}")
            np.testing.assert_allclose(plan.sum(-2), b, atol=1e-2, err_msg=f"problem {index}")
            assert abs(np.sum(c * plan) - reference[index]) <= 3e-3 * reference[index], index
