"""Run-time checks of a serving request, with messages a client can act on.

The signatures declare their inputs with unknown rank on purpose: TF
Serving feeds a request's tensors into the graph without checking them
against the SignatureDef's shapes (the placeholders are replaced by the
feeds), so a wrong rank would otherwise surface as an obscure error deep in
the model (or, in Python's session loader, as a client-side ValueError).
Accepting any rank and asserting it here makes every loader answer a bad
request the same way: `tf.errors.InvalidArgumentError` whose message names
the input and the problem. Each function returns its input with the checks
attached as control dependencies and the static shape set, so the rest of
the graph is traced with known ranks.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf


def _checked(tensor, checks, static_shape):
    """``tensor`` after ``checks``, with its static shape set for tracing the model.

    `tensor.set_shape` only informs tracing; the run-time guarantee is the
    assertions, which every consumer depends on. (`tf.ensure_shape` would
    be checked too, but Grappler may run it BEFORE the assertions, and its
    generic "Shape of tensor ... is not compatible" would then be the error
    the client sees.)
    """
    with tf.control_dependencies(checks):
        tensor = tf.identity(tensor)
    tensor.set_shape(static_shape)
    return tensor


def check_rank(tensor: tf.Tensor, name: str, dims: Sequence[str]) -> tf.Tensor:
    """Asserts ``rank == len(dims)``; ``dims`` names the axes for the message (e.g. ``"S"``)."""
    layout = "[" + ", ".join(dims) + "]"
    check = tf.debugging.assert_rank(
        tensor, len(dims), message=f"`{name}` must have rank {len(dims)} ({layout})."
    )
    return _checked(tensor, [check], [None] * len(dims))


def check_images(images: tf.Tensor, name: str, count: str) -> tf.Tensor:
    """Asserts a batch of RGB images ``[count, H, W, 3]`` with ``H, W >= 1``.

    Args:
      images: any-rank tensor from the request.
      name: the input's name, for messages.
      count: the letter of the batch axis in messages (``"S"``, ``"Q"``, ``"N"``).

    Returns:
      ``images`` with static shape ``[None, None, None, 3]``.
    """
    images = check_rank(images, name, [count, "H", "W", "3"])
    shape = tf.shape(images)
    checks = [
        tf.debugging.assert_equal(
            shape[3], 3, message=f"`{name}` must have 3 channels (RGB) in its last axis."
        ),
        tf.debugging.assert_positive(
            shape[1:3], message=f"`{name}`: images must be at least 1x1 pixels; [H, W] ="
        ),
    ]
    return _checked(images, checks, [None, None, None, 3])


def check_episode(support_images, support_labels, query_images):
    """Checks a few-shot episode request; returns the three tensors with static ranks.

    ``way`` is ``max(support_labels) + 1``; the checks, in order: ranks and
    channels of the images; one label per support image; a non-empty
    support set and at least one query; labels in ``[0, S)``; every class
    ``0 .. way - 1`` has at least one support image (otherwise a gap in the
    labels would create a class that nothing can be matched against).

    Args:
      support_images: uint8 ``[S, H, W, 3]``.
      support_labels: int32 ``[S]``.
      query_images: uint8 ``[Q, H', W', 3]``.
    """
    support_images = check_images(support_images, "support_images", "S")
    query_images = check_images(query_images, "query_images", "Q")
    support_labels = check_rank(support_labels, "support_labels", ["S"])
    num_support = tf.shape(support_images)[0]
    checks = [
        tf.debugging.assert_equal(
            tf.shape(support_labels)[0],
            num_support,
            message=(
                "`support_labels` must have one label per support image (its length must equal "
                "the first dimension of `support_images`): labels, images ="
            ),
        ),
        tf.debugging.assert_positive(
            num_support, message="Empty support set: `support_images` has no image."
        ),
        tf.debugging.assert_positive(
            tf.shape(query_images)[0], message="`query_images` has no image."
        ),
    ]
    with tf.control_dependencies(checks):
        checks.append(
            tf.debugging.assert_non_negative(
                support_labels, message="`support_labels` must be >= 0 (classes 0 .. way-1)."
            )
        )
        # A label >= S leaves some class without an image; checking it first
        # also bounds the per-class count below (a label of 10**9 would
        # otherwise allocate gigabytes in the server).
        checks.append(
            tf.debugging.assert_less(
                support_labels,
                num_support,
                message=(
                    "`support_labels` must be < the number of support images (classes 0 .. way-1, "
                    "each with at least one image); labels, number of support images ="
                ),
            )
        )
    with tf.control_dependencies(checks):
        way = tf.reduce_max(support_labels) + 1
        shots = tf.math.bincount(support_labels, minlength=way, maxlength=way)
        checks.append(
            tf.debugging.assert_positive(
                shots,
                message=(
                    "`support_labels`: every class 0 .. way-1 (way = max label + 1) needs at "
                    "least one support image; support images per class ="
                ),
            )
        )
    return (
        _checked(support_images, checks, [None, None, None, 3]),
        _checked(support_labels, checks, [None]),
        _checked(query_images, checks, [None, None, None, 3]),
    )


def check_emd_problem(cost, source_weights, target_weights):
    """Checks ranks and matching sizes of a batch of EMD problems.

    Args:
      cost: float32 ``[B, N, M]``; source_weights: ``[B, N]``;
        target_weights: ``[B, M]``. (Finite, non-negative values are
        checked by the solver itself.)
    """
    cost = check_rank(cost, "cost", ["B", "N", "M"])
    source_weights = check_rank(source_weights, "source_weights", ["B", "N"])
    target_weights = check_rank(target_weights, "target_weights", ["B", "M"])
    cost_shape = tf.shape(cost)
    checks = [
        tf.debugging.assert_equal(
            tf.shape(source_weights),
            cost_shape[:2],
            message="`source_weights` must be [B, N] for a `cost` of [B, N, M]: source_weights, "
            "cost[:2] shapes =",
        ),
        tf.debugging.assert_equal(
            tf.shape(target_weights),
            tf.stack([cost_shape[0], cost_shape[2]]),
            message="`target_weights` must be [B, M] for a `cost` of [B, N, M]: target_weights, "
            "(B, M) =",
        ),
    ]
    return (
        _checked(cost, checks, [None, None, None]),
        _checked(source_weights, checks, [None, None]),
        _checked(target_weights, checks, [None, None]),
    )
