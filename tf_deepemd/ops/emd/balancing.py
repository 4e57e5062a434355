"""Problem normalisation and balancing around the interior-point loop.

Every problem is made balanced by one dummy row and one dummy column whose
masses take up the excess of the heavier side, and rescaled so that its
total mass is 1 and its cost spans [0, 1]. Neither change moves the
minimiser: the total flow is fixed, so shifting the cost by a constant only
shifts the objective. When every problem of the batch is balanced with
positive masses (DeepEMD's are), the dummies are left out: the loop then runs
on n x m instead of (n + 1) x (m + 1) cells.
Both forms go through the same traced loop (the choice only picks its input).
"""

import collections

import numpy as np
import tensorflow as tf

from tf_deepemd.ops.emd import gradient, loop, newton

# Smallest factor by which the tolerance of an unbalanced problem is tightened
# (see `solve_flat`): float64 iterations reach about 1e-14.
_MIN_TOLERANCE_FACTOR = 1e-4
# Masses below this fraction of the total are rounding noise and count as 0.
_NEGLIGIBLE_MASS = 1e-14

FlatSolution = collections.namedtuple(
    "FlatSolution", ["flow", "source_potentials", "target_potentials", "converged",
                     "num_iterations"]
)


def default_tolerance(dtype):
    """Stopping tolerance on the normalised problem (unit mass, cost in [0, 1])."""
    return 1e-10 if dtype == tf.float64 else 1e-7


def balance_threshold(dtype):
    """Relative difference of the totals below which they count as equal."""
    return max(1e-12, 8.0 * float(np.finfo(dtype.as_numpy_dtype).eps))


def centre_potentials(row_potential, col_potential, source, target, *, balanced,
                      dummy_row_potential, dummy_col_potential, dummy_cost):
    """Fixes the constant t that the potentials (u + t, v - t) leave free.

    Args:
      row_potential: [B, N], col_potential: [B, M] dual potentials of the
        balanced problem in the input's units (dummies excluded).
      source: [B, N], target: [B, M] masses.
      balanced: [B] bool, the totals count as equal (or there is no mass).
      dummy_row_potential, dummy_col_potential: [B] the dummies' potentials
        in the input's units (ignored where `balanced`).
      dummy_cost: [B] cost of the dummy cells in the input's units.

    Returns:
      (u + t [B, N], v - t [B, M]) with t such that: where balanced,
      `sum(u * source) == sum(v * target)`; otherwise the dummy on the
      heavier side's opposite gets the potential `dummy_cost`, so that
      `transport_cost == sum(u * source) + sum(v * target)`.
    """
    source_total = tf.reduce_sum(source, axis=-1)
    target_total = tf.reduce_sum(target, axis=-1)
    source_value = tf.reduce_sum(row_potential * source, axis=-1)
    target_value = tf.reduce_sum(col_potential * target, axis=-1)
    shift = tf.where(
        balanced,
        tf.math.divide_no_nan(target_value - source_value, source_total + target_total),
        tf.where(
            source_total > target_total,
            dummy_col_potential - dummy_cost,  # dummy column: v_dummy - t = dummy_cost
            dummy_cost - dummy_row_potential,  # dummy row: u_dummy + t = dummy_cost
        ),
    )
    return row_potential + shift[:, None], col_potential - shift[:, None]


def _with_dummies(values, dummy):
    """[B, k] -> [B, k + 1]."""
    return tf.concat([values, dummy[:, None]], axis=-1)


def solve_flat(cost, source, target, l2_strength, *, balance_threshold, tolerance,
               max_iterations, num_shards):
    """[B, N, M], [B, N], [B, M] float64 -> `FlatSolution`.

    `l2_strength` is a float64 scalar tensor, or None for the linear program.
    Only the flow is differentiable (with respect to all inputs).
    """
    # The rescaling by the total and the cost range is the same problem for
    # any constants: they are constants of the gradient, which keeps rounding
    # noise of the solution out of the derivative (e.g. on the cells of rows
    # without mass, whose cost may set the range).
    source_total = tf.reduce_sum(source, axis=-1)
    target_total = tf.reduce_sum(target, axis=-1)
    total = tf.stop_gradient(tf.maximum(source_total, target_total))
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

    cost_min = tf.stop_gradient(tf.reduce_min(cost, axis=[-2, -1]))
    cost_range = tf.stop_gradient(tf.reduce_max(cost, axis=[-2, -1])) - cost_min
    safe_range = tf.where(cost_range > 0.0, cost_range, tf.ones_like(cost_range))
    normalised_cost = (cost - cost_min[:, None, None]) / safe_range[:, None, None]

    def normalise_masses(masses):
        masses = masses / safe_total[:, None]
        return tf.where(masses > _NEGLIGIBLE_MASS, masses, tf.zeros_like(masses))

    unit_source, unit_target = normalise_masses(source), normalise_masses(target)
    if l2_strength is None:
        l2_cells = newton.LINEAR
    else:
        # x = total * x', cost = range * cost' + min: the objective divided
        # by total * range has l2' = l2 * total / range; no L2 on dummies.
        l2_cells = tf.broadcast_to(
            (l2_strength * safe_total / safe_range)[:, None, None], tf.shape(cost)
        )

    def dummy_form():
        # Dummy cells cost the minimum: any constant works, their total flow is fixed.
        padding = [[0, 0], [0, 1], [0, 1]]
        return (tf.pad(normalised_cost, padding),
                _with_dummies(unit_source, dummy_row_mass / safe_total),
                _with_dummies(unit_target, dummy_col_mass / safe_total),
                tf.nest.map_structure(lambda cells: tf.pad(cells, padding), l2_cells))

    needs_dummies = ~(tf.reduce_all(balanced) & tf.reduce_all(unit_source > 0.0)
                      & tf.reduce_all(unit_target > 0.0))
    inputs = tf.cond(
        needs_dummies, dummy_form, lambda: (normalised_cost, unit_source, unit_target, l2_cells)
    )
    problem = newton.transport_problem(*(tf.nest.map_structure(tf.stop_gradient, inputs)))
    best, iterations = loop.solve_sharded(
        problem, tolerance, max_iterations=max_iterations, num_shards=num_shards
    )
    slack = newton.slack(problem, best.flow, best.row_potential, best.col_potential)
    flow = gradient.attach_kkt_gradient(best.flow, slack, problem, *inputs)

    # Back to the input's units (cost = range * cost' + min, the min carried
    # by u). The last row and column are the dummies' when there are dummies
    # (and unused otherwise: then every problem is balanced).
    num_rows, num_cols = tf.shape(cost)[-2], tf.shape(cost)[-1]
    row_potential = tf.stop_gradient(safe_range[:, None] * best.row_potential
                                      + cost_min[:, None])
    col_potential = tf.stop_gradient(safe_range[:, None] * best.col_potential)
    source_potentials, target_potentials = centre_potentials(
        row_potential[:, :num_rows], col_potential[:, :num_cols],
        source, target,
        balanced=balanced | (total <= 0.0),
        dummy_row_potential=row_potential[:, -1],
        dummy_col_potential=col_potential[:, -1],
        dummy_cost=cost_min,
    )
    return FlatSolution(
        flow=flow[:, :num_rows, :num_cols] * safe_total[:, None, None],
        source_potentials=source_potentials,
        target_potentials=target_potentials,
        converged=best.error <= tolerance,
        num_iterations=iterations,
    )
