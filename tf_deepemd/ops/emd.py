"""Batched, differentiable Earth Mover's Distance (transportation LP) solver.

The problem (Rubner et al.'s EMD, as OpenCV's `cv2.EMD` solves it), for every
batch element independently::

    minimise    sum(cost * flow) + l2_strength / 2 * ||flow||^2
    subject to  flow >= 0,
                flow.sum(-1) <= source_weights,
                flow.sum(-2) <= target_weights,
                flow.sum() == min(source_weights.sum(), target_weights.sum()).

`l2_strength = 0` is the linear program; `l2_strength > 0` is the 'L2' form
of the official DeepEMD training code (a strictly convex QP).

How it is solved
----------------
1. The problem is made balanced by one dummy row and one dummy column, whose
   masses take up the excess of the heavier side (left out, together with the
   masking of zero masses, when every problem of the batch is balanced with
   positive masses, as DeepEMD's are), and rescaled so that the total mass is
   1 and the cost spans [0, 1]. Neither change moves the minimiser: the total
   flow is fixed, so shifting the cost by a constant only shifts the
   objective.
2. A primal-dual interior-point method (Mehrotra predictor-corrector) runs
   inside `tf.while_loop`s over the batch. The Newton step of a
   transportation problem has the block structure
   `[[diag(R), D], [D^T, diag(C)]]` (D = flow / (l2 * flow + slack)); it is
   solved by the Schur complement onto the columns (the smaller side), an
   M x M positive-definite system once the free constant of the potentials is
   pinned by grounding one column, and never as a dense system over the N*M
   flows.
   The best iterate of each problem is kept; a problem stops when it has met
   the tolerance or stopped improving. Once few problems are left running
   they are gathered into a smaller batch, and the batch is split into
   `num_shards` parts solved by concurrent loops (one per CPU core).
3. The gradient (`tf.custom_gradient`) differentiates the KKT conditions at
   the returned iterate (implicit function theorem, as OptNet/qpth do) with
   one more solve of the same structured system; the iterations are not
   unrolled. For `l2_strength > 0` this is the exact derivative of the unique
   solution. For the linear program (`l2_strength = 0`) it is the derivative
   of the central-path point at the final duality gap, which the tolerance
   keeps tiny: at a non-degenerate vertex it tends to zero for the flow, so
   d sum(cost * flow) / d cost -> flow and d sum(cost * flow) / d weights ->
   the dual potentials, the LP sensitivities; at degenerate vertices (where
   the LP solution is not differentiable) it is a smooth, bounded
   approximation.

Rows or columns of zero mass carry no flow and are excluded from the problem
(their flow is exactly zero, their gradient is zero). Totals that differ by
less than about 8 units of the input dtype's precision are treated as equal.
"""

import collections
import os

import numpy as np
import tensorflow as tf

__all__ = ["EMDResult", "default_num_shards", "emd", "solve_emd"]

EMDResult = collections.namedtuple(
    "EMDResult",
    [
        "flow",
        "transport_cost",
        "distance",
        "source_potentials",
        "target_potentials",
        "converged",
        "num_iterations",
    ],
)
EMDResult.__doc__ = """Solution of a batch of EMD problems (see `solve_emd`).

Fields (`...` = the broadcast batch shape, dtype = the input dtype):
  flow: [..., N, M] optimal transport plan.
  transport_cost: [...] `sum(cost * flow)` (the work; no L2 term).
  distance: [...] `transport_cost / sum(flow)`, Rubner's Earth Mover's
    Distance (0 where no mass moves). `cv2.EMD` returns the same for equal
    totals; for unequal ones it divides by the larger total instead.
  source_potentials: [..., N], target_potentials: [..., M] dual potentials
    (u, v) of the balanced problem; for the linear program
    `cost[i, j] >= u[i] + v[j]` with equality wherever flow > 0, and
    `transport_cost == sum(u * source_weights) + sum(v * target_weights)`.
    Balanced problems leave a constant free (u + t, v - t); it is fixed so
    that both sums are equal. Not differentiable (stop-gradient).
  converged: [...] bool, whether the tolerance was met within
    `max_iterations`.
  num_iterations: scalar int32, interior-point iterations run for the batch.
"""

# Fraction of the distance to the boundary of the positive orthant that one
# step may cover; the usual choice for Mehrotra's method.
_STEP_TO_BOUNDARY = 0.99
# Smallest initial slack, in units of the cost range. Starting closer to the
# dual optimum than the customary 1 saved 2-5 of ~17 iterations on
# DeepEMD-style problems.
_INITIAL_SLACK = 0.3
# Iterations without a better iterate after which a problem stops (qpth's
# `notImprovedLim` is 3; a 4x4 cross-reference problem needed 4: its gap rose
# for one step and took three more to get below its earlier best).
_STALL_LIMIT = 5
# Smallest factor by which the tolerance of an unbalanced problem is tightened
# (see _solve_flat): float64 iterations reach about 1e-14.
_MIN_TOLERANCE_FACTOR = 1e-4
# Floor on flows and slacks of the normalised problem in the backward pass.
_GRADIENT_FLOOR = 1e-9


def _default_tolerance(dtype):
    """Stopping tolerance on the normalised problem (unit mass, cost in [0, 1])."""
    return 1e-10 if dtype == tf.float64 else 1e-7


