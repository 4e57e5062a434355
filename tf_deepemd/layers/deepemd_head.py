"""`DeepEMDHead`: DeepEMD logits of query node sets against prototype node sets."""

from typing import Optional

import keras

from tf_deepemd.ops import matching


@keras.saving.register_keras_serializable(package="tf_deepemd")
class DeepEMDHead(keras.layers.Layer):
    """DeepEMD logits (docs/method.md): EMD flows between node sets, scored by similarity.

    ``call(query_nodes [Q, N, C], proto_nodes [W, M, C]) -> logits [Q, W]``
    with ``logits[q, w] = (temperature / N) * sum_ab S[q, w] * flow[q, w]``,
    S the cosine similarity of the 'center'-normalised nodes, flow the
    optimal flow for cost ``1 - S`` between the node weights of the two
    sets. All ``Q * W`` transportation problems go to ONE batched solver
    call. E episodes at once: ``([E, Q, N, C], [E, W, M, C]) -> [E, Q, W]``,
    all ``E * Q * W`` problems in one call, each episode's logits those it
    gets alone (a solver problem does not depend on its batch). Inputs are
    RAW features (the cross-reference weights use them un-centred). Logits
    lie in ``[-temperature, temperature]``. The layer has no weights.

    Args:
      node_weights: ``'cross_reference'`` (official: relu of the dot product
        with the other set's mean node, +1e-3, each side rescaled to sum to
        its node count) or ``'uniform'`` (all ones).
      temperature: T > 0 (12.5 officially).
      gradient_mode: ``'kkt'`` (default): gradients through the solver's KKT
        derivative, to the cost and to the node weights (the paper's
        differentiable EMD). ``'stop_flow'``: the flow is a constant, as the
        official OpenCV path (``d logit / d S = (T / N) * flow``; no
        gradient to the weights).
      l2_strength: L2 regularisation of the flow (0 = the LP; the official
        qpth 'L2' training form uses 1e-6).
      implementation: the solver, 'auto' (default), 'kernel' or 'tf_ops'
        (`tf_deepemd.emd`); SFC fitting prototypes for this head uses it too.
      tolerance, max_iterations: settings of the 'tf_ops' solver.

    Example: 3 queries against 2 prototypes of 4 nodes with 8 channels; a
    node set matched against itself scores the temperature.

    >>> import numpy as np
    >>> import tensorflow as tf
    >>> import tf_deepemd
    >>> head = tf_deepemd.DeepEMDHead()
    >>> queries = tf.random.stateless_uniform([3, 4, 8], seed=[1, 2])
    >>> prototypes = tf.random.stateless_uniform([2, 4, 8], seed=[3, 4])
    >>> head(queries, prototypes).shape
    TensorShape([3, 2])
    >>> np.diag(head(prototypes, prototypes)).round(3)
    array([12.5, 12.5], dtype=float32)
    """

    def __init__(
        self,
        node_weights: str = "cross_reference",
        temperature: float = matching.DEFAULT_TEMPERATURE,
        gradient_mode: str = "kkt",
        l2_strength: float = 0.0,
        tolerance: Optional[float] = None,
        max_iterations: int = 100,
        implementation: str = "auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        matching.check_matching_options(
            node_weights, temperature, gradient_mode, l2_strength, tolerance, max_iterations,
            implementation,
        )
        self.implementation = implementation
        self.node_weights = node_weights
        self.temperature = float(temperature)
        self.gradient_mode = gradient_mode
        self.l2_strength = float(l2_strength)
        self.tolerance = None if tolerance is None else float(tolerance)
        self.max_iterations = int(max_iterations)
        # XLA cannot compile the kernel and slows the stock solver (docs/performance.md, "XLA").
        self.supports_jit = False

    def matching_options(self):
        """Keyword arguments of `tf_deepemd.ops.matching.deepemd_match`."""
        return dict(
            node_weights=self.node_weights,
            temperature=self.temperature,
            gradient_mode=self.gradient_mode,
            l2_strength=self.l2_strength,
            tolerance=self.tolerance,
            max_iterations=self.max_iterations,
            implementation=self.implementation,
        )

    def match(self, query_nodes, proto_nodes):
        """Logits with everything behind them, e.g. for pictures of the matching.

        Args:
          query_nodes: float ``[Q, N, C]``; proto_nodes: float ``[W, M, C]``
            (or both with the same leading episode dims, which then lead
            every output).

        Returns:
          dict with ``logits [Q, W]``, ``flow [Q, W, N, M]``, ``similarity
          [Q, W, N, M]``, ``source_weights [Q, W, N]`` (query nodes, sum N)
          and ``target_weights [Q, W, M]`` (prototype nodes, sum M).
        """
        # `deepemd_match` checks the node sets (once).
        return matching.deepemd_match(
            query_nodes, proto_nodes, **self.matching_options()
        )._asdict()

    def call(self, query_nodes, proto_nodes):
        return self.match(query_nodes, proto_nodes)["logits"]

    def compute_output_shape(self, query_nodes_shape, proto_nodes_shape):
        return tuple(query_nodes_shape)[:-2] + (proto_nodes_shape[-3],)

    def get_config(self):
        config = super().get_config()
        config.update(self.matching_options())
        return config
