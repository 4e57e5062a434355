"""Loss and accuracy of episode models, for ``compile``.

Episode datasets are fed to ``fit`` batched by the number of replicas (see
`strategy`), so each replica sees ``y_true`` of shape ``[1, Q]`` (its one
episode's query labels) and `DeepEMD` returns logits ``[1, Q, way]`` for
that batch of one episode (``[Q, way]`` for an unbatched one). These
functions flatten both to ``[Q]`` / ``[Q, way]`` first, so the same compiled
model trains on one device and on several.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _flatten(y_true, y_pred):
    """Labels ``[Q]`` int32 and logits ``[Q, way]`` from (possibly) batch-of-one shapes."""
    labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
    way = y_pred.shape[-1] if y_pred.shape[-1] is not None else tf.shape(y_pred)[-1]
    return labels, tf.reshape(y_pred, [-1, way])


@keras.saving.register_keras_serializable(package="tf_deepemd")
def episode_cross_entropy(y_true, y_pred):
    """Per-query softmax cross-entropy ``[Q]``.

    Args:
      y_true: int query labels ``[Q]`` or ``[1, Q]``.
      y_pred: float logits ``[Q, way]`` or ``[1, Q, way]``.
    """
    labels, logits = _flatten(y_true, y_pred)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


@keras.saving.register_keras_serializable(package="tf_deepemd")
def episode_accuracy(y_true, y_pred):
    """Per-query 0/1 correctness ``[Q]`` (float32); its mean is the accuracy.

    Args: as `episode_cross_entropy`.
    """
    labels, logits = _flatten(y_true, y_pred)
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.cast(tf.equal(predicted, labels), tf.float32)