def _balance_threshold(dtype):
    """Relative difference of the totals below which they count as equal."""
    return max(1e-12, 8.0 * float(np.finfo(dtype.as_numpy_dtype).eps))


# ---------------------------------------------------------------------------
# The interior-point method on the normalised, balanced problem.
#
# Shapes in this section: B problems of n rows and m columns (dummies
# included), everything float64. A cell is active where both its row and its
# column carry mass; elsewhere the flow is pinned to zero.
# ---------------------------------------------------------------------------

_NewtonFactors = collections.namedtuple(
    "_NewtonFactors", ["denominator", "scaling", "row_sums", "schur_cholesky"]
)
# A Newton direction. `neg_slack` is minus the slack step, zero on inactive
# cells; for the linear program it is just the potential step `du + dv`.
_Direction = collections.namedtuple("_Direction", ["flow", "neg_slack", "row", "col"])


def _dot(a, b):
    """[B, k], [B, k] -> [B]."""
    return tf.reduce_sum(a * b, axis=-1)


def _pairwise_sum(row_values, col_values):
    """[B, n], [B, m] -> [B, n, m] with out[b, i, j] = row[b, i] + col[b, j]."""
    return row_values[:, :, None] + col_values[:, None, :]


class _TransportProblem:
    """B balanced transportation problems and the linear algebra of their KKT systems.

    Args:
      cost: [B, n, m] float64, in [0, 1].
      source: [B, n], target: [B, m] float64 masses with equal totals.
      l2_cells: [B, n, m] float64 >= 0, the L2 weight of each cell, or None
        for the linear program (saves the L2 terms in every iteration).
      has_inactive: whether some masses may be zero. False promises that all
        are positive and saves the masking of every full-size operation.

    The iterates start dual feasible (slack = `cost + l2 * flow - (u + v)` on
    active cells) and the steps keep them so, up to rounding: the Newton
    systems carry no dual residual. Inactive cells keep flow 0 and slack 1.
    """

    def __init__(self, cost, source, target, l2_cells=None, *, has_inactive=True):
        self.cost, self.source, self.target, self.l2_cells = cost, source, target, l2_cells
        dtype = cost.dtype
        if has_inactive:
            self.row_active = tf.cast(source > 0.0, dtype)
            self.col_active = tf.cast(target > 0.0, dtype)
            self.cell_mask = self.row_active[:, :, None] * self.col_active[:, None, :]
            self.inactive_cells = 1.0 - self.cell_mask
            self.num_cells = tf.maximum(tf.reduce_sum(self.cell_mask, axis=[-2, -1]), 1.0)
        else:
            self.row_active = self.col_active = self.cell_mask = self.inactive_cells = None
            self.num_cells = tf.cast(tf.shape(cost)[-2] * tf.shape(cost)[-1], dtype)

    def masked(self, cells):
        """`cells` with zeros on the inactive cells."""
        return cells if self.cell_mask is None else self.cell_mask * cells

    def reduced_cost(self, flow):
        return self.cost if self.l2_cells is None else self.cost + self.l2_cells * flow

    def slack(self, flow, row_potential, col_potential):
        """[B, n, m]; 1 on inactive cells so that ratios stay finite there."""
        reduced = self.reduced_cost(flow) - _pairwise_sum(row_potential, col_potential)
        if self.cell_mask is None:
            return reduced
        return self.cell_mask * reduced + self.inactive_cells

    def initial_point(self):
        """The product coupling (primal feasible) and the largest potentials
        leaving every slack >= _INITIAL_SLACK (dual feasible)."""
        flow = self.source[:, :, None] * self.target[:, None, :]
        reduced = self.reduced_cost(flow)
        if self.cell_mask is not None:
            reduced = tf.where(self.cell_mask > 0, reduced, tf.constant(np.inf, flow.dtype))
        col_potential = tf.reduce_min(reduced, axis=-2) - _INITIAL_SLACK
        if self.col_active is not None:
            col_potential = tf.where(
                self.col_active > 0, col_potential, tf.zeros_like(col_potential)
            )
        row_potential = (
            tf.reduce_min(reduced - col_potential[:, None, :], axis=-1) - _INITIAL_SLACK
        )
        if self.row_active is not None:
            row_potential = tf.where(
                self.row_active > 0, row_potential, tf.zeros_like(row_potential)
            )
        return flow, row_potential, col_potential

    def factorize(self, flow, slack):
        """Factorises the Newton matrix of the KKT system at (flow, slack).

        Eliminating the flow and slack steps leaves, for the potentials (u, v),
        `[[diag(R), D], [D^T, diag(C)]]` with `D = flow / (l2 * flow + slack)`,
        R and C its row and column sums. Eliminating u gives the Schur
        complement `S = diag(C) - W` over the columns, `W = D^T diag(1/R) D`:
        the Laplacian of a graph on the columns with edge weights `W[j, k]`,
        whose diagonal `C[j] - W[j, j]` equals the sum of the off-diagonal
        weights of row j. Near a vertex D spans many orders of magnitude and
        the difference cancels catastrophically, while the sum of the
        off-diagonal entries (each a sum of positive products) is accurate:
        the diagonal is formed that way.

        S is singular along the all-ones vector of the active columns
        (potentials are defined up to u + t, v - t). Grounding the column of
        largest degree (adding its degree to its diagonal entry) makes it
        positive definite without changing the solution otherwise:
        right-hand sides are orthogonal to that vector.
        """
        denominator = slack if self.l2_cells is None else self.l2_cells * flow + slack
        scaling = flow / denominator  # zero on inactive cells (flow == 0)
        row_sums = tf.reduce_sum(scaling, axis=-1)
        if self.row_active is not None:
            row_sums += 1.0 - self.row_active
        negative_weights = tf.matmul(scaling, scaling / -row_sums[:, :, None], transpose_a=True)
        num_cols = tf.shape(negative_weights)[-1]
        zero_diagonal = tf.zeros_like(negative_weights[:, 0, :])
        degree = -tf.reduce_sum(tf.linalg.set_diag(negative_weights, zero_diagonal), axis=-1)
        # Ground an active column; a lone active column has degree 0: any
        # positive value does (its right-hand side is 0).
        active_bonus = 0.0 if self.col_active is None else self.col_active * 1e-300
        ground = tf.one_hot(tf.argmax(degree + active_bonus, axis=-1), num_cols, dtype=degree.dtype)
        largest_degree = tf.reduce_max(degree, axis=-1, keepdims=True)
        ground *= tf.where(largest_degree > 0.0, largest_degree, tf.ones_like(largest_degree))
        diagonal = degree + ground
        if self.col_active is not None:
            diagonal += 1.0 - self.col_active
        schur = tf.linalg.set_diag(negative_weights, diagonal)
        return _NewtonFactors(denominator, scaling, row_sums, tf.linalg.cholesky(schur))

    def potential_step(self, factors, row_rhs, col_rhs):
        """Solves [[diag(R), D], [D^T, diag(C)]] [du; dv] = [row_rhs; col_rhs]."""
        scaling, row_sums = factors.scaling, factors.row_sums
        schur_rhs = col_rhs - tf.linalg.matvec(scaling, row_rhs / row_sums, transpose_a=True)
        d_col = tf.linalg.cholesky_solve(factors.schur_cholesky, schur_rhs[:, :, None])[:, :, 0]
        d_row = (row_rhs - tf.linalg.matvec(scaling, d_col)) / row_sums
        return d_row, d_col

    def newton_direction(self, factors, row_rhs, col_rhs, particular):
        """Newton step of the linearised KKT conditions

            l2 * dx - (du + dv) - ds = 0            (dual feasibility is kept)
            dx.sum(-1) = -row_residual,  dx.sum(-2) = -col_residual
            slack * dx + flow * ds = target         (zero on inactive cells)

        given `particular = target / (l2 * flow + slack)` and the right-hand
        sides `row_rhs = -row_residual - particular.sum(-1)`, `col_rhs`
        likewise: then `dx = D (du + dv) + particular`.
        """
        d_row, d_col = self.potential_step(factors, row_rhs, col_rhs)
        d_potentials = _pairwise_sum(d_row, d_col)
        d_flow = factors.scaling * d_potentials + particular
        if self.l2_cells is None:
            neg_slack = self.masked(d_potentials)
        else:
            neg_slack = self.masked(d_potentials - self.l2_cells * d_flow)
        return _Direction(d_flow, neg_slack, d_row, d_col)


