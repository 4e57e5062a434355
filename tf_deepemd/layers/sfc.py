"""`SFC`: the structured fully-connected layer of k-shot DeepEMD (docs/method.md, "SFC")."""

import functools

import keras
import tensorflow as tf

from tf_deepemd.ops import matching
from tf_deepemd.ops.checks import check_choice, check_support_set, class_counts
from tf_deepemd.ops.emd.implementation import resolve_implementation
from tf_deepemd.ops.prototypes import class_means
from tf_deepemd.ops.sfc import fit_sfc


@functools.lru_cache(maxsize=32)
def _compiled_fit(sfc_options, matching_options, batched):
    """One `tf.function` per configuration, for eager callers.

    In eager mode a `tf.while_loop` runs its body op by op from Python
    (hundreds of solver calls); compiling once per configuration keeps SFC
    in-graph whatever the caller does. Keyed on hashable option tuples, so
    equal configurations share the traced graph, and on whether the support
    set is a batch of episodes (a function traced for both ranks would
    relax them to unknown).
    """
    return tf.function(
        functools.partial(_fit, sfc_options=sfc_options, matching_options=matching_options),
        reduce_retracing=True,
    )


def _fit(support_nodes, support_labels, way, seed, *, sfc_options, matching_options):
    options = dict(matching_options)

    def logits_fn(query_nodes, prototypes):
        # The support nodes are checked once, in `SFC.call`: run-time asserts
        # on every update would cost time and keep grappler off the loop.
        return matching.deepemd_match(
            query_nodes, prototypes, validate_args=False, **options).logits

    def fit():
        return fit_sfc(
            support_nodes, support_labels, way, logits_fn, seed=seed, **dict(sfc_options)
        )

    # The official code fits SFC for shot > 1 only; one image per class keeps
    # its support nodes (and their gradient). The episodes of a batch share
    # way and support size, so they all take the same branch.
    return tf.cond(
        tf.reduce_max(class_counts(support_labels, way)) > 1,
        fit,
        lambda: class_means(support_nodes, support_labels, way),
    )


