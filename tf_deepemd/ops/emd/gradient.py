"""The backward pass: implicit differentiation of the KKT conditions.

The iterations are not unrolled: the gradient is one more solve of the
structured Newton system at the returned iterate (as OptNet/qpth do).
"""

import tensorflow as tf

from tf_deepemd.ops.emd import newton

# Floor on flows and slacks of the normalised problem in the backward pass.
_GRADIENT_FLOOR = 1e-9
# Stand-in for the zero flow off the support of a QP solution (dummy cells
# included): small enough to leave the derivative exact to ~1e-7 next to the
# cells where D = 1 / l2, large enough to keep the system well conditioned
# where the support is disconnected.
_QP_OFF_SUPPORT_FLOW = 1e-11


def kkt_vjp(problem, flow, slack, grad_flow):
    """Vector-Jacobian product of (cost, source, target, l2_cells) -> flow.

    Differentiating the KKT conditions at (flow, slack), with the
    complementarity products held fixed, gives
        dx = D (du + dv - d_cost - flow * d_l2),
        H [du; dv] = [d_source + (D d_cost) 1; d_target + (D d_cost)^T 1]
    with D and H as in the Newton step. With g = grad_flow and
    [p; q] = H^-1 [(D g) 1; (D g)^T 1], the adjoints are p (source),
    q (target), D * (p + q - g) (cost) and flow * that (L2 weights, None for
    the linear program).
    """
    # D = x / (l2 x + s) at the exact solution is 1 / l2 on its support
    # (x > 0) and 0 off it (s > 0). The iterate tells the two apart (l2 x > s)
    # long before its own D is accurate: on cells of small flow that is off
    # by ~s / (l2 x), which the stopping tolerance does not bound (1e-3
    # relative gradient errors at the default tolerance). So D is set from
    # the support where l2 > 0.
    # Where l2 = 0 (the linear program, and the dummies of an unbalanced QP)
    # D is infinite on the support: as qpth does, flows and slacks are
    # floored instead. This is the derivative at a point of the central path
    # with complementarity products around 1e-9 (of the unit total mass and
    # cost range), within ~1e-7 of the LP sensitivities at non-degenerate
    # vertices.
    # Off the support, the flow counts as the floor: D = floor / s keeps the
    # system solvable where the support is degenerate (too few cells to
    # connect all rows and columns, e.g. a permutation), where the result is
    # a smooth, bounded stand-in for a derivative that does not exist.
    # Forbidden cells (infinite slack) get D = 0.
    safe_slack = tf.maximum(slack, _GRADIENT_FLOOR)
    if newton.is_linear(problem):
        scaling = tf.where(flow > slack, tf.maximum(flow, _GRADIENT_FLOOR) / safe_slack,
                           _GRADIENT_FLOOR / safe_slack)
    else:
        # The dummies' cells on the support are exact constraints of the QP
        # (infinite D): the largest D the LP branch uses stands in, whatever
        # the iterate's slack there. Off the support every cell, dummies
        # included, gets the QP's small stand-in: the LP's floor there would
        # let a saturated node's mass leak into its dummy (~1e-6 absolute
        # cost-gradient errors at l2 0.05, where the true derivative is 0).
        quadratic = problem.l2_cells > 0.0
        on_support = tf.where(quadratic, tf.math.divide_no_nan(1.0, problem.l2_cells),
                              1.0 / _GRADIENT_FLOOR)
        off_support = _QP_OFF_SUPPORT_FLOW / safe_slack
        weight = tf.where(quadratic, problem.l2_cells, 1.0)
        scaling = tf.where(weight * flow > slack, on_support, off_support)
    factors = newton.NewtonFactors(None, scaling, *newton.schur_factors(problem, scaling))
    scaled_grad = factors.scaling * grad_flow
    grad_source, grad_target = newton.potential_step(
        factors, tf.reduce_sum(scaled_grad, axis=-1), tf.reduce_sum(scaled_grad, axis=-2)
    )
    grad_cost = factors.scaling * (newton.pairwise_sum(grad_source, grad_target) - grad_flow)
    grad_l2 = None if newton.is_linear(problem) else grad_cost * flow
    return grad_cost, grad_source, grad_target, grad_l2


def attach_kkt_gradient(flow, slack, problem, cost, source, target, l2_cells):
    """`flow` (the solution of `problem`) as a differentiable function of the
    tensors `problem` was built from: cost [B, n, m], source [B, n],
    target [B, m] and l2_cells [B, n, m] (or `newton.LINEAR`)."""
    inputs = (cost, source, target) + (() if newton.is_linear(problem) else (l2_cells,))

    def grad(grad_flow):
        return kkt_vjp(problem, flow, slack, grad_flow)[:len(inputs)]

    @tf.custom_gradient
    def solution(*unused_inputs):
        return tf.identity(flow), grad

    return solution(*inputs)