_Iterate = collections.namedtuple(
    "_Iterate", ["flow", "row_potential", "col_potential", "error"]
)
# Sums over the flow carried from one iteration to the next.
_FlowSums = collections.namedtuple("_FlowSums", ["rows", "cols", "gap", "error"])


def _step_length(largest_decrease, fraction):
    """[B] min(1, fraction / largest_decrease): the step keeping v + alpha dv >= 0
    where `largest_decrease` = max(-dv / v) (non-positive: nothing decreases)."""
    return tf.minimum(fraction / tf.maximum(largest_decrease, fraction), 1.0)


# The state of the iterations: the current iterate, sums over its flow, the
# best iterate so far and the bookkeeping of when each problem stops.
_LoopState = collections.namedtuple(
    "_LoopState",
    ["flow", "row_potential", "col_potential", "slack", "sums", "best", "stalled_steps",
     "stopped"],
)
# Fraction of a batch still iterating below which the rest is gathered into a
# smaller batch. DeepEMD-style batches converge together except a tail of a
# few percent that needs 1-3 more iterations; compacting it saved ~12 % of the
# time for 375 problems of 25 x 25.
_COMPACTION_FRACTION = 0.25


def _interior_point(problem, *, common_step, tolerance, max_iterations):
    """Mehrotra predictor-corrector on a `_TransportProblem`.

    Whenever at most `_COMPACTION_FRACTION` of the problems in the loop are
    still running, the best iterates of all are recorded and the running ones
    are gathered into a smaller batch that iterates on alone.

    Args:
      problem: the `_TransportProblem`.
      common_step: one step length for primal and dual (needed for l2 > 0,
        where the slack depends on the flow).
      tolerance: [B]; a problem stops once its duality gap and marginal
        residuals are below its tolerance.
      max_iterations: iteration cap.

    Returns:
      (the best `_Iterate` of each problem, iterations as an int32 scalar).
    """
    has_inactive = problem.cell_mask is not None
    # What the loop compacts: the problem data, tolerance and state, and the
    # positions of its problems in the batch.
    loop_problem = (problem.cost, problem.source, problem.target) + (
        () if problem.l2_cells is None else (problem.l2_cells,)
    )
    state = _initial_state(problem, tolerance)
    positions = tf.range(tf.shape(tolerance)[0])
    compacted = (loop_problem, tolerance, state, positions)
    recorded = state.best

    def record(recorded, compacted):
        *_, state, positions = compacted
        return tf.nest.map_structure(
            lambda old, new: tf.tensor_scatter_nd_update(old, positions[:, None], new),
            recorded, state.best,
        )

    def body(iteration, recorded, compacted):
        loop_problem, tolerance, state, positions = compacted
        state = _iteration(
            _TransportProblem(*loop_problem, has_inactive=has_inactive), state,
            common_step=common_step, tolerance=tolerance,
        )
        compacted = (loop_problem, tolerance, state, positions)
        running = ~state.stopped
        num_running = tf.reduce_sum(tf.cast(running, tf.int32))
        batch = tf.size(running)

        def compact():
            kept = tf.where(running)[:, 0]
            return record(recorded, compacted), tf.nest.map_structure(
                lambda value: tf.gather(value, kept), compacted
            )

        few_running = tf.cast(num_running, tf.float32) <= _COMPACTION_FRACTION * tf.cast(
            batch, tf.float32
        )
        recorded, compacted = tf.cond(
            (num_running < batch) & few_running,
            compact,
            lambda: (recorded, compacted),
        )
        return iteration + 1, recorded, compacted

    def cond(unused_iteration, unused_recorded, compacted):
        return ~tf.reduce_all(compacted[2].stopped)

    def batch_free(value):
        return tf.TensorShape([None]).concatenate(value.shape[1:])

    iterations, recorded, compacted = tf.while_loop(
        cond, body, (tf.constant(0), recorded, compacted),
        shape_invariants=(
            tf.TensorShape([]),
            tf.nest.map_structure(lambda value: value.shape, recorded),
            tf.nest.map_structure(batch_free, compacted),
        ),
        maximum_iterations=max_iterations,
    )
    return record(recorded, compacted), iterations


