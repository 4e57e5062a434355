"""DeepEMD's matching score of query images against prototypes (docs/method.md).

For every (query q, prototype w) pair, with raw node features u (query, N
nodes) and v (prototype, M nodes):

1. marginals: cross-reference weights on the RAW features (+1e-3 floor),
   each side rescaled to sum to its node count (or uniform ones);
2. similarity S = cosine of the 'center'-normalised nodes, [Q, W, N, M];
3. flow = EMD(cost = 1 - S, marginals), all Q*W problems in one batched
   `tf_deepemd.ops.emd.emd` call;
4. logit = (temperature / N) * sum_ab S * flow.

The steps are separate functions so that callers can swap one (e.g. tests
feeding weights of stop-gradient features, benchmarks timing each step);
`deepemd_match` chains them. It is the public boundary: it checks the node
sets once (`check_node_sets`), and the steps take them as checked. Pure
tensor math, no Keras state.
"""

import collections

import tensorflow as tf

from tf_deepemd.ops.checks import check_choice, check_node_sets
from tf_deepemd.ops.cross_reference import (
    cross_reference_weights,
    normalize_mass,
    uniform_weights,
)
from tf_deepemd.ops.emd import check_implementation, emd
from tf_deepemd.ops.similarity import center_nodes, cosine_similarity_map

__all__ = [
    "DEFAULT_TEMPERATURE",
    "DeepEMDMatch",
    "GRADIENT_MODES",
    "NODE_WEIGHTS",
    "check_matching_options",
    "deepemd_match",
    "flow_logits",
    "matching_marginals",
    "matching_similarity",
]

# `-temperature` of the official train_meta.py / eval.py.
DEFAULT_TEMPERATURE = 12.5
NODE_WEIGHTS = ("cross_reference", "uniform")
GRADIENT_MODES = ("kkt", "stop_flow")

DeepEMDMatch = collections.namedtuple(
    "DeepEMDMatch", ["logits", "flow", "similarity", "source_weights", "target_weights"]
)
DeepEMDMatch.__doc__ = """Everything `deepemd_match` computes, for scoring or pictures.

Fields (``...`` = leading dims shared by the inputs):
  logits: ``[..., Q, W]`` (temperature / N) * sum(similarity * flow).
  flow: ``[..., Q, W, N, M]`` optimal flow of each (query, prototype) pair.
  similarity: ``[..., Q, W, N, M]`` cosine of the centred nodes (cost = 1 - S).
  source_weights: ``[..., Q, W, N]`` query-node masses (sum N).
  target_weights: ``[..., Q, W, M]`` prototype-node masses (sum M).
"""


def check_matching_options(node_weights, temperature, gradient_mode, l2_strength,
                           tolerance=None, max_iterations=100, implementation="auto"):
    """Raises ValueError naming a bad option of `deepemd_match`."""
    check_implementation(implementation)
    if tolerance is not None and not float(tolerance) > 0:
        raise ValueError(f"`tolerance` must be > 0, got {tolerance}.")
    if int(max_iterations) < 1:
        raise ValueError(f"`max_iterations` must be >= 1, got {max_iterations}.")
    check_choice("node_weights", node_weights, NODE_WEIGHTS)
    check_choice("gradient_mode", gradient_mode, GRADIENT_MODES)
    if not float(temperature) > 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature}.")
    if not float(l2_strength) >= 0:
        raise ValueError(f"`l2_strength` must be >= 0, got {l2_strength}.")


def matching_marginals(query_nodes, proto_nodes, node_weights="cross_reference"):
    """EMD marginals of every (query, prototype) pair (docs/method.md, "Node weights").

    Args:
      query_nodes: float ``[..., Q, N, C]`` raw (un-centred) features.
      proto_nodes: float ``[..., W, M, C]`` raw features.
      node_weights: ``'cross_reference'`` (official) or ``'uniform'``.

    Returns:
      ``(source [..., Q, W, N] summing to N, target [..., Q, W, M] summing
      to M)``.
    """
    if check_choice("node_weights", node_weights, NODE_WEIGHTS) == "uniform":
        return uniform_weights(query_nodes, proto_nodes)
    source, target = cross_reference_weights(query_nodes, proto_nodes)
    return normalize_mass(source), normalize_mass(target)


