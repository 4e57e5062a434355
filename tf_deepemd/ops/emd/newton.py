"""The transportation problem in normalised form and the Newton step of its KKT system.

Shapes in this module: B problems of n rows and m columns (dummies
included), everything float64. A cell is *forbidden* where its row or its
column has no mass: its cost is +inf, so its slack is +inf and its flow
stays exactly 0 (every step there is 0 / inf or 0 * finite). This keeps
problems with and without zero masses (or dummies) on one code path, the
difference being data.
"""

import collections

import numpy as np
import tensorflow as tf

# Smallest initial slack, in units of the cost range. Starting closer to the
# dual optimum than the customary 1 takes fewer iterations on DeepEMD-style
# problems.
_INITIAL_SLACK = 0.3

TransportProblem = collections.namedtuple(
    "TransportProblem",
    ["cost", "source", "target", "l2_cells", "inactive_rows", "inactive_cols", "num_cells"],
)
TransportProblem.__doc__ = """B balanced transportation problems in normalised form.

Fields:
  cost: [B, n, m] in [0, 1], +inf on forbidden cells.
  source: [B, n], target: [B, m] masses with equal totals (1).
  l2_cells: [B, n, m] >= 0, the L2 weight of each cell, or `LINEAR` for
    the linear program (saves the L2 terms in every iteration).
  inactive_rows: [B, n], inactive_cols: [B, m]: 1.0 where the mass is 0.
  num_cells: [B] number of allowed cells.
"""

# `l2_cells` of the linear program: an empty structure, which `tf.nest` (and
# so the loop's compaction and `tf.function`) passes over.
LINEAR = ()


def is_linear(problem):
    return isinstance(problem.l2_cells, tuple)


NewtonFactors = collections.namedtuple(
    "NewtonFactors", ["denominator", "scaling", "row_sums", "schur_cholesky"]
)
# A Newton direction. `neg_slack` is minus the slack step; for the linear
# program it is just the potential step `du + dv`.
Direction = collections.namedtuple("Direction", ["flow", "neg_slack", "row", "col"])


def pairwise_sum(row_values, col_values):
    """[B, n], [B, m] -> [B, n, m] with out[b, i, j] = row[b, i] + col[b, j]."""
    return row_values[:, :, None] + col_values[:, None, :]


def reduced_cost(problem, flow):
    """cost + l2 * flow: the gradient of the objective at `flow`."""
    return problem.cost if is_linear(problem) else problem.cost + problem.l2_cells * flow


def slack(problem, flow, row_potential, col_potential):
    """[B, n, m] dual slack `cost + l2 * flow - (u + v)`; +inf on forbidden cells."""
    return reduced_cost(problem, flow) - pairwise_sum(row_potential, col_potential)


def initial_point(problem):
    """The product coupling (primal feasible) and the largest potentials
    leaving every slack >= _INITIAL_SLACK (dual feasible); the potentials of
    rows and columns without mass are 0."""
    flow = problem.source[:, :, None] * problem.target[:, None, :]
    reduced = reduced_cost(problem, flow)

    def finite_or_zero(values):
        return tf.where(tf.math.is_finite(values), values, tf.zeros_like(values))

    col_potential = finite_or_zero(tf.reduce_min(reduced, axis=-2) - _INITIAL_SLACK)
    row_potential = finite_or_zero(
        tf.reduce_min(reduced - col_potential[:, None, :], axis=-1) - _INITIAL_SLACK
    )
    return flow, row_potential, col_potential


def factorize(problem, flow, slack_cells):
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
    right-hand sides are orthogonal to that vector. Rows and columns without
    mass get a unit diagonal (their right-hand sides are 0).
    """
    if is_linear(problem):
        denominator = slack_cells
    else:
        denominator = problem.l2_cells * flow + slack_cells
    scaling = flow / denominator  # zero on forbidden cells (0 / inf)
    return NewtonFactors(denominator, scaling, *schur_factors(problem, scaling))


def schur_factors(problem, scaling):
    """(R, Cholesky factor of the grounded Schur complement) for the scaling D."""
    row_sums = tf.reduce_sum(scaling, axis=-1) + problem.inactive_rows
    negative_weights = tf.matmul(scaling, scaling / -row_sums[:, :, None], transpose_a=True)
    num_cols = tf.shape(negative_weights)[-1]
    zero_diagonal = tf.zeros_like(negative_weights[:, 0, :])
    degree = -tf.reduce_sum(tf.linalg.set_diag(negative_weights, zero_diagonal), axis=-1)
    # Ground an active column; a lone active column has degree 0: any
    # positive value does (its right-hand side is 0).
    active_bonus = (1.0 - problem.inactive_cols) * 1e-300
    ground = tf.one_hot(tf.argmax(degree + active_bonus, axis=-1), num_cols, dtype=degree.dtype)
    largest_degree = tf.reduce_max(degree, axis=-1, keepdims=True)
    ground *= tf.where(largest_degree > 0.0, largest_degree, tf.ones_like(largest_degree))
    schur = tf.linalg.set_diag(negative_weights, degree + ground + problem.inactive_cols)
    return row_sums, tf.linalg.cholesky(schur)


def potential_step(factors, row_rhs, col_rhs):
    """Solves [[diag(R), D], [D^T, diag(C)]] [du; dv] = [row_rhs; col_rhs]."""
    scaling, row_sums = factors.scaling, factors.row_sums
    schur_rhs = col_rhs - tf.linalg.matvec(scaling, row_rhs / row_sums, transpose_a=True)
    d_col = tf.linalg.cholesky_solve(factors.schur_cholesky, schur_rhs[:, :, None])[:, :, 0]
    d_row = (row_rhs - tf.linalg.matvec(scaling, d_col)) / row_sums
    return d_row, d_col


def newton_direction(problem, factors, row_rhs, col_rhs, particular):
    """Newton step of the linearised KKT conditions

        l2 * dx - (du + dv) - ds = 0            (dual feasibility is kept)
        dx.sum(-1) = -row_residual,  dx.sum(-2) = -col_residual
        slack * dx + flow * ds = target

    given `particular = target / (l2 * flow + slack)` and the right-hand
    sides `row_rhs = -row_residual - particular.sum(-1)`, `col_rhs`
    likewise: then `dx = D (du + dv) + particular`.
    """
    d_row, d_col = potential_step(factors, row_rhs, col_rhs)
    d_potentials = pairwise_sum(d_row, d_col)
    d_flow = factors.scaling * d_potentials + particular
    if is_linear(problem):
        neg_slack = d_potentials
    else:
        neg_slack = d_potentials - problem.l2_cells * d_flow
    return Direction(d_flow, neg_slack, d_row, d_col)


def forbidden_cost(cost, source, target):
    """`cost` with +inf on the cells of rows or columns without mass."""
    allowed = (source > 0.0)[:, :, None] & (target > 0.0)[:, None, :]
    return tf.where(allowed, cost, tf.constant(np.inf, cost.dtype))


def transport_problem(cost, source, target, l2_cells=LINEAR):
    """A `TransportProblem` from [B, n, m] costs and [B, n], [B, m] masses."""
    cost = forbidden_cost(cost, source, target)
    return TransportProblem(
        cost, source, target, l2_cells,
        inactive_rows=tf.cast(source <= 0.0, cost.dtype),
        inactive_cols=tf.cast(target <= 0.0, cost.dtype),
        num_cells=tf.maximum(
            tf.reduce_sum(tf.cast(tf.math.is_finite(cost), cost.dtype), axis=[-2, -1]), 1.0
        ),
    )
