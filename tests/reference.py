"""Independent references for the tests: SciPy's HiGHS LP solver and NumPy.

Nothing here imports tf_deepemd: these are the yardsticks the library is
measured against.
"""

import numpy as np
from scipy.optimize import linprog


def highs_emd(cost, source_weights, target_weights):
    """Solves one EMD problem exactly as `cv2.EMD` defines it, with HiGHS.

    min sum(cost * flow) s.t. flow >= 0, row sums <= source_weights,
    column sums <= target_weights, total flow = min of the two totals.

    Args:
      cost: [N, M], source_weights: [N], target_weights: [M] array-likes.

    Returns:
      (objective, flow [N, M]) as float64.
    """
    # HiGHS's dual feasibility tolerance is absolute (1e-7): solve the
    # equivalent problem with unit cost scale, then scale back.
    cost = np.asarray(cost, np.float64)
    source_weights = np.asarray(source_weights, np.float64)
    target_weights = np.asarray(target_weights, np.float64)
    cost_scale = np.abs(cost).max() or 1.0
    cost = cost / cost_scale
    num_rows, num_cols = cost.shape
    row_sums = np.kron(np.eye(num_rows), np.ones((1, num_cols)))
    col_sums = np.kron(np.ones((1, num_rows)), np.eye(num_cols))
    total = min(np.sum(source_weights), np.sum(target_weights))
    result = linprog(
        cost.ravel(),
        A_ub=np.vstack([row_sums, col_sums]),
        b_ub=np.concatenate([source_weights, target_weights]).astype(np.float64),
        A_eq=np.ones((1, num_rows * num_cols)),
        b_eq=[total],
        bounds=(0, None),
        method="highs",
    )
    assert result.status == 0, result.message
    return result.fun * cost_scale, result.x.reshape(num_rows, num_cols)


def highs_emd_batch(cost, source_weights, target_weights):
    """`highs_emd` over a leading batch axis; returns objectives [B]."""
    return np.array(
        [highs_emd(c, a, b)[0] for c, a, b in zip(cost, source_weights, target_weights)]
    )


def deepemd_problems(rng, batch, num_nodes, channels=640):
    """EMD problems as DeepEMD builds them from random ReLU features.

    cost = 1 - cosine similarity of the two node sets; weights = relu(dot with
    the other set's mean node) + 1e-3, normalised to sum to the number of nodes.
    Returns cost [B, N, N], source [B, N], target [B, N] float64.
    """
    query = np.maximum(rng.normal(size=(batch, num_nodes, channels)), 0.0)
    support = np.maximum(rng.normal(size=(batch, num_nodes, channels)), 0.0)

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    cost = 1.0 - np.einsum("bnc,bmc->bnm", unit(query), unit(support))
    source = np.maximum(np.einsum("bnc,bc->bn", query, support.mean(1)), 0.0) + 1e-3
    target = np.maximum(np.einsum("bnc,bc->bn", support, query.mean(1)), 0.0) + 1e-3
    source *= num_nodes / source.sum(-1, keepdims=True)
    target *= num_nodes / target.sum(-1, keepdims=True)
    return cost, source, target
