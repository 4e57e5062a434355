"""Node-level similarity math of DeepEMD (docs/method.md, "Similarity and cost").

Pure tensor functions, no Keras state. Node sets follow one convention:
``[..., nodes, channels]``; the query and prototype sets share the leading
(batch) dims ``...`` and the channel dim ``C``. All functions keep the dtype
of their inputs (float16/32/64). Their callers check the node sets once at
their public boundary (`tf_deepemd.ops.checks.check_node_sets`: a head's
call, `tf_deepemd.ops.matching.deepemd_match`); these functions do not
check them again.
"""

import tensorflow as tf


def center_nodes(nodes):
    """DeepEMD's 'center' normalisation: subtract each node's channel mean.

    The mean is over the LAST axis (the channels of one node), not over
    nodes or images (official `normalize_feature`, `-norm center`). After
    it, the cosine of two nodes is their Pearson correlation.

    Args:
      nodes: float ``[..., C]`` (typically ``[..., N, C]``).

    Returns:
      Same shape and dtype as ``nodes``.
    """
    nodes = tf.convert_to_tensor(nodes)
    return nodes - tf.reduce_mean(nodes, axis=-1, keepdims=True)


def l2_normalize_nodes(nodes, eps=1e-8):
    """Divides each node vector by ``max(||node||, eps)`` (PyTorch semantics).

    PyTorch's `cosine_similarity` clamps each norm separately, so an
    all-zero node gets similarity 0 to everything instead of NaN.

    Args:
      nodes: float ``[..., C]``.
      eps: lower bound on each norm.

    Returns:
      Same shape and dtype as ``nodes``.
    """
    nodes = tf.convert_to_tensor(nodes)
    norm = tf.norm(nodes, axis=-1, keepdims=True)
    return nodes / tf.maximum(norm, tf.cast(eps, nodes.dtype))


def cosine_similarity_map(query_nodes, proto_nodes, eps=1e-8):
    """Cosine similarity of every query node to every prototype node.

    One einsum for all (query, prototype) pairs, so the result feeds the
    batched EMD solve directly (rows = query nodes, columns = prototype
    nodes).

    Args:
      query_nodes: float ``[..., Q, N, C]``.
      proto_nodes: float ``[..., W, M, C]``, same leading dims and ``C``.
      eps: per-vector norm floor, as in PyTorch ``F.cosine_similarity``.

    Returns:
      ``[..., Q, W, N, M]`` with ``S[..., q, w, a, b] = cos(u_qa, v_wb)``.
    """
    q = l2_normalize_nodes(query_nodes, eps)
    p = l2_normalize_nodes(proto_nodes, eps)
    return tf.einsum("...qnc,...wmc->...qwnm", q, p)


def pairwise_squared_distance(x, y):
    """Squared Euclidean distance between every row of ``x`` and of ``y``.

    Computed as ``|x|^2 - 2 x.y + |y|^2`` (one matmul) and clipped at 0,
    since cancellation can make that expansion slightly negative.

    Args:
      x: float ``[..., Q, C]``.
      y: float ``[..., W, C]``, same leading dims and ``C``.

    Returns:
      ``[..., Q, W]``.
    """
    x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    xx = tf.reduce_sum(tf.square(x), axis=-1)[..., :, None]
    yy = tf.reduce_sum(tf.square(y), axis=-1)[..., None, :]
    xy = tf.einsum("...qc,...wc->...qw", x, y)
    return tf.maximum(xx - 2.0 * xy + yy, tf.zeros([], x.dtype))
