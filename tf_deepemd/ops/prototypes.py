"""Class prototypes from a labelled support set."""

import tensorflow as tf

from tf_deepemd.ops.checks import check_labels


def class_means(support, support_labels, way):
    """Mean of the support items of each class.

    Used for ProtoNet-style prototypes and for k-shot prototypes / SFC
    initialisation (per-class mean of the raw node features).

    Args:
      support: float ``[S, ...]`` (e.g. ``[S, C]`` or ``[S, N, C]``), or
        ``[E, S, ...]`` for a batch of E episodes.
      support_labels: int ``[S]`` (``[E, S]``) with values in ``[0, way)``.
      way: int or scalar int tensor, number of classes.

    Returns:
      ``[way, ...]`` (``[E, way, ...]``). A class with no support item gets
      zeros (callers that need every class present check the labels with
      `tf_deepemd.ops.checks.check_support_labels`).
    """
    support, support_labels = tf.convert_to_tensor(support), tf.convert_to_tensor(support_labels)
    batched = support_labels.shape.rank == 2
    support_labels = check_labels(support_labels, batch_dims=int(batched))
    if not batched:
        return tf.math.unsorted_segment_mean(support, support_labels, way)
    # Episode e's classes become segments e * way + label: one segment mean,
    # the same sums as each episode alone.
    way = tf.cast(way, support_labels.dtype)
    shape = tf.shape(support)
    episodes, num_support = shape[0], shape[1]
    offsets = tf.range(tf.cast(episodes, way.dtype)) * way
    segments = tf.reshape(support_labels + offsets[:, None], [-1])
    flat = tf.reshape(support, tf.concat([[episodes * num_support], shape[2:]], 0))
    means = tf.math.unsorted_segment_mean(flat, segments, tf.cast(episodes, way.dtype) * way)
    means = tf.reshape(means, tf.concat([[episodes, tf.cast(way, tf.int32)], shape[2:]], 0))
    means.set_shape(support.shape[:1].concatenate([None]).concatenate(support.shape[2:]))
    return means
