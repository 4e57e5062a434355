"""Baseline few-shot heads on node features: ProtoNet and cosine classifiers.

Both pool each image's nodes to one vector (global average pooling),
average the support vectors of each class into a prototype, and score
queries against the prototypes. ``temperature`` MULTIPLIES the score in
both heads, the convention of DeepEMD's ``T = 12.5`` (not a divisor as in
some ProtoNet code).

Call convention (shared with `DeepEMDHead`):
  ``call(query_nodes [Q, N, C], support_nodes [S, M, C],
  support_labels int [S] in [0, way), way) -> logits [Q, way]``.
``way`` may be a Python int (pass it by keyword: Keras only accepts
tensors positionally), a scalar int tensor, or ``None`` for
``max(support_labels) + 1``; any way/shot works. Labels are checked at run
time: each must lie in [0, way) and every class needs a support example
(`tf.errors.InvalidArgumentError` otherwise).
"""

import keras
import tensorflow as tf

from tf_deepemd.ops.prototypes import check_support_labels, class_means
from tf_deepemd.ops.similarity import cosine_similarity_map, pairwise_squared_distance


def _check_episode(query_nodes, support_nodes, support_labels):
    """Static checks shared by the heads; returns the converted tensors."""
    query_nodes = tf.convert_to_tensor(query_nodes)
    support_nodes = tf.convert_to_tensor(support_nodes, dtype=query_nodes.dtype)
    support_labels = tf.convert_to_tensor(support_labels)
    for name, tensor in (("query_nodes", query_nodes), ("support_nodes", support_nodes)):
        if tensor.shape.rank is not None and tensor.shape.rank != 3:
            raise ValueError(
                f"`{name}` must have rank 3 ([images, nodes, channels]), got shape "
                f"{tensor.shape}."
            )
    cq, cs = query_nodes.shape[-1], support_nodes.shape[-1]
    if cq is not None and cs is not None and cq != cs:
        raise ValueError(
            f"Channel mismatch: `query_nodes` has {cq} channels, `support_nodes` has {cs}."
        )
    if support_labels.shape.rank is not None and support_labels.shape.rank != 1:
        raise ValueError(
            f"`support_labels` must have rank 1 ([S]), got shape {support_labels.shape}."
        )
    if not support_labels.dtype.is_integer:
        raise ValueError(
            f"`support_labels` must be an integer tensor, got {support_labels.dtype}."
        )
    num_support = support_nodes.shape[0]
    if num_support == 0:
        raise ValueError("Empty support set: `support_nodes` has 0 images.")
    s_labels = support_labels.shape[0]
    if num_support is not None and s_labels is not None and num_support != s_labels:
        raise ValueError(
            f"`support_labels` has {s_labels} entries but `support_nodes` has "
            f"{num_support} images."
        )
    return query_nodes, support_nodes, support_labels


def _pooled_prototypes(query_nodes, support_nodes, support_labels, way):
    """``([Q, C] pooled queries, [way, C] class-mean prototypes)``."""
    query_nodes, support_nodes, support_labels = _check_episode(
        query_nodes, support_nodes, support_labels
    )
    if way is None:
        way = tf.reduce_max(support_labels) + 1
    support_labels = check_support_labels(support_labels, way)
    query = tf.reduce_mean(query_nodes, axis=1)
    support = tf.reduce_mean(support_nodes, axis=1)
    return query, class_means(support, support_labels, way)


@keras.saving.register_keras_serializable(package="tf_deepemd")
class ProtoNetHead(keras.layers.Layer):
    """Prototypical-network logits: ``-temperature * ||q - p_k||^2``.

    Args:
      temperature: positive multiplier of the negative squared distance
        (1.0 = Snell et al.).
    """

    def __init__(self, temperature=1.0, **kwargs):
        super().__init__(**kwargs)
        if float(temperature) <= 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        self.temperature = float(temperature)

    def call(self, query_nodes, support_nodes, support_labels, way=None):
        query, prototypes = _pooled_prototypes(query_nodes, support_nodes, support_labels, way)
        distance = pairwise_squared_distance(query, prototypes)  # [Q, way]
        return -self.temperature * distance

    def get_config(self):
        config = super().get_config()
        config["temperature"] = self.temperature
        return config


@keras.saving.register_keras_serializable(package="tf_deepemd")
class CosineHead(keras.layers.Layer):
    """Cosine-classifier logits: ``temperature * cos(q, p_k)``.

    Cosines lie in [-1, 1], so the temperature sets how peaked the softmax
    can get; 10 is a common fixed choice. With ``learn_temperature=True``
    it becomes a trainable scalar initialised at ``temperature``.

    Args:
      temperature: positive multiplier (initial value if learned).
      learn_temperature: make the temperature a trainable weight.
    """

    def __init__(self, temperature=10.0, learn_temperature=False, **kwargs):
        super().__init__(**kwargs)
        if float(temperature) <= 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        self.temperature = float(temperature)
        self.learn_temperature = bool(learn_temperature)
        self.temperature_weight = None

    def build(self, query_nodes_shape):
        if self.learn_temperature:
            self.temperature_weight = self.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(self.temperature),
                trainable=True,
                name="temperature",
            )
        self.built = True

    def call(self, query_nodes, support_nodes, support_labels, way=None):
        query, prototypes = _pooled_prototypes(query_nodes, support_nodes, support_labels, way)
        # [Q, 1, C] x [way, 1, C] -> [Q, way, 1, 1]: one node per image.
        cosine = cosine_similarity_map(query[:, None, :], prototypes[:, None, :])[..., 0, 0]
        scale = self.temperature if self.temperature_weight is None else self.temperature_weight
        return tf.cast(scale, cosine.dtype) * cosine

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature, learn_temperature=self.learn_temperature)
        return config
