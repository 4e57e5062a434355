"""Input checks shared by the public entry points (layers, models, tools).

Static checks (ranks, dtypes, known sizes) raise ``ValueError`` naming the
argument at trace time; run-time checks (label values) attach
``tf.debugging`` assertions to the returned tensor and raise
``tf.errors.InvalidArgumentError`` when it runs. Each public boundary checks
its own inputs once: `DeepEMD` the episode, a head its two node sets, a
prototype layer its support set; a composite leaves to its layers the
checks of what it passes them.
"""

import tensorflow as tf

__all__ = [
    "check_choice",
    "check_labelled_set",
    "check_labels",
    "check_node_sets",
    "check_nodes",
    "check_rank",
    "check_same_channels",
    "check_support_labels",
    "check_support_set",
    "class_counts",
    "resolve_way",
]

NODE_LAYOUT = "[images, nodes, channels]"
BATCHED_NODE_LAYOUT = "[episodes, images, nodes, channels], as the other node set"


def check_choice(name, value, choices):
    """ValueError naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}, got {value!r}.")
    return value


def check_rank(tensor, name, rank, layout):
    """ValueError unless ``tensor`` has rank ``rank`` (unknown rank passes)."""
    if tensor.shape.rank is not None and tensor.shape.rank != rank:
        raise ValueError(
            f"`{name}` must have rank {rank} ({layout}), got shape {tensor.shape}."
        )


IMAGE_LAYOUT = "[batch, height, width, channels]"


def check_image_shape(shape, name="images"):
    """``tuple(shape)``; ValueError naming ``name`` unless it has rank 4 (``IMAGE_LAYOUT``)."""
    shape = tuple(shape)
    if len(shape) != 4:
        raise ValueError(f"`{name}` must have rank 4 ({IMAGE_LAYOUT}), got shape {shape}.")
    return shape


def check_images(images, name="images"):
    """Static rank check of an image or feature-map batch ``[B, H, W, C]``."""
    check_rank(images, name, 4, IMAGE_LAYOUT)


def check_labels(support_labels, batch_dims=0):
    """ValueError unless ``support_labels`` is an integer tensor of rank ``1 + batch_dims``.

    ``[S]``, or ``[E, S]`` for ``batch_dims=1`` (a batch of episodes); returns it.
    """
    support_labels = tf.convert_to_tensor(support_labels)
    rank = support_labels.shape.rank
    if (rank is not None and rank != 1 + batch_dims) or not support_labels.dtype.is_integer:
        layout = "[S]" if batch_dims == 0 else "[episodes, S]"
        raise ValueError(
            f"`support_labels` must be an integer tensor of rank {1 + batch_dims} ({layout}), "
            f"got {support_labels.dtype.name} of shape {support_labels.shape}."
        )
    return support_labels


def check_labelled_set(items, labels, items_name, rank, layout, batch_dims=0):
    """Static checks of a labelled set (support images or support nodes).

    Args:
      items: ``[S, ...]`` tensor of rank ``rank`` (``[E, S, ...]``, rank
        ``rank + 1``, for ``batch_dims=1``: E episodes); labels: integer
        ``[S]`` (``[E, S]``).
      items_name: the argument name of ``items`` in error messages.
      rank, layout: the rank one set of ``items`` must have and its axes,
        e.g. ``4, '[images, height, width, channels]'``.
      batch_dims: 0 for one set, 1 for a batch of sets.

    Returns:
      ``(items, labels)`` as tensors.

    Raises:
      ValueError: wrong rank or dtype, an empty set, or label and item
        counts that differ (where known statically).
    """
    items = tf.convert_to_tensor(items)
    labels = check_labels(labels, batch_dims)
    check_rank(items, items_name, rank + batch_dims,
               layout if batch_dims == 0 else "[episodes, " + layout[1:])
    shapes = [tensor.shape[: batch_dims + 1] if tensor.shape.rank else None
              for tensor in (items, labels)]
    num_items, num_labels = (None if shape is None else shape[-1] for shape in shapes)
    if num_items == 0 or num_labels == 0:
        raise ValueError(f"Empty support set: `{items_name}` has 0 images.")
    if num_items is not None and num_labels is not None and num_items != num_labels:
        raise ValueError(
            f"`support_labels` has {num_labels} entries but `{items_name}` has "
            f"{num_items} images."
        )
    if batch_dims and None not in shapes and not shapes[0][:-1].is_compatible_with(shapes[1][:-1]):
        raise ValueError(
            f"`support_labels` is for {shapes[1][0]} episodes but `{items_name}` for "
            f"{shapes[0][0]}."
        )
    return items, labels


def check_nodes(nodes, name, min_rank=3):
    """ValueError unless ``nodes`` is a float tensor of rank >= ``min_rank`` ([..., nodes, channels]).

    Returns it as a tensor (unknown rank passes).
    """
    nodes = tf.convert_to_tensor(nodes)
    rank = nodes.shape.rank
    if rank is not None and rank < min_rank:
        raise ValueError(
            f"`{name}` must have rank >= {min_rank} ([..., nodes, channels]), got shape "
            f"{nodes.shape}."
        )
    if not nodes.dtype.is_floating:
        raise ValueError(f"`{name}` must be a float tensor, got {nodes.dtype.name}.")
    return nodes


def check_same_channels(a, b, name_a, name_b):
    """ValueError unless ``a`` and ``b`` have the same (known) last dim and the same dtype."""
    ca, cb = a.shape[-1], b.shape[-1]
    if ca is not None and cb is not None and ca != cb:
        raise ValueError(f"Channel mismatch: `{name_a}` has {ca} channels, `{name_b}` has {cb}.")
    if a.dtype != b.dtype:
        raise ValueError(
            f"dtype mismatch: `{name_a}` is {a.dtype.name}, `{name_b}` is {b.dtype.name}."
        )


def check_node_sets(query_nodes, proto_nodes, query_name="query_nodes", proto_name="proto_nodes"):
    """Static checks of a ``([..., Q, N, C], [..., W, M, C])`` pair of node sets; returns tensors.

    One episode's sets have rank 3; a batch of episodes adds the same
    leading dims to both. Raises ValueError naming the argument: a rank
    below 3 or ranks that differ, a non-float dtype, a statically empty node
    axis, or channels or dtypes that differ.
    """
    query_nodes, proto_nodes = (tf.convert_to_tensor(x) for x in (query_nodes, proto_nodes))
    query_rank = query_nodes.shape.rank
    rank = 3 if query_rank is None or query_rank < 3 else query_rank
    node_sets = []
    for name, nodes in ((query_name, query_nodes), (proto_name, proto_nodes)):
        check_rank(nodes, name, rank, NODE_LAYOUT if rank == 3 else BATCHED_NODE_LAYOUT)
        node_sets.append(check_nodes(nodes, name))
        if nodes.shape.rank is not None and nodes.shape[-2] == 0:
            raise ValueError(f"`{name}` has no nodes (shape {nodes.shape}).")
    check_same_channels(*node_sets, query_name, proto_name)
    return tuple(node_sets)


def class_counts(labels, way):
    """int32 ``[..., way]``: how many labels of ``[..., S]`` fall in each class of ``[0, way)``."""
    if labels.shape.rank == 1:
        way = tf.cast(way, tf.int32)
        return tf.math.bincount(tf.cast(labels, tf.int32), minlength=way, maxlength=way)
    return tf.reduce_sum(tf.one_hot(labels, tf.cast(way, tf.int32), dtype=tf.int32), axis=-2)


def check_support_labels(support_labels, way):
    """Asserts labels lie in ``[0, way)`` and every class has an example.

    Returns the labels with the run-time checks attached (works eagerly and
    inside `tf.function`; raises `tf.errors.InvalidArgumentError`).
    """
    support_labels = tf.convert_to_tensor(support_labels)
    checks = [
        tf.debugging.assert_non_negative(
            support_labels, message="`support_labels` must be >= 0."
        ),
        tf.debugging.assert_less(
            support_labels,
            tf.cast(way, support_labels.dtype),
            message="`support_labels` must be < `way`.",
        ),
    ]
    with tf.control_dependencies(checks):
        checks.append(
            tf.debugging.assert_positive(
                class_counts(support_labels, way),
                message="Every class in [0, `way`) needs a support example.",
            )
        )
    with tf.control_dependencies(checks):
        return tf.identity(support_labels)


def resolve_way(support_labels, way):
    """``way`` as given, or ``max(support_labels) + 1``; asserts a non-empty set at run time."""
    if way is not None:
        return way
    nonempty = tf.debugging.assert_positive(
        tf.size(support_labels), message="Empty support set: `support_labels` is empty."
    )
    with tf.control_dependencies([nonempty]):
        return tf.reduce_max(support_labels) + 1


def check_support_set(support_nodes, support_labels, way=None):
    """All checks of a labelled support node set, for layers that build prototypes.

    Args:
      support_nodes: float ``[S, M, C]``, or ``[E, S, M, C]`` for E episodes.
      support_labels: integer ``[S]`` (``[E, S]``); every episode needs
        every class.
      way: int, int scalar tensor, or None for ``max(support_labels) + 1``
        (over all episodes).

    Returns:
      ``(support_nodes, support_labels, way)``, the labels carrying the
      run-time checks of `check_support_labels`.
    """
    support_labels = tf.convert_to_tensor(support_labels)
    support_nodes, support_labels = check_labelled_set(
        support_nodes, support_labels, "support_nodes", 3, NODE_LAYOUT,
        batch_dims=int(support_labels.shape.rank == 2),
    )
    check_nodes(support_nodes, "support_nodes")
    way = resolve_way(support_labels, way)
    return support_nodes, check_support_labels(support_labels, way), way