@keras.saving.register_keras_serializable(package="tf_deepemd")
class SFC(keras.layers.Layer):
    """Fits one prototype node set per class to a k-shot support set.

    ``call(support_nodes [S, M, C], support_labels [S], way=None, head=...,
    seed=None) -> prototypes [way, M, C]`` (the prototype contract of
    `tf_deepemd.layers.prototypes`): per-class means of the raw support
    nodes, fine-tuned for ``steps`` epochs of SGD (batches of ``batch_size``
    support images in a fresh random order each epoch, PyTorch momentum 0.9
    with dampening 0.9) on the cross-entropy of the DeepEMD logits of the
    support images against the prototypes; then ``head`` classifies queries
    against the result. ``head`` is the `DeepEMDHead` the prototypes are
    for: its matching settings (node weights, temperature, solver options)
    score the fit, with this layer's ``gradient_mode``. The loop is one
    `tf.while_loop` (compiled even when called eagerly), any way and shot.
    Support features and the result carry no gradient (official
    behaviour). A support set with one image per class is returned as its
    class means, differentiable (the official code fits SFC for shot > 1
    only). The layer has no weights: the prototypes are fitted per episode.

    E episodes at once: ``([E, S, M, C], [E, S]) -> [E, way, M, C]``, one
    loop with one solver call per update for all of them; each episode's
    prototypes are those it gets alone (same seed, its own loss term).

    ``seed``: optional int scalar tensor mixed with the layer's ``seed`` to
    vary the batch order per call (shared by the episodes of a batch).

    What ``head`` must provide (any layer, e.g. your own head, not only
    `DeepEMDHead`): a method ``matching_options()`` returning a dict of
    keyword arguments of `tf_deepemd.ops.deepemd_match` (``node_weights``,
    ``temperature``, ``l2_strength``, ``tolerance``, ``max_iterations``;
    ``gradient_mode`` is replaced by this layer's), with hashable values:
    SFC compiles one fit per distinct set of options. SFC never calls the
    head; it fits the prototypes to ``deepemd_match`` logits under those
    options, so a head should score queries the same way for the fit to
    serve it. A head without ``matching_options`` is refused with a
    ValueError naming ``head``. See docs/method.md, "SFC".

    Args:
      steps: epochs over the support set (official ``-sfc_update_step`` 100).
      learning_rate: SGD learning rate (100 in the official eval.py, 0.1 in
        train_meta.py; depends on the feature scale: tune it).
      batch_size: support images per update (``-sfc_bs`` 4).
      momentum, dampening: PyTorch SGD semantics (0.9, 0.9).
      seed: int seed of the batch order.
      gradient_mode: how the fit differentiates the head's logits:
        ``'stop_flow'`` (default; the official eval path uses OpenCV flows,
        constant) or ``'kkt'`` (through the solver).

    Example: a 2-way 2-shot support set of 3 nodes with 8 channels.

    >>> import tensorflow as tf
    >>> import tf_deepemd
    >>> support = tf.random.stateless_uniform([4, 3, 8], seed=[1, 2])
    >>> labels = tf.constant([0, 1, 0, 1])
    >>> sfc = tf_deepemd.SFC(steps=2)
    >>> sfc(support, labels, head=tf_deepemd.DeepEMDHead()).shape
    TensorShape([2, 3, 8])
    """

    def __init__(
        self,
        steps: int = 100,
        learning_rate: float = 100.0,
        batch_size: int = 4,
        momentum: float = 0.9,
        dampening: float = 0.9,
        seed: int = 0,
        gradient_mode: str = "stop_flow",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(steps) < 0:
            raise ValueError(f"`steps` must be >= 0, got {steps}.")
        if int(batch_size) < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        if not float(learning_rate) > 0:
            raise ValueError(f"`learning_rate` must be > 0, got {learning_rate}.")
        if not 0 <= float(momentum) < 1 or not 0 <= float(dampening) <= 1:
            raise ValueError(
                f"`momentum` must be in [0, 1) and `dampening` in [0, 1], got {momentum}, "
                f"{dampening}."
            )
        self.steps = int(steps)
        self.learning_rate = float(learning_rate)
        self.batch_size = int(batch_size)
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.seed = int(seed)
        self.gradient_mode = check_choice("gradient_mode", gradient_mode, matching.GRADIENT_MODES)
        # The loop calls the solver, which XLA cannot compile well (docs/performance.md, "XLA").
        self.supports_jit = False

    def _sfc_options(self):
        return (
            ("steps", self.steps),
            ("learning_rate", self.learning_rate),
            ("batch_size", self.batch_size),
            ("momentum", self.momentum),
            ("dampening", self.dampening),
        )

    def call(self, support_nodes, support_labels, way=None, head=None, seed=None):
        head_options = getattr(head, "matching_options", None)
        if not callable(head_options):
            raise ValueError(
                "`head`: SFC fits prototypes for a DeepEMD matching head (a layer with "
                f"`matching_options()`, e.g. `DeepEMDHead`), got {type(head).__name__}."
            )
        support_nodes, support_labels, way = check_support_set(support_nodes, support_labels, way)
        support_nodes = tf.debugging.assert_all_finite(
            support_nodes, "`support_nodes` must be finite (no NaN or Inf).")
        options = dict(head_options(), gradient_mode=self.gradient_mode)
        # The solver is resolved here, not in the cached fit: a fit traced
        # with the kernel must not serve a call inside `stock_ops_only`.
        options["implementation"] = resolve_implementation(options.get("implementation", "auto"))
        matching_options = tuple(sorted(options.items()))
        call_seed = tf.cast(0 if seed is None else seed, tf.int64)
        seed_pair = tf.stack([tf.constant(self.seed, tf.int64), call_seed])
        fit = functools.partial(
            _fit, sfc_options=self._sfc_options(), matching_options=matching_options
        )
        if not tf.inside_function():
            batched = support_labels.shape.rank == 2
            fit = _compiled_fit(self._sfc_options(), matching_options, batched)
            way = tf.cast(way, tf.int32)
        return fit(support_nodes, support_labels, way, seed_pair)

    def compute_output_shape(self, support_nodes_shape, support_labels_shape):
        return tuple(support_nodes_shape)[:-3] + (None,) + tuple(support_nodes_shape)[-2:]

    def get_config(self):
        config = super().get_config()
        config.update(self._sfc_options())
        config.update(seed=self.seed, gradient_mode=self.gradient_mode)
        return config
