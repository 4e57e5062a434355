"""`EMDLayer`: the batched EMD solver as a Keras layer."""

from typing import Optional

import keras

from tf_deepemd.ops.emd import check_implementation, emd


@keras.saving.register_keras_serializable(package="tf_deepemd")
class EMDLayer(keras.layers.Layer):
    """Optimal flows of a batch of Earth Mover's Distance problems.

    `call(cost, source_weights, target_weights)` with cost [..., N, M],
    source_weights [..., N] and target_weights [..., M] (batch dimensions
    broadcast) returns the flow [..., N, M] solving

        min sum(cost * flow) + l2_strength / 2 * ||flow||^2
        s.t. flow >= 0, row sums <= source_weights, column sums <= target_weights,
             total flow = min(sum(source_weights), sum(target_weights))

    with `tf_deepemd.emd`, differentiable with respect to all three inputs.
    The layer has no weights.

    Args:
      l2_strength: float >= 0, L2 regularisation of the flow (0: the LP).
      implementation: 'auto' (default: the compiled kernel on CPU when it
        is built), 'kernel' or 'tf_ops' (see `tf_deepemd.emd`).
      tolerance: stopping tolerance of the 'tf_ops' solver (None: per-dtype
        default).
      max_iterations: iteration cap of the 'tf_ops' solver.
      num_shards: concurrent solver loops the batch is split into (None:
        `tf_deepemd.ops.default_num_shards()`, one per CPU core, fixed when
        the layer is traced or exported).
      validate_args: check at run time for non-finite costs and negative or
        non-finite weights.

    Example: two problems of 2 x 2 nodes; the flow avoids the costly cells.

    >>> import tensorflow as tf
    >>> import tf_deepemd
    >>> layer = tf_deepemd.EMDLayer()
    >>> cost = tf.constant([[[0.0, 1.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])
    >>> flow = layer(cost, tf.ones([2, 2]), tf.ones([2, 2]))
    >>> flow.numpy().round(3)
    array([[[1., 0.],
            [0., 1.]],
    <BLANKLINE>
           [[0., 1.],
            [1., 0.]]], dtype=float32)

    In a Keras model, as any layer (here the cost is a learned function of
    the inputs and the model outputs the transport cost):

    >>> import keras
    >>> nodes = keras.Input((4, 3))
    >>> cost = keras.layers.Dense(4)(nodes)                     # [batch, 4, 4]
    >>> mass = keras.layers.Lambda(lambda x: tf.ones_like(x[..., 0]))(nodes)
    >>> flow = tf_deepemd.EMDLayer()(cost, mass, mass)
    >>> model = keras.Model(nodes, keras.layers.Lambda(
    ...     lambda t: tf.reduce_sum(t[0] * t[1], axis=[1, 2]))([cost, flow]))
    >>> model(tf.ones([2, 4, 3])).shape
    TensorShape([2])
    """

    def __init__(self, l2_strength: float = 0.0, tolerance: Optional[float] = None,
                 max_iterations: int = 100, num_shards: Optional[int] = None,
                 validate_args: bool = True, implementation: str = "auto", **kwargs):
        super().__init__(**kwargs)
        self.implementation = check_implementation(implementation)
        if l2_strength < 0:
            raise ValueError(f"l2_strength must be >= 0, got {l2_strength}.")
        if tolerance is not None and not tolerance > 0:
            raise ValueError(f"tolerance must be > 0, got {tolerance}.")
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}.")
        self.l2_strength = float(l2_strength)
        self.tolerance = tolerance
        self.max_iterations = int(max_iterations)
        if num_shards is not None and num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}.")
        self.num_shards = None if num_shards is None else int(num_shards)
        self.validate_args = bool(validate_args)
        # XLA cannot compile the kernel and slows the stock solver (docs/performance.md, "XLA").
        self.supports_jit = False

    def call(self, cost, source_weights, target_weights):
        return emd(
            cost,
            source_weights,
            target_weights,
            l2_strength=self.l2_strength,
            implementation=self.implementation,
            tolerance=self.tolerance,
            max_iterations=self.max_iterations,
            num_shards=self.num_shards,
            validate_args=self.validate_args,
        )

    def compute_output_shape(self, cost_shape, source_weights_shape, target_weights_shape):
        return tuple(cost_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            l2_strength=self.l2_strength,
            tolerance=self.tolerance,
            max_iterations=self.max_iterations,
            num_shards=self.num_shards,
            validate_args=self.validate_args,
            implementation=self.implementation,
        )
        return config