def _flow_sums(problem, flow, slack):
    rows = tf.reduce_sum(flow, axis=-1)
    cols = tf.reduce_sum(flow, axis=-2)
    gap = tf.reduce_sum(flow * slack, axis=[-2, -1])
    error = tf.maximum(
        gap,
        tf.maximum(
            tf.reduce_max(tf.abs(rows - problem.source), axis=-1),
            tf.reduce_max(tf.abs(cols - problem.target), axis=-1),
        ),
    )
    return _FlowSums(rows, cols, gap, error)


def _initial_state(problem, tolerance):
    flow, row_potential, col_potential = problem.initial_point()
    slack = problem.slack(flow, row_potential, col_potential)
    sums = _flow_sums(problem, flow, slack)
    return _LoopState(
        flow, row_potential, col_potential, slack, sums,
        best=_Iterate(flow, row_potential, col_potential, sums.error),
        stalled_steps=tf.zeros_like(sums.error, dtype=tf.int32),
        stopped=sums.error <= tolerance,
    )


def _iteration(problem, state, *, common_step, tolerance):
    """One predictor-corrector step of every problem: the next `_LoopState`."""
    linear = problem.l2_cells is None

    def step_lengths(flow, slack, direction, fraction):
        if problem.inactive_cells is not None:
            flow = flow + problem.inactive_cells  # positive denominators for the ratios
        primal = _step_length(-tf.reduce_min(direction.flow / flow, axis=[-2, -1]), fraction)
        dual = _step_length(tf.reduce_max(direction.neg_slack / slack, axis=[-2, -1]), fraction)
        if common_step:
            primal = dual = tf.minimum(primal, dual)
        return primal, dual

    def predicted_gap(flow, slack, sums, direction, second_order, alpha_p, alpha_d):
        """sum((flow + alpha_p dx) * (slack + alpha_d ds)), where `second_order`
        is dx * -ds."""
        dx_times_ds = -tf.reduce_sum(second_order, axis=[-2, -1])
        if linear:
            # ds = -(du + dv) on active cells and dx * slack = flow * (du + dv)
            # - flow * slack: both reduce to known sums over the flow.
            flow_times_ds = -(_dot(sums.rows, direction.row) + _dot(sums.cols, direction.col))
            dx_times_slack = -flow_times_ds - sums.gap
        else:
            flow_times_ds = -tf.reduce_sum(flow * direction.neg_slack, axis=[-2, -1])
            dx_times_slack = tf.reduce_sum(direction.flow * slack, axis=[-2, -1])
        return (sums.gap + alpha_d * flow_times_ds + alpha_p * dx_times_slack
                + alpha_p * alpha_d * dx_times_ds)

    flow, row_potential, col_potential, slack, sums, best, stalled_steps, stopped = state
    mean_product = sums.gap / problem.num_cells
    factors = problem.factorize(flow, slack)
    row_residual = sums.rows - problem.source
    col_residual = sums.cols - problem.target

    # Predictor: the pure Newton (affine-scaling) direction, target
    # products -flow * slack.
    if linear:
        # particular = -flow, whose sums are residual + marginal.
        affine = problem.newton_direction(factors, problem.source, problem.target, -flow)
    else:
        particular = -factors.scaling * slack
        affine = problem.newton_direction(
            factors,
            -row_residual - tf.reduce_sum(particular, axis=-1),
            -col_residual - tf.reduce_sum(particular, axis=-2),
            particular,
        )
    alpha_p, alpha_d = step_lengths(flow, slack, affine, 1.0)
    second_order = affine.flow * affine.neg_slack
    predicted = predicted_gap(flow, slack, sums, affine, second_order, alpha_p, alpha_d)
    predicted /= problem.num_cells
    centering = tf.clip_by_value(
        tf.math.divide_no_nan(predicted, mean_product) ** 3, 0.0, 1.0
    )

    # Corrector: re-centre and account for the second-order term, target
    # products centering * mean - dx * ds - flow * slack.
    centre = problem.masked((centering * mean_product)[:, None, None])
    if linear:
        # particular = target / slack = extra - flow.
        extra = (centre + second_order) / slack
        particular = extra - flow
        row_rhs = problem.source - tf.reduce_sum(extra, axis=-1)
        col_rhs = problem.target - tf.reduce_sum(extra, axis=-2)
    else:
        particular = (centre + second_order - flow * slack) / factors.denominator
        row_rhs = -row_residual - tf.reduce_sum(particular, axis=-1)
        col_rhs = -col_residual - tf.reduce_sum(particular, axis=-2)
    direction = problem.newton_direction(factors, row_rhs, col_rhs, particular)
    alpha_p, alpha_d = step_lengths(flow, slack, direction, _STEP_TO_BOUNDARY)
    flow = flow + alpha_p[:, None, None] * direction.flow
    row_potential = row_potential + alpha_d[:, None] * direction.row
    col_potential = col_potential + alpha_d[:, None] * direction.col
    # Stays > 0: the step to the boundary is < 1.
    slack = slack - alpha_d[:, None, None] * direction.neg_slack
    sums = _flow_sums(problem, flow, slack)

    # Close to the solution the Newton systems become ill-conditioned:
    # steps may stop improving (or the factorisation may fail with NaN).
    # As qpth does, the best iterate is kept, and a problem stops after
    # _STALL_LIMIT steps without improvement or a non-finite one.
    improved = sums.error < best.error  # False for NaN
    best = tf.nest.map_structure(
        lambda new, old: tf.where(
            tf.reshape(improved, [-1] + [1] * (new.shape.rank - 1)), new, old
        ),
        _Iterate(flow, row_potential, col_potential, sums.error),
        best,
    )
    stalled_steps = tf.where(improved, 0, stalled_steps + 1)
    stopped = (
        stopped
        | (best.error <= tolerance)
        | (stalled_steps >= _STALL_LIMIT)
        | ~tf.math.is_finite(sums.error)
    )
    return _LoopState(
        flow, row_potential, col_potential, slack, sums, best, stalled_steps, stopped
    )


