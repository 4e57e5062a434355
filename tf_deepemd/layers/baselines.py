"""Baseline few-shot heads on node features: ProtoNet and cosine classifiers.

Both pool each node set to one vector (global average pooling) and score
the pooled queries against the pooled prototypes. With class-mean
prototype node sets (`ClassMeanPrototypes`, as `DeepEMD` gives these
heads) the pooled prototype is the mean of the pooled support vectors of
the class: the ProtoNet prototype. ``temperature`` MULTIPLIES the score in
both heads, the convention of DeepEMD's ``T = 12.5`` (not a divisor as in
some ProtoNet code).

Call convention (the head contract, shared with `DeepEMDHead`):
  ``call(query_nodes [Q, N, C], proto_nodes [W, M, C]) -> logits [Q, W]``,
  or with the same leading episode dims on both inputs and the output
  (``[E, Q, N, C], [E, W, M, C] -> [E, Q, W]``: E episodes at once).
"""

import keras
import tensorflow as tf

from tf_deepemd.ops.checks import check_node_sets
from tf_deepemd.ops.similarity import cosine_similarity_map, pairwise_squared_distance


def _check_temperature(temperature):
    if not float(temperature) > 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature}.")
    return float(temperature)


def _pooled(query_nodes, proto_nodes):
    """``([..., Q, C] pooled queries, [..., W, C] pooled prototypes)``."""
    query_nodes, proto_nodes = check_node_sets(query_nodes, proto_nodes)
    return tf.reduce_mean(query_nodes, axis=-2), tf.reduce_mean(proto_nodes, axis=-2)


@keras.saving.register_keras_serializable(package="tf_deepemd")
class ProtoNetHead(keras.layers.Layer):
    """Prototypical-network logits: ``-temperature * ||q - p_w||^2`` of pooled nodes.

    Args:
      temperature: positive multiplier of the negative squared distance
        (1.0 = Snell et al.).
    """

    def __init__(self, temperature=1.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = _check_temperature(temperature)

    def call(self, query_nodes, proto_nodes):
        query, prototypes = _pooled(query_nodes, proto_nodes)
        return -self.temperature * pairwise_squared_distance(query, prototypes)

    def compute_output_shape(self, query_nodes_shape, proto_nodes_shape):
        return tuple(query_nodes_shape)[:-2] + (proto_nodes_shape[-3],)

    def get_config(self):
        config = super().get_config()
        config["temperature"] = self.temperature
        return config


@keras.saving.register_keras_serializable(package="tf_deepemd")
class CosineHead(keras.layers.Layer):
    """Cosine-classifier logits: ``temperature * cos(q, p_w)`` of pooled nodes.

    Cosines lie in [-1, 1], so the temperature sets how peaked the softmax
    can get; 10 is a common fixed choice. With ``learn_temperature=True``
    it becomes a trainable scalar initialised at ``temperature``.

    Args:
      temperature: positive multiplier (initial value if learned).
      learn_temperature: make the temperature a trainable weight.
    """

    def __init__(self, temperature=10.0, learn_temperature=False, **kwargs):
        super().__init__(**kwargs)
        self.temperature = _check_temperature(temperature)
        self.learn_temperature = bool(learn_temperature)
        self.temperature_weight = None

    def build(self, query_nodes_shape, proto_nodes_shape=None):
        if self.learn_temperature:
            self.temperature_weight = self.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(self.temperature),
                trainable=True,
                name="temperature",
            )
        self.built = True

    def call(self, query_nodes, proto_nodes):
        query, prototypes = _pooled(query_nodes, proto_nodes)
        # [..., Q, 1, C] x [..., W, 1, C] -> [..., Q, W, 1, 1]: one node per image.
        cosine = cosine_similarity_map(query[..., None, :], prototypes[..., None, :])[..., 0, 0]
        scale = self.temperature if self.temperature_weight is None else self.temperature_weight
        return tf.cast(scale, cosine.dtype) * cosine

    def compute_output_shape(self, query_nodes_shape, proto_nodes_shape):
        return tuple(query_nodes_shape)[:-2] + (proto_nodes_shape[-3],)

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature, learn_temperature=self.learn_temperature)
        return config
