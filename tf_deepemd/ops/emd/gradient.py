"""The backward pass: implicit differentiation of the KKT conditions.

The iterations are not unrolled: the gradient is one more solve of the
structured Newton system at the returned iterate (as OptNet/qpth do).
"""

import tensorflow as tf

from tf_deepemd.ops.emd import newton

# Floor on flows and slacks of the normalised problem in the backward pass.
_GRADIENT_FLOOR = 1e-9


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
    # As qpth does, flows and slacks are floored: at a tightly converged LP
    # iterate D spans ~25 orders of magnitude and the solve loses all accuracy.
    # The floor makes this the derivative at a point of the central path with
    # complementarity products around 1e-9 (of the unit total mass and cost
    # range), within ~1e-7 of the LP sensitivities at non-degenerate vertices.
    # Forbidden cells (infinite slack) keep flow 0 and so D = 0.
    allowed = tf.math.is_finite(slack)
    factors = newton.factorize(
        problem,
        tf.where(allowed, tf.maximum(flow, _GRADIENT_FLOOR), tf.zeros_like(flow)),
        tf.maximum(slack, _GRADIENT_FLOOR),
    )
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
