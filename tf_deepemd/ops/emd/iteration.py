"""One Mehrotra predictor-corrector step of a batch of transportation problems.

The iterates start dual feasible (slack = `cost + l2 * flow - (u + v)`) and
the steps keep them so, up to rounding: the Newton systems carry no dual
residual. Shapes as in `newton` ([B, n, m] cells, [B] per problem).
"""

import collections

import tensorflow as tf

from tf_deepemd.ops.emd import newton

# Fraction of the distance to the boundary of the positive orthant that one
# step may cover; the usual choice for Mehrotra's method.
_STEP_TO_BOUNDARY = 0.99
# Iterations without a better iterate after which a problem stops (qpth's
# `notImprovedLim` is 3; a 4x4 cross-reference problem needed 4: its gap rose
# for one step and took three more to get below its earlier best).
_STALL_LIMIT = 5

Iterate = collections.namedtuple("Iterate", ["flow", "row_potential", "col_potential", "error"])
# Sums over the flow carried from one iteration to the next.
FlowSums = collections.namedtuple("FlowSums", ["rows", "cols", "gap", "error"])
# The state of the iterations: the current iterate, sums over its flow, the
# best iterate so far and the bookkeeping of when each problem stops.
LoopState = collections.namedtuple(
    "LoopState",
    ["flow", "row_potential", "col_potential", "slack", "sums", "best", "stalled_steps",
     "stopped"],
)


def _dot(a, b):
    """[B, k], [B, k] -> [B]."""
    return tf.reduce_sum(a * b, axis=-1)


def _sum_cells(cells):
    return tf.reduce_sum(cells, axis=[-2, -1])


def _cell_products(slack, flow):
    """slack * flow, 0 on forbidden cells (flow 0, slack inf)."""
    return tf.math.multiply_no_nan(slack, flow)


def flow_sums(problem, flow, slack):
    """Marginals, duality gap and the error measure (the largest of the gap
    and the marginal residuals) of each problem."""
    rows = tf.reduce_sum(flow, axis=-1)
    cols = tf.reduce_sum(flow, axis=-2)
    gap = _sum_cells(_cell_products(slack, flow))
    error = tf.maximum(
        gap,
        tf.maximum(
            tf.reduce_max(tf.abs(rows - problem.source), axis=-1),
            tf.reduce_max(tf.abs(cols - problem.target), axis=-1),
        ),
    )
    return FlowSums(rows, cols, gap, error)


def initial_state(problem, tolerance):
    flow, row_potential, col_potential = newton.initial_point(problem)
    slack = newton.slack(problem, flow, row_potential, col_potential)
    sums = flow_sums(problem, flow, slack)
    return LoopState(
        flow, row_potential, col_potential, slack, sums,
        best=Iterate(flow, row_potential, col_potential, sums.error),
        stalled_steps=tf.zeros_like(sums.error, dtype=tf.int32),
        stopped=sums.error <= tolerance,
    )


def _step_length(largest_decrease, fraction):
    """[B] min(1, fraction / largest_decrease): the step keeping v + alpha dv >= 0
    where `largest_decrease` = max(-dv / v) (non-positive: nothing decreases)."""
    return tf.minimum(fraction / tf.maximum(largest_decrease, fraction), 1.0)


def step_lengths(problem, state, direction, fraction):
    """Primal and dual step lengths that keep flow and slack positive; one
    common step for l2 > 0, where the slack depends on the flow."""
    # Forbidden cells: 0 / 0 in the primal ratio (no_nan: 0), finite / inf in the dual one.
    primal_decrease = -tf.reduce_min(
        tf.math.divide_no_nan(direction.flow, state.flow), axis=[-2, -1]
    )
    primal = _step_length(primal_decrease, fraction)
    dual = _step_length(
        tf.reduce_max(direction.neg_slack / state.slack, axis=[-2, -1]), fraction
    )
    if not newton.is_linear(problem):
        primal = dual = tf.minimum(primal, dual)
    return primal, dual


def _predicted_gap(problem, state, direction, second_order, alpha_p, alpha_d):
    """sum((flow + alpha_p dx) * (slack + alpha_d ds)), where `second_order`
    is dx * -ds."""
    sums = state.sums
    dx_times_ds = -_sum_cells(second_order)
    if newton.is_linear(problem):
        # ds = -(du + dv) and dx * slack = flow * (du + dv) - flow * slack:
        # both reduce to known sums over the flow.
        flow_times_ds = -(_dot(sums.rows, direction.row) + _dot(sums.cols, direction.col))
        dx_times_slack = -flow_times_ds - sums.gap
    else:
        flow_times_ds = -_sum_cells(state.flow * direction.neg_slack)
        dx_times_slack = _sum_cells(_cell_products(state.slack, direction.flow))
    return (sums.gap + alpha_d * flow_times_ds + alpha_p * dx_times_slack
            + alpha_p * alpha_d * dx_times_ds)