def _kkt_gradient(problem, flow, slack, grad_flow):
    """Vector-Jacobian product of (cost, source, target, l2_cells) -> flow.

    Differentiating the KKT conditions at (flow, slack), with the
    complementarity products held fixed, gives
        dx = D (du + dv - d_cost - flow * d_l2),
        H [du; dv] = [d_source + (D d_cost) 1; d_target + (D d_cost)^T 1]
    with D and H as in the Newton step. With g = grad_flow and
    [p; q] = H^-1 [(D g) 1; (D g)^T 1], the adjoints are p (source),
    q (target), D * (p + q - g) (cost) and flow * that (L2 weights).
    """
    # As qpth does, flows and slacks are floored: at a tightly converged LP
    # iterate D spans ~25 orders of magnitude and the solve loses all accuracy.
    # The floor makes this the derivative at a point of the central path with
    # complementarity products around 1e-9 (of the unit total mass and cost
    # range), within ~1e-7 of the LP sensitivities at non-degenerate vertices.
    factors = problem.factorize(
        problem.masked(tf.maximum(flow, _GRADIENT_FLOOR)),
        tf.maximum(slack, _GRADIENT_FLOOR),
    )
    scaled_grad = factors.scaling * grad_flow
    grad_source, grad_target = problem.potential_step(
        factors, tf.reduce_sum(scaled_grad, axis=-1), tf.reduce_sum(scaled_grad, axis=-2)
    )
    grad_cost = factors.scaling * (_pairwise_sum(grad_source, grad_target) - grad_flow)
    grad_l2 = None if problem.l2_cells is None else grad_cost * flow
    return grad_cost, grad_source, grad_target, grad_l2


def _solve_balanced(cost, source, target, l2_cells, *, has_inactive, tolerance,
                    max_iterations):
    """Solves the normalised problem; the flow carries the KKT gradient.

    Shapes as in `_TransportProblem` (`l2_cells` None for the LP), `tolerance`
    [B]. Returns
    (flow, u, v, converged, iterations); only `flow` is differentiable.
    """
    problem = _TransportProblem(
        tf.stop_gradient(cost),
        tf.stop_gradient(source),
        tf.stop_gradient(target),
        None if l2_cells is None else tf.stop_gradient(l2_cells),
        has_inactive=has_inactive,
    )
    best, iterations = _interior_point(
        problem,
        common_step=l2_cells is not None,
        tolerance=tolerance,
        max_iterations=max_iterations,
    )
    flow, row_potential, col_potential = best.flow, best.row_potential, best.col_potential
    converged = best.error <= tolerance
    slack = problem.slack(flow, row_potential, col_potential)

    def grad(grad_flow):
        grads = _kkt_gradient(problem, flow, slack, grad_flow)
        return grads if l2_cells is not None else grads[:3]

    inputs = (cost, source, target) + (() if l2_cells is None else (l2_cells,))

    @tf.custom_gradient
    def attach_gradient(*unused_inputs):
        return tf.identity(flow), grad

    return attach_gradient(*inputs), row_potential, col_potential, converged, iterations


