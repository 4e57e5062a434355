"""Structured fully-connected layer (SFC) fitting for k-shot DeepEMD (docs/method.md, "SFC").

The k support node sets of a class are replaced by ONE learned node set
("virtual image") per class: initialised at the per-class mean of the raw
support nodes, then fitted by SGD on the cross-entropy of the support
images classified against the SFC prototypes. Everything runs in one
`tf.while_loop` (one iteration per SGD update), so it traces once under
`tf.function` and works with a dynamic way and shot. A batch of episodes
(leading dim E) is fitted in the same loop, one solver call per update for
all E episodes, each episode fitted exactly as alone (its own loss term,
the same batch order).

PyTorch-compatible SGD: the official code uses ``torch.optim.SGD(momentum=
0.9, dampening=0.9, weight_decay=0)``, whose first step sets the momentum
buffer to the raw gradient and later steps do ``buf = momentum * buf +
(1 - dampening) * grad``; the update is ``lr * buf``. Keras' SGD has no
dampening, hence the hand-written update.
"""

import tensorflow as tf

from tf_deepemd.ops.prototypes import class_means

__all__ = ["dampened_momentum_step", "epoch_order", "fit_sfc"]


def dampened_momentum_step(params, buffer, grad, step, *, learning_rate, momentum, dampening):
    """One PyTorch SGD step (no weight decay, no Nesterov).

    Args:
      params, buffer, grad: float tensors of one shape.
      step: int scalar, 0 for the first update (buffer := grad).
      learning_rate, momentum, dampening: floats.

    Returns:
      ``(new_params, new_buffer)``.
    """
    # tf.constant, not tf.cast: casting a Python float goes through float32.
    dtype = params.dtype
    later = tf.constant(momentum, dtype) * buffer + tf.constant(1.0 - dampening, dtype) * grad
    buffer = tf.where(tf.equal(step, 0), grad, later)
    return params - tf.constant(learning_rate, dtype) * buffer, buffer


def epoch_order(seed, epoch, num_support):
    """The order in which epoch ``epoch`` visits the support images.

    A stateless random permutation of ``range(num_support)`` from the
    shape-[2] int64 ``seed`` and the epoch number: reproducible, and it
    traces to plain ops (no random state to carry through the loop).
    """
    epoch_seed = tf.random.experimental.stateless_fold_in(
        tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)
    )
    return tf.argsort(tf.random.stateless_uniform([num_support], seed=epoch_seed))


def fit_sfc(
    support_nodes,
    support_labels,
    way,
    logits_fn,
    *,
    steps=100,
    learning_rate=100.0,
    batch_size=4,
    momentum=0.9,
    dampening=0.9,
    seed=(0, 0),
):
    """Fits one node set per class to the support set (official `get_sfc`).

    Each of the ``steps`` epochs visits the support images in a fresh random
    order (stateless, from ``seed`` and the epoch number) in batches of
    ``batch_size`` (the last one smaller); each batch is one SGD update of
    the prototypes on the mean cross-entropy of
    ``logits_fn(batch_nodes, prototypes)``. The support features are
    constants (stop-gradient), and so is the result: as in the official
    code, the encoder gets no gradient through the fitted prototypes.

    Args:
      support_nodes: float ``[S, M, C]`` raw support node features, or
        ``[E, S, M, C]`` for E episodes fitted at once.
      support_labels: int ``[S]`` (``[E, S]``) in ``[0, way)``, every class
        present (checked by the callers).
      way: int or int scalar tensor.
      logits_fn: ``(query_nodes [b, M, C], prototypes [way, M, C]) ->
        logits [b, way]``, differentiable in the prototypes (with the
        leading episode dim on all three for a batch of episodes).
      steps: epochs over the support set (``-sfc_update_step``, 100).
      learning_rate: SGD learning rate (100 in the official eval.py, 0.1 in
        train_meta.py).
      batch_size: support images per update (``-sfc_bs``, 4).
      momentum, dampening: PyTorch SGD momentum and dampening (0.9, 0.9).
      seed: shape-[2] int seed of the batch order (stateless random ops),
        shared by the episodes of a batch.

    Returns:
      ``[way, M, C]`` (``[E, way, M, C]``) fitted prototypes (no gradient).
    """
    support_nodes = tf.stop_gradient(tf.convert_to_tensor(support_nodes))
    support_labels = tf.convert_to_tensor(support_labels)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    steps, batch_size = int(steps), int(batch_size)
    # The support axis: 0 for one episode, 1 for a batch of episodes.
    axis = support_labels.shape.rank - 1
    num_support = tf.shape(support_labels)[axis]
    batches_per_epoch = (num_support + batch_size - 1) // batch_size
    num_updates = steps * batches_per_epoch
    prototypes = class_means(support_nodes, support_labels, way)

    def batch_indices(update):
        epoch, batch = update // batches_per_epoch, update % batches_per_epoch
        order = epoch_order(seed, epoch, num_support)
        start = batch * batch_size
        return order[start : tf.minimum(start + batch_size, num_support)]

    def body(update, params, buffer):
        indices = batch_indices(update)
        nodes = tf.gather(support_nodes, indices, axis=axis)
        labels = tf.gather(support_labels, indices, axis=axis)
        with tf.GradientTape() as tape:
            tape.watch(params)
            logits = logits_fn(nodes, params)
            # Summed over episodes: each episode's prototypes get the
            # gradient of its own mean loss, as when fitted alone.
            loss = tf.reduce_sum(tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits),
                axis=-1,
            ))
        grad = tape.gradient(loss, params)
        params, buffer = dampened_momentum_step(
            params,
            buffer,
            grad,
            update,
            learning_rate=learning_rate,
            momentum=momentum,
            dampening=dampening,
        )
        return update + 1, params, buffer

    _, prototypes, _ = tf.while_loop(
        lambda update, *_: update < num_updates,
        body,
        (tf.constant(0, tf.int32), prototypes, tf.zeros_like(prototypes)),
        # The updates depend on each other: nothing to run in parallel.
        parallel_iterations=1,
    )
    return tf.stop_gradient(prototypes)