def predictor(problem, state, factors):
    """The pure Newton (affine-scaling) direction, target products -flow * slack."""
    if newton.is_linear(problem):
        # particular = -flow, whose sums are residual + marginal.
        return newton.newton_direction(problem, factors, problem.source, problem.target,
                                       -state.flow)
    particular = -_cell_products(state.slack, factors.scaling)
    return _quadratic_direction(problem, state, factors, particular)


def centering(problem, state, affine, second_order):
    """Mehrotra's centering parameter (predicted / current mean product)^3 and
    the current mean product, both [B]."""
    alpha_p, alpha_d = step_lengths(problem, state, affine, 1.0)
    predicted = _predicted_gap(problem, state, affine, second_order, alpha_p, alpha_d)
    mean_product = state.sums.gap / problem.num_cells
    sigma = tf.math.divide_no_nan(predicted / problem.num_cells, mean_product) ** 3
    return tf.clip_by_value(sigma, 0.0, 1.0), mean_product


def corrector(problem, state, factors, centre, second_order):
    """Re-centred direction that accounts for the predictor's second-order
    term: target products `centre - dx * ds - flow * slack`."""
    centre = centre[:, None, None]
    if newton.is_linear(problem):
        # particular = target / slack = extra - flow.
        extra = (centre + second_order) / state.slack
        return newton.newton_direction(
            problem, factors,
            problem.source - tf.reduce_sum(extra, axis=-1),
            problem.target - tf.reduce_sum(extra, axis=-2),
            extra - state.flow,
        )
    particular = (
        centre + second_order - _cell_products(state.slack, state.flow)
    ) / factors.denominator
    return _quadratic_direction(problem, state, factors, particular)


def _quadratic_direction(problem, state, factors, particular):
    """`newton.newton_direction` for l2 > 0, which keeps the marginal residuals."""
    row_residual = state.sums.rows - problem.source
    col_residual = state.sums.cols - problem.target
    return newton.newton_direction(
        problem, factors,
        -row_residual - tf.reduce_sum(particular, axis=-1),
        -col_residual - tf.reduce_sum(particular, axis=-2),
        particular,
    )


def _keep_best(state, candidate, tolerance):
    """Updates the best iterate and whether each problem stops.

    Close to the solution the Newton systems become ill-conditioned: steps
    may stop improving (or the factorisation may fail with NaN). As qpth
    does, the best iterate is kept, and a problem stops once it meets the
    tolerance, after _STALL_LIMIT steps without improvement, or on a
    non-finite step.
    """
    # A stopped problem keeps its best iterate while others run on, so that
    # each problem's result does not depend on the batch it is solved in.
    improved = (candidate.error < state.best.error) & ~state.stopped  # False for NaN
    best = tf.nest.map_structure(
        lambda new, old: tf.where(
            tf.reshape(improved, [-1] + [1] * (new.shape.rank - 1)), new, old
        ),
        candidate,
        state.best,
    )
    stalled_steps = tf.where(improved, 0, state.stalled_steps + 1)
    stopped = (
        state.stopped
        | (best.error <= tolerance)
        | (stalled_steps >= _STALL_LIMIT)
        | ~tf.math.is_finite(candidate.error)
    )
    return best, stalled_steps, stopped


def iteration(problem, state, tolerance):
    """One predictor-corrector step of every problem: the next `LoopState`."""
    factors = newton.factorize(problem, state.flow, state.slack)
    affine = predictor(problem, state, factors)
    second_order = affine.flow * affine.neg_slack
    sigma, mean_product = centering(problem, state, affine, second_order)
    direction = corrector(problem, state, factors, sigma * mean_product, second_order)

    alpha_p, alpha_d = step_lengths(problem, state, direction, _STEP_TO_BOUNDARY)
    flow = state.flow + alpha_p[:, None, None] * direction.flow
    row_potential = state.row_potential + alpha_d[:, None] * direction.row
    col_potential = state.col_potential + alpha_d[:, None] * direction.col
    # Stays > 0: the step to the boundary is < 1.
    slack = state.slack - alpha_d[:, None, None] * direction.neg_slack
    sums = flow_sums(problem, flow, slack)
    best, stalled_steps, stopped = _keep_best(
        state, Iterate(flow, row_potential, col_potential, sums.error), tolerance
    )
    return LoopState(flow, row_potential, col_potential, slack, sums, best, stalled_steps,
                     stopped)