def _check_inputs(cost, source_weights, target_weights):
    """Static shape checks; returns (N, M) as Python ints or None."""
    if cost.shape.rank is not None and cost.shape.rank < 2:
        raise ValueError(f"cost must have shape [..., N, M], got shape {cost.shape}.")
    for arg_name, weights in (("source_weights", source_weights), ("target_weights", target_weights)):
        if weights.shape.rank is not None and weights.shape.rank < 1:
            raise ValueError(f"{arg_name} must have shape [..., K], got a scalar.")
    num_rows, num_cols = cost.shape[-2], cost.shape[-1]
    for arg_name, weights, size, axis_name in (
        ("source_weights", source_weights, num_rows, "N = cost.shape[-2]"),
        ("target_weights", target_weights, num_cols, "M = cost.shape[-1]"),
    ):
        if size is not None and weights.shape[-1] is not None and weights.shape[-1] != size:
            raise ValueError(
                f"{arg_name} must have shape [..., {size}] ({axis_name}), "
                f"got shape {weights.shape}."
            )
    try:
        tf.broadcast_static_shape(
            tf.broadcast_static_shape(cost.shape[:-2], source_weights.shape[:-1]),
            target_weights.shape[:-1],
        )
    except ValueError as error:
        raise ValueError(
            "The batch dimensions of cost [..., N, M], source_weights [..., N] and "
            f"target_weights [..., M] do not broadcast: {cost.shape}, "
            f"{source_weights.shape}, {target_weights.shape}."
        ) from error
    return num_rows, num_cols


def _runtime_checks(cost, source_weights, target_weights, l2_strength):
    return [
        tf.debugging.assert_all_finite(cost, "cost must be finite (no NaN or Inf)."),
        tf.debugging.assert_non_negative(
            source_weights, "source_weights must be non-negative (and not NaN)."
        ),
        tf.debugging.assert_non_negative(
            target_weights, "target_weights must be non-negative (and not NaN)."
        ),
        tf.debugging.assert_all_finite(source_weights, "source_weights must be finite."),
        tf.debugging.assert_all_finite(target_weights, "target_weights must be finite."),
        tf.debugging.assert_non_negative(l2_strength, "l2_strength must be >= 0."),
    ]


