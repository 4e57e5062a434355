"""Class prototypes from a labelled support set."""

import tensorflow as tf


def class_means(support, support_labels, way):
    """Mean of the support items of each class.

    Used for ProtoNet-style prototypes and for k-shot prototypes / SFC
    initialisation (per-class mean of the raw node features).

    Args:
      support: float ``[S, ...]`` (e.g. ``[S, C]`` or ``[S, N, C]``).
      support_labels: int ``[S]`` with values in ``[0, way)``.
      way: int or scalar int tensor, number of classes.

    Returns:
      ``[way, ...]``. A class with no support item gets zeros (callers that
      need every class present should check, see `check_support_labels`).
    """
    support = tf.convert_to_tensor(support)
    support_labels = tf.convert_to_tensor(support_labels)
    if support_labels.shape.rank is not None and support_labels.shape.rank != 1:
        raise ValueError(
            f"`support_labels` must have rank 1 ([S]), got shape {support_labels.shape}."
        )
    if not support_labels.dtype.is_integer:
        raise ValueError(
            f"`support_labels` must be an integer tensor, got {support_labels.dtype}."
        )
    return tf.math.unsorted_segment_mean(support, support_labels, way)


def check_support_labels(support_labels, way):
    """Asserts labels lie in ``[0, way)`` and every class has an example.

    Returns the labels with the runtime checks attached (works eagerly and
    inside `tf.function`; raises `tf.errors.InvalidArgumentError`).
    """
    support_labels = tf.convert_to_tensor(support_labels)
    way = tf.cast(way, support_labels.dtype)
    checks = [
        tf.debugging.assert_non_negative(
            support_labels, message="`support_labels` must be >= 0."
        ),
        tf.debugging.assert_less(
            support_labels, way, message="`support_labels` must be < `way`."
        ),
    ]
    with tf.control_dependencies(checks):
        counts = tf.math.bincount(
            tf.cast(support_labels, tf.int32),
            minlength=tf.cast(way, tf.int32),
            maxlength=tf.cast(way, tf.int32),
        )
        checks.append(
            tf.debugging.assert_positive(
                counts, message="Every class in [0, `way`) needs a support example."
            )
        )
    with tf.control_dependencies(checks):
        return tf.identity(support_labels)