def matching_similarity(query_nodes, proto_nodes):
    """Cosine similarity of the 'center'-normalised nodes (docs/method.md).

    Args:
      query_nodes: float ``[..., Q, N, C]``.
      proto_nodes: float ``[..., W, M, C]``.

    Returns:
      ``[..., Q, W, N, M]`` in [-1, 1].
    """
    return cosine_similarity_map(center_nodes(query_nodes), center_nodes(proto_nodes))


def flow_logits(
    similarity,
    source_weights,
    target_weights,
    *,
    temperature=DEFAULT_TEMPERATURE,
    gradient_mode="kkt",
    l2_strength=0.0,
    implementation="auto",
    tolerance=None,
    max_iterations=100,
    validate_args=True,
):
    """Solves the EMD problems of a similarity map and scores them.

    Args:
      similarity: float ``[..., N, M]``; the cost is ``1 - similarity``.
      source_weights: ``[..., N]``, target_weights: ``[..., M]`` marginals.
      temperature: T of ``logit = (T / N) * sum(similarity * flow)``.
      gradient_mode: ``'kkt'``: gradients reach the similarity both directly
        and through the solver's KKT gradient, and the weights through the
        solver. ``'stop_flow'``: the flow is a constant, as the official
        OpenCV path, so ``d logit / d similarity = (T / N) * flow`` and the
        weights get no gradient.
      l2_strength, implementation, tolerance, max_iterations, validate_args: passed to
        `tf_deepemd.ops.emd.emd` (``validate_args=False`` for callers that
        checked the inputs once outside a loop, e.g. SFC's fit).

    Returns:
      ``(logits [...], flow [..., N, M])``.
    """
    check_choice("gradient_mode", gradient_mode, GRADIENT_MODES)
    similarity = tf.convert_to_tensor(similarity)
    cost = 1.0 - similarity
    if gradient_mode == "stop_flow":
        # Stopping the inputs (not only the output) keeps the solver and its
        # custom gradient off the tape altogether.
        cost = tf.stop_gradient(cost)
        source_weights = tf.stop_gradient(source_weights)
        target_weights = tf.stop_gradient(target_weights)
    flow = emd(
        cost,
        source_weights,
        target_weights,
        l2_strength=l2_strength,
        implementation=implementation,
        tolerance=tolerance,
        max_iterations=max_iterations,
        validate_args=validate_args,
    )
    if gradient_mode == "stop_flow":
        flow = tf.stop_gradient(flow)
    # N = number of query nodes (`weight_1.shape[-1]` officially): total flow
    # is N, so the logit is T times the flow-weighted mean similarity.
    num_nodes = tf.cast(tf.shape(similarity)[-2], similarity.dtype)
    # tf.constant, not tf.cast: casting a Python float goes through float32.
    scale = tf.constant(temperature, similarity.dtype) / num_nodes
    logits = scale * tf.reduce_sum(similarity * flow, axis=[-2, -1])
    return logits, flow


def deepemd_match(
    query_nodes,
    proto_nodes,
    *,
    node_weights="cross_reference",
    temperature=DEFAULT_TEMPERATURE,
    gradient_mode="kkt",
    l2_strength=0.0,
    implementation="auto",
    tolerance=None,
    max_iterations=100,
    validate_args=True,
):
    """DeepEMD logits of every query against every prototype, with the flows.

    Args:
      query_nodes: float ``[..., Q, N, C]`` raw node features.
      proto_nodes: float ``[..., W, M, C]`` raw node features, same leading
        dims and channels (checked here, once: ValueError naming the
        argument).
      node_weights, temperature, gradient_mode, l2_strength, implementation,
        tolerance, max_iterations, validate_args: see `matching_marginals` and
        `flow_logits`.

    Returns:
      A `DeepEMDMatch`; ``.logits`` is ``[..., Q, W]``.
    """
    query_nodes, proto_nodes = check_node_sets(query_nodes, proto_nodes)
    source, target = matching_marginals(query_nodes, proto_nodes, node_weights)
    similarity = matching_similarity(query_nodes, proto_nodes)
    logits, flow = flow_logits(
        similarity,
        source,
        target,
        temperature=temperature,
        gradient_mode=gradient_mode,
        l2_strength=l2_strength,
        implementation=implementation,
        tolerance=tolerance,
        max_iterations=max_iterations,
        validate_args=validate_args,
    )
    return DeepEMDMatch(logits, flow, similarity, source, target)