def solve_emd(
    cost,
    source_weights,
    target_weights,
    *,
    l2_strength=0.0,
    tolerance=None,
    max_iterations=100,
    num_shards=None,
    validate_args=True,
    name=None,
):
    """Solves a batch of EMD (transportation) problems; see the module docstring.

    Args:
      cost: [..., N, M] float tensor (float16/32/64), cost of moving a unit of
        mass from source node i to target node j.
      source_weights: [..., N] non-negative masses of the source nodes.
      target_weights: [..., M] non-negative masses of the target nodes. The
        batch dimensions of the three inputs broadcast against each other.
      l2_strength: float >= 0; adds `l2_strength / 2 * ||flow||^2` to the
        objective (the official DeepEMD 'L2' form). May be a scalar tensor.
      tolerance: stopping tolerance on the duality gap and the residuals of
        the problem rescaled to unit total mass and unit cost range; default
        1e-10 for float64 and 1e-7 for lower precision inputs.
      max_iterations: cap on interior-point iterations (typically 10-25 are
        needed); problems still above the tolerance then report
        `converged=False`.
      num_shards: inside a `tf.function`, the batch is split into this many
        parts, each solved by its own loop, which TensorFlow's inter-op
        thread pool runs concurrently (the operations of one loop are too
        small to parallelise internally). Eager calls solve the batch in one
        loop. Default: `default_num_shards()`.
      validate_args: check at run time that the cost is finite and the weights
        are finite and non-negative (tf.errors.InvalidArgumentError otherwise).
      name: name scope.

    Returns:
      An `EMDResult`. Computation is in float64 whatever the input dtype; the
      outputs have the input dtype. `flow`, `transport_cost` and `distance`
      are differentiable with respect to all three inputs (KKT gradient).

    Raises:
      ValueError: on non-float inputs, wrong ranks or mismatched shapes.
    """
    with tf.name_scope(name or "solve_emd"):
        cost = tf.convert_to_tensor(cost, name="cost")
        if not cost.dtype.is_floating:
            raise ValueError(f"cost must be a floating-point tensor, got dtype {cost.dtype.name}.")
        dtype = cost.dtype
        converted = []
        for arg_name, value in (("source_weights", source_weights), ("target_weights", target_weights)):
            value = tf.convert_to_tensor(value)
            if not value.dtype.is_floating and not value.dtype.is_integer:
                raise ValueError(f"{arg_name} must be numeric, got dtype {value.dtype.name}.")
            converted.append(tf.cast(value, dtype))
        source_weights, target_weights = converted
        num_rows, num_cols = _check_inputs(cost, source_weights, target_weights)
        static_l2 = tf.get_static_value(l2_strength)
        if static_l2 is not None and (np.any(np.isnan(static_l2)) or np.any(static_l2 < 0)):
            raise ValueError(f"l2_strength must be >= 0, got {static_l2}.")
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}.")
        num_shards = default_num_shards() if num_shards is None else int(num_shards)
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}.")
        if tolerance is None:
            tolerance = _default_tolerance(dtype)
        elif not tolerance > 0:
            raise ValueError(f"tolerance must be > 0, got {tolerance}.")
        l2_strength = tf.convert_to_tensor(l2_strength, dtype=tf.float64, name="l2_strength")
        if l2_strength.shape.rank != 0:
            raise ValueError(f"l2_strength must be a scalar, got shape {l2_strength.shape}.")

        checks = (
            _runtime_checks(cost, source_weights, target_weights, l2_strength)
            if validate_args
            else []
        )
        with tf.control_dependencies(checks):
            cost = tf.identity(cost)

        # Flatten the broadcast batch to one axis.
        batch_shape = tf.broadcast_dynamic_shape(
            tf.broadcast_dynamic_shape(tf.shape(cost)[:-2], tf.shape(source_weights)[:-1]),
            tf.shape(target_weights)[:-1],
        )
        num_rows_t, num_cols_t = tf.shape(cost)[-2], tf.shape(cost)[-1]
        flat_cost = tf.reshape(
            tf.broadcast_to(cost, tf.concat([batch_shape, [num_rows_t, num_cols_t]], 0)),
            [-1, num_rows_t, num_cols_t],
        )
        flat_source = tf.reshape(
            tf.broadcast_to(source_weights, tf.concat([batch_shape, [num_rows_t]], 0)),
            [-1, num_rows_t],
        )
        flat_target = tf.reshape(
            tf.broadcast_to(target_weights, tf.concat([batch_shape, [num_cols_t]], 0)),
            [-1, num_cols_t],
        )

        # The Schur complement is taken over the columns: put the smaller side there.
        flat_cost = tf.cast(flat_cost, tf.float64)
        flat_source = tf.cast(flat_source, tf.float64)
        flat_target = tf.cast(flat_target, tf.float64)
        transpose = num_rows is not None and num_cols is not None and num_rows < num_cols
        if transpose:
            problem = (tf.linalg.matrix_transpose(flat_cost), flat_target, flat_source)
        else:
            problem = (flat_cost, flat_source, flat_target)

        flow, source_potentials, target_potentials, converged, iterations = _solve_sharded(
            problem,
            # A statically zero L2 weight selects the cheaper LP iteration.
            None if static_l2 is not None and static_l2 == 0 else l2_strength,
            num_shards=num_shards,
            balance_threshold=_balance_threshold(dtype),
            tolerance=tolerance,
            max_iterations=max_iterations,
        )
        if transpose:
            flow = tf.linalg.matrix_transpose(flow)
            source_potentials, target_potentials = target_potentials, source_potentials

        transport_cost = tf.reduce_sum(flat_cost * flow, axis=[-2, -1])
        total_flow = tf.reduce_sum(flow, axis=[-2, -1])
        distance = tf.math.divide_no_nan(transport_cost, total_flow)

        def unflatten(value, event_shape):
            return tf.cast(tf.reshape(value, tf.concat([batch_shape, event_shape], 0)), dtype)

        return EMDResult(
            flow=unflatten(flow, [num_rows_t, num_cols_t]),
            transport_cost=unflatten(transport_cost, []),
            distance=unflatten(distance, []),
            source_potentials=unflatten(source_potentials, [num_rows_t]),
            target_potentials=unflatten(target_potentials, [num_cols_t]),
            converged=tf.reshape(converged, batch_shape),
            num_iterations=iterations,
        )


def default_num_shards():
    """Loops `solve_emd` splits a batch into by default: one per CPU core that
    TensorFlow's inter-op thread pool uses (at most 8), or 1 when a GPU is
    visible (its kernels do not gain from concurrent loops)."""
    if tf.config.list_logical_devices("GPU"):
        return 1
    threads = tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count() or 1
    return max(1, min(threads, 8))


def _solve_sharded(problem, l2_strength, *, num_shards, **options):
    """`_solve_flat` on `num_shards` consecutive parts of the batch."""
    static_batch = problem[0].shape[0]
    if static_batch is not None:
        num_shards = max(1, min(num_shards, static_batch))
    if num_shards == 1 or tf.executing_eagerly():  # eager operations run one at a time
        return _solve_flat(*problem, l2_strength, **options)
    batch = tf.shape(problem[0])[0]
    sizes = batch // num_shards + tf.cast(tf.range(num_shards) < batch % num_shards, tf.int32)
    shards = zip(*(tf.split(value, sizes, num=num_shards) for value in problem))
    # One traced function called once per shard: tracing the solver once
    # instead of once per shard.
    results = [_solve_flat_function(*shard, l2_strength, **options) for shard in shards]
    *batched, iterations = zip(*results)
    return (*(tf.concat(parts, axis=0) for parts in batched),
            tf.reduce_max(tf.stack(iterations)))


