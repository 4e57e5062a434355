"""Class prototypes from a labelled support set."""

import tensorflow as tf

from tf_deepemd.ops.checks import check_labels


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
      need every class present check the labels with
      `tf_deepemd.ops.checks.check_support_labels`).
    """
    support_labels = check_labels(support_labels)
    return tf.math.unsorted_segment_mean(tf.convert_to_tensor(support), support_labels, way)
