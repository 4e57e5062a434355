"""Loss and accuracy of episode models, for ``compile``.

Episode datasets are fed to ``fit`` batched by the number of replicas (see
`strategy`), so each replica sees ``y_true`` of shape ``[1, Q]`` (its one
episode's query labels) while the model returns logits ``[Q, way]`` for
that episode. These functions flatten the labels to ``[Q]`` first, so the
same compiled model trains on one device and on several.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tf_deepemd")
def episode_cross_entropy(y_true, y_pred):
    """Per-query softmax cross-entropy ``[Q]``.

    Args:
      y_true: int query labels ``[Q]`` or ``[1, Q]``.
      y_pred: float logits ``[Q, way]``.
    """
    labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=y_pred)


@keras.saving.register_keras_serializable(package="tf_deepemd")
def episode_accuracy(y_true, y_pred):
    """Per-query 0/1 correctness ``[Q]`` (float32); its mean is the accuracy.

    Args: as `episode_cross_entropy`.
    """
    labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
    predicted = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
    return tf.cast(tf.equal(predicted, labels), tf.float32)
