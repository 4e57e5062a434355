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
        # HiGHS's presolve declares some feasible problems with masses below
        # its absolute feasibility tolerance (1e-7) infeasible.
        options={"presolve": False},
    )
    assert result.status == 0, result.message
    return result.fun * cost_scale, result.x.reshape(num_rows, num_cols)


def highs_emd_batch(cost, source_weights, target_weights):
    """`highs_emd` over a leading batch axis; returns objectives [B]."""
    return np.array(
        [highs_emd(c, a, b)[0] for c, a, b in zip(cost, source_weights, target_weights)]
    )


def deepemd_problems(rng, batch, num_nodes, channels=640, num_target_nodes=None):
    """EMD problems as DeepEMD builds them from random ReLU features.

    cost = 1 - cosine similarity of the two node sets; weights = relu(dot with
    the other set's mean node) + 1e-3, normalised to sum to the number of nodes
    of the source side (both sides: equal totals).
    Returns cost [B, N, M], source [B, N], target [B, M] float64 with
    N = num_nodes and M = num_target_nodes (default N).
    """
    num_target_nodes = num_target_nodes or num_nodes
    query = np.maximum(rng.normal(size=(batch, num_nodes, channels)), 0.0)
    support = np.maximum(rng.normal(size=(batch, num_target_nodes, channels)), 0.0)

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    cost = 1.0 - np.einsum("bnc,bmc->bnm", unit(query), unit(support))
    source = np.maximum(np.einsum("bnc,bc->bn", query, support.mean(1)), 0.0) + 1e-3
    target = np.maximum(np.einsum("bnc,bc->bn", support, query.mean(1)), 0.0) + 1e-3
    source *= num_nodes / source.sum(-1, keepdims=True)
    target *= num_nodes / target.sum(-1, keepdims=True)
    return cost, source, target


def deepemd_logits(query, proto, node_weights="cross_reference", temperature=12.5):
    """DeepEMD logits of docs/method.md in NumPy, one HiGHS LP per (query, prototype) pair.

    Weights: relu(dot of each node with the other set's mean node) + 1e-3 on
    the raw features, rescaled to sum to the node count (or all ones);
    similarity: cosine of the 'center'-normalised nodes (each node minus its
    own channel mean, PyTorch's 1e-8 norm floor); flow: the EMD of cost 1 - S;
    logit = (T / N) * sum(S * flow).

    Args:
      query: [Q, N, C], proto: [W, M, C] array-likes.
      node_weights: 'cross_reference' or 'uniform'.

    Returns:
      dict of float64 arrays: logits [Q, W], flow [Q, W, N, M],
      similarity [Q, W, N, M], source [Q, W, N], target [Q, W, M].
    """
    query = np.asarray(query, np.float64)
    proto = np.asarray(proto, np.float64)
    num_query, n = query.shape[:2]
    way, m = proto.shape[:2]

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)

    centred_q = unit(query - query.mean(-1, keepdims=True))
    centred_p = unit(proto - proto.mean(-1, keepdims=True))
    out = {
        name: np.zeros(shape)
        for name, shape in (
            ("logits", (num_query, way)),
            ("flow", (num_query, way, n, m)),
            ("similarity", (num_query, way, n, m)),
            ("source", (num_query, way, n)),
            ("target", (num_query, way, m)),
        )
    }
    for i in range(num_query):
        for j in range(way):
            if node_weights == "uniform":
                source, target = np.ones(n), np.ones(m)
            else:
                source = np.maximum(query[i] @ proto[j].mean(0), 0.0) + 1e-3
                target = np.maximum(proto[j] @ query[i].mean(0), 0.0) + 1e-3
                source = source * n / source.sum()
                target = target * m / target.sum()
            similarity = centred_q[i] @ centred_p[j].T
            _, flow = highs_emd(1.0 - similarity, source, target)
            out["logits"][i, j] = temperature / n * np.sum(similarity * flow)
            out["flow"][i, j] = flow
            out["similarity"][i, j] = similarity
            out["source"][i, j] = source
            out["target"][i, j] = target
    return out


# A cell is on the support, a marginal saturated, beyond this (flows ~0.1-1).
ACTIVE_THRESHOLD = 1e-7


def active_set_flows(cost, source, target, l2_strength, active):
    """The QP solution min <cost, F> + l2 / 2 ||F||^2 with the cells off the
    support fixed at 0 and the saturated marginals as equalities: one KKT
    solve per problem ([l2 I, A^T; A, 0] [F; y] = [-cost; marginals], least
    squares as one marginal equation is redundant when totals are equal).
    It is the exact solution wherever the active set is the solver's, and
    affine in the inputs, so its finite differences are exact derivatives.

    Returns (flows [B, N, M], margins [B]): each problem's smallest support
    flow, off-support multiplier ``cost + y_row + y_col`` (negative when the
    active set is not optimal) and, with unequal totals, slack or multiplier
    of the larger side's nodes."""
    support, rows, cols = active
    flows, margins = np.zeros_like(cost), np.zeros(len(cost))
    for b in range(len(cost)):
        cells = np.argwhere(support[b])
        saturated_rows, saturated_cols = np.flatnonzero(rows[b]), np.flatnonzero(cols[b])
        constraints = [cells[:, 0] == i for i in saturated_rows]
        constraints += [cells[:, 1] == j for j in saturated_cols]
        a = np.array(constraints, np.float64)
        rhs = np.concatenate([source[b][saturated_rows], target[b][saturated_cols]])
        k = len(cells)
        kkt = np.block([[l2_strength * np.eye(k), a.T], [a, np.zeros((len(a), len(a)))]])
        solution = np.linalg.lstsq(kkt, np.concatenate([-cost[b][support[b]], rhs]), rcond=None)[0]
        flows[b][support[b]] = solution[:k]
        row_duals, col_duals = np.zeros(cost.shape[1]), np.zeros(cost.shape[2])
        row_duals[saturated_rows] = solution[k:k + len(saturated_rows)]
        col_duals[saturated_cols] = solution[k + len(saturated_rows):]
        multipliers = cost[b] + row_duals[:, None] + col_duals[None, :]
        margins[b] = min(solution[:k].min(), multipliers[~support[b]].min(initial=np.inf))
        # The side with more mass keeps some slack: there an unsaturated
        # node's slack and a saturated node's multiplier are margins too.
        surplus = source[b].sum() - target[b].sum()
        if abs(surplus) > ACTIVE_THRESHOLD:
            masses, saturated, duals, axis = (
                (source[b], rows[b], row_duals, -1) if surplus > 0
                else (target[b], cols[b], col_duals, -2)
            )
            slack = masses - flows[b].sum(axis)
            margins[b] = min(margins[b], slack[~saturated].min(initial=np.inf),
                             np.abs(duals[saturated]).min(initial=np.inf))
    return flows, margins
