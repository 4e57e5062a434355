"""Node weights (EMD marginals) of DeepEMD (docs/method.md, "Node weights").

For the problem "query q vs prototype w" the source marginal lives on the
query's N nodes and the target marginal on the prototype's M nodes. Both
functions below return them aligned per problem:

  source weights ``[..., Q, W, N]``, target weights ``[..., Q, W, M]``,

so ``(source[..., q, w, :], target[..., q, w, :])`` are the marginals of the
(q, w) problem, matching the ``[..., Q, W, N, M]`` similarity map of
`tf_deepemd.ops.similarity.cosine_similarity_map`.

These are the steps of `tf_deepemd.ops.matching.deepemd_match`, which
checks the node sets once (`tf_deepemd.ops.checks.check_node_sets`); they
take float tensors of the documented shapes and do not check them again.
"""

import tensorflow as tf


def cross_reference_weights(query_nodes, proto_nodes, floor=1e-3):
    """Cross-reference node weights for all (query, prototype) pairs.

    A node matters in proportion to how well it agrees with the OTHER
    image's global (average-pooled) feature:

      source[q, w, a] = relu(u_qa . mean_b v_wb) + floor
      target[q, w, b] = relu(v_wb . mean_a u_qa) + floor

    Dot products, not cosines, on RAW (un-centred) features, as the
    official `get_weight_vector`; the ``floor`` (1e-3 in the official code,
    absent in the paper) keeps every node's mass positive so the
    normalised marginals never divide by zero. Weights are not normalised
    here; apply `normalize_mass`.

    Args:
      query_nodes: float ``[..., Q, N, C]`` raw features.
      proto_nodes: float ``[..., W, M, C]`` raw features.
      floor: added after the ReLU.

    Returns:
      ``(source [..., Q, W, N], target [..., Q, W, M])``.
    """
    query_mean = tf.reduce_mean(query_nodes, axis=-2)  # [..., Q, C]
    proto_mean = tf.reduce_mean(proto_nodes, axis=-2)  # [..., W, C]
    floor = tf.cast(floor, query_nodes.dtype)
    source = tf.nn.relu(tf.einsum("...qnc,...wc->...qwn", query_nodes, proto_mean))
    target = tf.nn.relu(tf.einsum("...wmc,...qc->...qwm", proto_nodes, query_mean))
    return source + floor, target + floor


def uniform_weights(query_nodes, proto_nodes):
    """All-ones node weights (the 'uniform' ablation of cross-reference).

    Same shapes and alignment as `cross_reference_weights`, and already
    normalised (each vector sums to its number of nodes).

    Args:
      query_nodes: float ``[..., Q, N, C]``.
      proto_nodes: float ``[..., W, M, C]``.

    Returns:
      ``(ones [..., Q, W, N], ones [..., Q, W, M])``.
    """
    # Summing zeros of both inputs broadcasts their leading dims exactly as
    # the einsums of `cross_reference_weights` do.
    q = tf.zeros_like(query_nodes[..., :, None, :, 0])  # [..., Q, 1, N]
    p = tf.zeros_like(proto_nodes[..., None, :, :, 0])  # [..., 1, W, M]
    q_lead = tf.zeros_like(p[..., :1])  # [..., 1, W, 1]
    p_lead = tf.zeros_like(q[..., :1])  # [..., Q, 1, 1]
    return q + q_lead + 1.0, p + p_lead + 1.0


def normalize_mass(weights):
    """Rescales each weight vector to sum to its number of nodes.

    ``w <- w * n / sum(w)`` over the last axis (both official solver
    paths). With N == M both marginals then total N and the
    transportation problem is balanced. Weights must have a positive sum
    (guaranteed by the ``floor`` of `cross_reference_weights`).

    Args:
      weights: float ``[..., n]``, non-negative.

    Returns:
      Same shape and dtype, each ``[..., :]`` summing to ``n``.
    """
    weights = tf.convert_to_tensor(weights)
    n = tf.cast(tf.shape(weights)[-1], weights.dtype)
    return weights * n / tf.reduce_sum(weights, axis=-1, keepdims=True)