def _solve_flat(cost, source, target, l2_strength, *, balance_threshold, tolerance,
                max_iterations):
    """[B, N, M], [B, N], [B, M] float64 -> flow [B, N, M], u [B, N], v [B, M], converged, its.

    `l2_strength` is a float64 scalar tensor, or None for the linear program.
    """
    source_total = tf.reduce_sum(source, axis=-1)
    target_total = tf.reduce_sum(target, axis=-1)
    total = tf.maximum(source_total, target_total)
    safe_total = tf.where(total > 0.0, total, tf.ones_like(total))
    balanced = tf.abs(source_total - target_total) <= balance_threshold * total
    zero = tf.zeros_like(total)
    dummy_row_mass = tf.where(balanced, zero, tf.nn.relu(target_total - source_total))
    dummy_col_mass = tf.where(balanced, zero, tf.nn.relu(source_total - target_total))
    # The objective scales with the transported mass, the normalised residuals
    # with the larger total: the tolerance is tightened by their ratio (down
    # to _MIN_TOLERANCE_FACTOR) so that it bounds the relative error of the
    # objective whatever the imbalance.
    transported = tf.minimum(source_total, target_total)
    tolerance = tolerance * tf.maximum(transported / safe_total, _MIN_TOLERANCE_FACTOR)

    cost_min = tf.reduce_min(cost, axis=[-2, -1])
    cost_range = tf.reduce_max(cost, axis=[-2, -1]) - cost_min
    safe_range = tf.where(cost_range > 0.0, cost_range, tf.ones_like(cost_range))
    normalised_cost = (cost - cost_min[:, None, None]) / safe_range[:, None, None]

    def normalise_masses(masses, dummy):
        if dummy is not None:
            masses = tf.concat([masses, dummy[:, None]], axis=-1)
        masses = masses / safe_total[:, None]
        # Masses far below the precision of the total are rounding noise.
        return tf.where(masses > 1e-14, masses, tf.zeros_like(masses))

    def solve(general):
        """Solves with a dummy row and column and masking of zero masses
        (`general`), or without either: every problem balanced, every mass > 0."""
        padding = [[0, 0], [0, 1], [0, 1]] if general else [[0, 0], [0, 0], [0, 0]]
        # Dummy cells cost the minimum: any constant works, their total flow is fixed.
        padded_cost = tf.pad(normalised_cost, padding)
        if l2_strength is None:
            l2_cells = None
        else:
            # x = total * x', cost = range * cost' + min: the objective divided
            # by total * range has l2' = l2 * total / range; no L2 on dummies.
            l2_cells = (l2_strength * safe_total / safe_range)[:, None, None] * tf.pad(
                tf.ones_like(cost), padding
            )
        flow, row_potential, col_potential, converged, iterations = _solve_balanced(
            padded_cost,
            normalise_masses(source, dummy_row_mass if general else None),
            normalise_masses(target, dummy_col_mass if general else None),
            l2_cells,
            has_inactive=general,
            tolerance=tolerance,
            max_iterations=max_iterations,
        )
        if not general:
            return flow, row_potential, col_potential, zero, zero, converged, iterations
        return (flow[:, :-1, :-1], row_potential[:, :-1], col_potential[:, :-1],
                row_potential[:, -1], col_potential[:, -1], converged, iterations)

    # DeepEMD's problems are balanced with positive masses: skip the dummies
    # and the masking of zero masses (~25 % of the work at 25 x 25) when the
    # whole batch is.
    all_positive = tf.reduce_all(normalise_masses(source, None) > 0.0) & tf.reduce_all(
        normalise_masses(target, None) > 0.0
    )
    flow, row_potential, col_potential, dummy_row_potential, dummy_col_potential, \
        converged, iterations = tf.cond(
            tf.reduce_all(balanced) & all_positive, lambda: solve(False), lambda: solve(True)
        )
    flow = flow * safe_total[:, None, None]

    # Back to the input's units (cost = range * cost' + min, the min carried
    # by u), then fix the free constant t in (u + t, v - t): the dummy of an
    # unbalanced problem gets the potential of its cost so that
    # transport_cost = u . source + v . target; balanced problems split that
    # sum evenly.
    row_potential = tf.stop_gradient(safe_range[:, None] * row_potential + cost_min[:, None])
    col_potential = tf.stop_gradient(safe_range[:, None] * col_potential)
    source_value = tf.reduce_sum(row_potential * source, axis=-1)
    target_value = tf.reduce_sum(col_potential * target, axis=-1)
    shift = tf.where(
        balanced | (total <= 0.0),
        tf.math.divide_no_nan(target_value - source_value, source_total + target_total),
        tf.where(
            source_total > target_total,
            safe_range * dummy_col_potential - cost_min,  # v_dummy -> min cost
            -safe_range * dummy_row_potential,  # u_dummy (+ min) -> min cost
        ),
    )
    source_potentials = row_potential + shift[:, None]
    target_potentials = col_potential - shift[:, None]
    return flow, source_potentials, target_potentials, converged, iterations


_solve_flat_function = tf.function(_solve_flat, reduce_retracing=True)


def emd(
    cost,
    source_weights,
    target_weights,
    *,
    l2_strength=0.0,
    tolerance=None,
    max_iterations=100,
    num_shards=None,
    validate_args=True,
    name=None,
):
    """Optimal flow of a batch of EMD problems: `solve_emd(...).flow`.

    Args and semantics as `solve_emd`. Returns the flow [..., N, M] in the
    dtype of `cost`, differentiable with respect to all three inputs.
    """
    return solve_emd(
        cost,
        source_weights,
        target_weights,
        l2_strength=l2_strength,
        tolerance=tolerance,
        max_iterations=max_iterations,
        num_shards=num_shards,
        validate_args=validate_args,
        name=name or "emd",
    ).flow
