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
   masses take up the excess of the heavier side (left out when every problem
   of the batch is balanced), and rescaled so that the total mass is 1 and the
   cost spans [0, 1]. Neither change moves the minimiser: the total flow is
   fixed, so shifting the cost by a constant only shifts the objective.
2. A primal-dual interior-point method (Mehrotra predictor-corrector) runs
   inside one `tf.while_loop` over the whole batch. The Newton step of a
   transportation problem has the block structure
   `[[diag(R), D], [D^T, diag(C)]]` (D = flow / (l2 * flow + slack)); it is
   solved by the Schur complement onto the columns (the smaller side), an
   M x M positive-definite system once the free constant of the potentials is
   pinned by grounding one column, and never as a dense system over the N*M
   flows.
   The best iterate of each problem is kept; the loop ends when every
   problem has met the tolerance or stopped improving.
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

import numpy as np
import tensorflow as tf

__all__ = ["EMDResult", "emd", "solve_emd"]

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
# `notImprovedLim`).
_STALL_LIMIT = 3
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

    The iterates start dual feasible (slack = `cost + l2 * flow - (u + v)` on
    active cells) and the steps keep them so, up to rounding: the Newton
    systems carry no dual residual.
    """

    def __init__(self, cost, source, target, l2_cells):
        self.cost, self.source, self.target, self.l2_cells = cost, source, target, l2_cells
        dtype = cost.dtype
        self.row_active = tf.cast(source > 0.0, dtype)
        self.col_active = tf.cast(target > 0.0, dtype)
        self.cell_mask = self.row_active[:, :, None] * self.col_active[:, None, :]
        self.inactive_cells = 1.0 - self.cell_mask
        self.negative_mask = -self.cell_mask
        self.num_cells = tf.maximum(tf.reduce_sum(self.cell_mask, axis=[-2, -1]), 1.0)

    def reduced_cost(self, flow):
        return self.cost if self.l2_cells is None else self.cost + self.l2_cells * flow

    def slack(self, flow, row_potential, col_potential):
        """[B, n, m]; 1 on inactive cells so that ratios stay finite there."""
        reduced = self.reduced_cost(flow) - _pairwise_sum(row_potential, col_potential)
        return self.cell_mask * reduced + self.inactive_cells

    def initial_point(self):
        """The product coupling (primal feasible) and the largest potentials
        leaving every slack >= _INITIAL_SLACK (dual feasible)."""
        flow = self.source[:, :, None] * self.target[:, None, :]
        reduced = tf.where(
            self.cell_mask > 0, self.reduced_cost(flow), tf.constant(np.inf, flow.dtype)
        )
        col_potential = tf.reduce_min(reduced, axis=-2) - _INITIAL_SLACK
        col_potential = tf.where(self.col_active > 0, col_potential, tf.zeros_like(col_potential))
        row_potential = (
            tf.reduce_min(reduced - col_potential[:, None, :], axis=-1) - _INITIAL_SLACK
        )
        row_potential = tf.where(self.row_active > 0, row_potential, tf.zeros_like(row_potential))
        return flow, row_potential, col_potential

    def factorize(self, flow, slack):
        """Factorises the Newton matrix of the KKT system at (flow, slack).

        Eliminating the flow and slack steps leaves, for the potentials (u, v),
        `[[diag(R), D], [D^T, diag(C)]]` with `D = flow / (l2 * flow + slack)`,
        R and C its row and column sums. Eliminating u gives the Schur
        complement `S = diag(C) - D^T diag(1/R) D` over the columns: the
        Laplacian of a graph on the columns with edge weights
        `sum_i D[i, j] D[i, k] / R[i]`. Near a vertex D spans many orders of
        magnitude and `C - diag(D^T R^-1 D)` cancels catastrophically, so the
        diagonal is formed as the sum of its row's edge weights instead, with
        each row's dominant entry left out by summing the others.

        S is singular along the all-ones vector of the active columns
        (potentials are defined up to u + t, v - t). Grounding the column of
        largest degree (adding its degree to its diagonal entry) makes it
        positive definite without changing the solution otherwise:
        right-hand sides are orthogonal to that vector.
        """
        denominator = slack if self.l2_cells is None else self.l2_cells * flow + slack
        scaling = flow / denominator  # zero on inactive cells (flow == 0)
        row_sums = tf.reduce_sum(scaling, axis=-1) + (1.0 - self.row_active)
        scaled_by_row = scaling / row_sums[:, :, None]
        # sum_{k != j} D[i, k] is R[i] - D[i, j] except for a row's single
        # dominant entry, where that subtraction cancels: there it is the sum
        # of the other entries.
        row_max = tf.reduce_max(scaling, axis=-1, keepdims=True)
        is_row_max = scaling >= row_max
        rest_of_row = tf.reduce_sum(tf.where(is_row_max, tf.zeros_like(scaling), scaling), axis=-1, keepdims=True)
        single_max = tf.reduce_sum(tf.cast(is_row_max, scaling.dtype), axis=-1, keepdims=True) < 1.5
        others_in_row = tf.where(
            is_row_max & single_max, rest_of_row, row_sums[:, :, None] - scaling
        )
        degree = tf.reduce_sum(scaled_by_row * others_in_row, axis=-2)  # [B, m]
        # Ground an active column; a lone active column has degree 0: any
        # positive value does (its right-hand side is 0).
        ground = tf.one_hot(
            tf.argmax(degree + self.col_active * 1e-300, axis=-1),
            tf.shape(degree)[-1],
            dtype=degree.dtype,
        )
        largest_degree = tf.reduce_max(degree, axis=-1, keepdims=True)
        ground *= tf.where(largest_degree > 0.0, largest_degree, tf.ones_like(largest_degree))
        schur = tf.linalg.set_diag(
            -tf.matmul(scaling, scaled_by_row, transpose_a=True),
            degree + ground + (1.0 - self.col_active),
        )
        return _NewtonFactors(denominator, scaling, row_sums, tf.linalg.cholesky(schur))

    def potential_step(self, factors, row_rhs, col_rhs):
        """Solves [[diag(R), D], [D^T, diag(C)]] [du; dv] = [row_rhs; col_rhs]."""
        scaling, row_sums = factors.scaling, factors.row_sums
        schur_rhs = col_rhs - tf.linalg.matvec(scaling, row_rhs / row_sums, transpose_a=True)
        d_col = tf.linalg.cholesky_solve(factors.schur_cholesky, schur_rhs[:, :, None])[:, :, 0]
        d_row = (row_rhs - tf.linalg.matvec(scaling, d_col)) / row_sums
        return d_row, d_col

    def newton_direction(self, factors, row_residual, col_residual, target_products=None,
                         flow=None, slack=None):
        """Newton step (d_flow, d_slack, d_u, d_v) of the linearised KKT conditions

            l2 * dx - (du + dv) - ds = 0            (dual feasibility is kept)
            dx.sum(-1) = -row_residual,  dx.sum(-2) = -col_residual
            slack * dx + flow * ds = target_products   (zero on inactive cells)

        `target_products=None` is the affine-scaling (predictor) step,
        target = -flow * slack, for which `flow` and `slack` must be given.
        """
        if target_products is None and self.l2_cells is None:
            # target / slack = -flow, whose sums are residual + marginal.
            particular = -flow
            row_rhs, col_rhs = self.source, self.target
        else:
            if target_products is None:
                particular = -factors.scaling * slack
            else:
                particular = target_products / factors.denominator
            row_rhs = -row_residual - tf.reduce_sum(particular, axis=-1)
            col_rhs = -col_residual - tf.reduce_sum(particular, axis=-2)
        d_row, d_col = self.potential_step(factors, row_rhs, col_rhs)
        d_potentials = _pairwise_sum(d_row, d_col)
        d_flow = factors.scaling * d_potentials + particular
        if self.l2_cells is None:
            d_slack = self.negative_mask * d_potentials
        else:
            d_slack = self.cell_mask * (self.l2_cells * d_flow - d_potentials)
        return d_flow, d_slack, d_row, d_col


_Iterate = collections.namedtuple(
    "_Iterate", ["flow", "row_potential", "col_potential", "error"]
)


def _step_length(values, direction, fraction):
    """[B] min(1, fraction * largest alpha keeping values + alpha * direction >= 0).

    `values` must be positive wherever `direction` is non-zero.
    """
    largest_decrease = -tf.reduce_min(direction / values, axis=[-2, -1])
    # Non-positive: no component decreases, the full step is free.
    return tf.minimum(fraction / tf.maximum(largest_decrease, fraction), 1.0)


def _interior_point(problem, *, common_step, tolerance, max_iterations):
    """Mehrotra predictor-corrector on a `_TransportProblem`.

    Args:
      problem: the `_TransportProblem`.
      common_step: one step length for primal and dual (needed for l2 > 0,
        where the slack depends on the flow).
      tolerance: stop once the duality gap and the marginal residuals are
        below it.
      max_iterations: iteration cap.

    Returns:
      flow [B, n, m], u [B, n], v [B, m], converged [B] bool, iterations
      (int32 scalar).
    """

    def residuals(flow, slack):
        row = tf.reduce_sum(flow, axis=-1) - problem.source
        col = tf.reduce_sum(flow, axis=-2) - problem.target
        products = flow * slack
        gap = tf.reduce_sum(products, axis=[-2, -1])
        error = tf.maximum(
            gap,
            tf.maximum(tf.reduce_max(tf.abs(row), axis=-1), tf.reduce_max(tf.abs(col), axis=-1)),
        )
        return row, col, products, gap, error

    def step_lengths(flow_or_one, slack, d_flow, d_slack, fraction):
        primal = _step_length(flow_or_one, d_flow, fraction)
        dual = _step_length(slack, d_slack, fraction)
        if common_step:
            primal = dual = tf.minimum(primal, dual)
        return primal, dual

    def body(iteration, flow, row_potential, col_potential, slack, residual, best,
             stalled_steps, stopped):
        row_res, col_res, products, gap, _ = residual
        mean_product = gap / problem.num_cells
        factors = problem.factorize(flow, slack)
        flow_or_one = flow + problem.inactive_cells  # positive denominators for ratios

        # Predictor: the pure Newton (affine-scaling) direction.
        dx, ds, _, _ = problem.newton_direction(
            factors, row_res, col_res, flow=flow, slack=slack
        )
        alpha_p, alpha_d = step_lengths(flow_or_one, slack, dx, ds, 1.0)
        dx_ds = dx * ds
        predicted = mean_product + (
            alpha_d * tf.reduce_sum(flow * ds, axis=[-2, -1])
            + alpha_p * tf.reduce_sum(dx * slack, axis=[-2, -1])
            + alpha_p * alpha_d * tf.reduce_sum(dx_ds, axis=[-2, -1])
        ) / problem.num_cells
        centering = tf.clip_by_value(
            tf.math.divide_no_nan(predicted, mean_product) ** 3, 0.0, 1.0
        )

        # Corrector: re-centre and account for the second-order term.
        target_products = problem.cell_mask * (
            (centering * mean_product)[:, None, None] - dx_ds
        ) - products
        dx, ds, du, dv = problem.newton_direction(factors, row_res, col_res, target_products)
        alpha_p, alpha_d = step_lengths(flow_or_one, slack, dx, ds, _STEP_TO_BOUNDARY)
        flow = flow + alpha_p[:, None, None] * dx
        row_potential = row_potential + alpha_d[:, None] * du
        col_potential = col_potential + alpha_d[:, None] * dv
        slack = slack + alpha_d[:, None, None] * ds  # stays > 0: step to boundary < 1
        residual = residuals(flow, slack)

        # Close to the solution the Newton systems become ill-conditioned:
        # steps may stop improving (or the factorisation may fail with NaN).
        # As qpth does, the best iterate is kept, and a problem stops after
        # _STALL_LIMIT steps without improvement or a non-finite one.
        error = residual[-1]
        improved = error < best.error  # False for NaN
        best = tf.nest.map_structure(
            lambda new, old: tf.where(
                tf.reshape(improved, [-1] + [1] * (new.shape.rank - 1)), new, old
            ),
            _Iterate(flow, row_potential, col_potential, error),
            best,
        )
        stalled_steps = tf.where(improved, 0, stalled_steps + 1)
        stopped = (
            stopped
            | (best.error <= tolerance)
            | (stalled_steps >= _STALL_LIMIT)
            | ~tf.math.is_finite(error)
        )
        return iteration + 1, flow, row_potential, col_potential, slack, residual, best, \
            stalled_steps, stopped

    def cond(iteration, flow, row_potential, col_potential, slack, residual, best,
             stalled_steps, stopped):
        return ~tf.reduce_all(stopped)

    flow, row_potential, col_potential = problem.initial_point()
    slack = problem.slack(flow, row_potential, col_potential)
    residual = residuals(flow, slack)
    best = _Iterate(flow, row_potential, col_potential, residual[-1])
    loop_vars = (
        tf.constant(0), flow, row_potential, col_potential, slack, residual, best,
        tf.zeros_like(residual[-1], dtype=tf.int32), residual[-1] <= tolerance,
    )
    iterations, *_, best, _, _ = tf.while_loop(
        cond, body, loop_vars, maximum_iterations=max_iterations
    )
    return best.flow, best.row_potential, best.col_potential, best.error <= tolerance, iterations


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
        tf.maximum(flow, _GRADIENT_FLOOR * problem.cell_mask),
        tf.maximum(slack, _GRADIENT_FLOOR),
    )
    scaled_grad = factors.scaling * grad_flow
    grad_source, grad_target = problem.potential_step(
        factors, tf.reduce_sum(scaled_grad, axis=-1), tf.reduce_sum(scaled_grad, axis=-2)
    )
    grad_cost = factors.scaling * (_pairwise_sum(grad_source, grad_target) - grad_flow)
    grad_l2 = None if problem.l2_cells is None else grad_cost * flow
    return grad_cost, grad_source, grad_target, grad_l2


def _solve_balanced(cost, source, target, l2_cells, *, tolerance, max_iterations):
    """Solves the normalised problem; the flow carries the KKT gradient.

    Shapes as in `_TransportProblem` (`l2_cells` None for the LP). Returns
    (flow, u, v, converged, iterations); only `flow` is differentiable.
    """
    problem = _TransportProblem(
        tf.stop_gradient(cost),
        tf.stop_gradient(source),
        tf.stop_gradient(target),
        None if l2_cells is None else tf.stop_gradient(l2_cells),
    )
    flow, row_potential, col_potential, converged, iterations = _interior_point(
        problem,
        common_step=l2_cells is not None,
        tolerance=tolerance,
        max_iterations=max_iterations,
    )
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

        flow, source_potentials, target_potentials, converged, iterations = _solve_flat(
            *problem,
            # A statically zero L2 weight selects the cheaper LP iteration.
            None if static_l2 is not None and static_l2 == 0 else l2_strength,
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

    def solve(with_dummies):
        """Solves with or without the dummy row and column (all balanced)."""
        padding = [[0, 0], [0, 1], [0, 1]] if with_dummies else [[0, 0], [0, 0], [0, 0]]
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
            normalise_masses(source, dummy_row_mass if with_dummies else None),
            normalise_masses(target, dummy_col_mass if with_dummies else None),
            l2_cells,
            tolerance=tolerance,
            max_iterations=max_iterations,
        )
        if not with_dummies:
            return flow, row_potential, col_potential, zero, zero, converged, iterations
        return (flow[:, :-1, :-1], row_potential[:, :-1], col_potential[:, :-1],
                row_potential[:, -1], col_potential[:, -1], converged, iterations)

    # DeepEMD's problems are balanced: skip the dummies (~8 % of the work at
    # 25 x 25) when the whole batch is.
    flow, row_potential, col_potential, dummy_row_potential, dummy_col_potential, \
        converged, iterations = tf.cond(
            tf.reduce_all(balanced), lambda: solve(False), lambda: solve(True)
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


def emd(
    cost,
    source_weights,
    target_weights,
    *,
    l2_strength=0.0,
    tolerance=None,
    max_iterations=100,
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
        validate_args=validate_args,
        name=name or "emd",
    ).flow
