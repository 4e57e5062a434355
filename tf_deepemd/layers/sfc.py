"""`SFC`: the structured fully-connected layer of k-shot DeepEMD (METHOD 5)."""

import functools

import keras
import tensorflow as tf

from tf_deepemd.ops import matching
from tf_deepemd.ops.prototypes import check_support_labels
from tf_deepemd.ops.sfc import fit_sfc


def check_support(support_nodes, support_labels):
    """Static checks of a labelled support set; returns the tensors.

    Raises ValueError naming the argument: wrong rank or dtype, an empty
    support set, or label and image counts that differ.
    """
    support_nodes = tf.convert_to_tensor(support_nodes)
    support_labels = tf.convert_to_tensor(support_labels)
    if support_nodes.shape.rank is not None and support_nodes.shape.rank != 3:
        raise ValueError(
            f"`support_nodes` must have rank 3 ([images, nodes, channels]), got shape "
            f"{support_nodes.shape}."
        )
    if not support_nodes.dtype.is_floating:
        raise ValueError(
            f"`support_nodes` must be a float tensor, got {support_nodes.dtype.name}."
        )
    if support_labels.shape.rank is not None and support_labels.shape.rank != 1:
        raise ValueError(
            f"`support_labels` must have rank 1 ([S]), got shape {support_labels.shape}."
        )
    if not support_labels.dtype.is_integer:
        raise ValueError(
            f"`support_labels` must be an integer tensor, got {support_labels.dtype.name}."
        )
    num_images, num_labels = support_nodes.shape[0], support_labels.shape[0]
    if num_images == 0 or num_labels == 0:
        raise ValueError("Empty support set: `support_nodes`/`support_labels` have 0 images.")
    if num_images is not None and num_labels is not None and num_images != num_labels:
        raise ValueError(
            f"`support_labels` has {num_labels} entries but `support_nodes` has "
            f"{num_images} images."
        )
    return support_nodes, support_labels


def resolve_way(support_labels, way):
    """``way`` as given, or ``max(support_labels) + 1``; checks a non-empty set at run time."""
    if way is not None:
        return way
    nonempty = tf.debugging.assert_positive(
        tf.size(support_labels), message="Empty support set: `support_labels` is empty."
    )
    with tf.control_dependencies([nonempty]):
        return tf.reduce_max(support_labels) + 1


@functools.lru_cache(maxsize=32)
def _compiled_fit(sfc_options, matching_options):
    """One `tf.function` per configuration, for eager callers.

    In eager mode a `tf.while_loop` runs its body op by op from Python
    (hundreds of solver calls); compiling once per configuration keeps SFC
    in-graph whatever the caller does. Keyed on hashable option tuples, so
    equal configurations share the traced graph.
    """
    return tf.function(
        functools.partial(_fit, sfc_options=sfc_options, matching_options=matching_options),
        reduce_retracing=True,
    )


def _fit(support_nodes, support_labels, way, seed, *, sfc_options, matching_options):
    options = dict(matching_options)

    def logits_fn(query_nodes, prototypes):
        return matching.deepemd_match(query_nodes, prototypes, **options).logits

    return fit_sfc(support_nodes, support_labels, way, logits_fn, seed=seed, **dict(sfc_options))


@keras.saving.register_keras_serializable(package="tf_deepemd")
class SFC(keras.layers.Layer):
    """Fits one prototype node set per class to a k-shot support set.

    ``call(support_nodes [S, M, C], support_labels [S], way=None, seed=None)
    -> prototypes [way, M, C]``: per-class means of the raw support nodes,
    fine-tuned for ``steps`` epochs of SGD (batches of ``batch_size``
    support images in a fresh random order each epoch, PyTorch momentum
    0.9 with dampening 0.9) on the cross-entropy of the DeepEMD logits of
    the support images against the prototypes; then classify queries with
    a `DeepEMDHead` against the result. The loop is one `tf.while_loop`
    (compiled even when called eagerly), any way and shot. Support
    features and the result carry no gradient (official behaviour). The
    layer has no weights: the prototypes are fitted per episode.

    ``way``: Python int (by keyword), int scalar tensor, or None for
    ``max(support_labels) + 1``. ``seed``: optional int scalar tensor mixed
    with the layer's ``seed`` to vary the batch order per episode. Labels
    are checked at run time (each in ``[0, way)``, every class present).

    Args:
      steps: epochs over the support set (official ``-sfc_update_step`` 100).
      learning_rate: SGD learning rate (100 in the official eval.py, 0.1 in
        train_meta.py; depends on the feature scale: tune it).
      batch_size: support images per update (``-sfc_bs`` 4).
      momentum, dampening: PyTorch SGD semantics (0.9, 0.9).
      seed: int seed of the batch order.
      node_weights, temperature, l2_strength, tolerance, max_iterations: the
        DeepEMD logits used for fitting (see `DeepEMDHead`).
      gradient_mode: ``'stop_flow'`` (default; the official eval path uses
        OpenCV flows, constant) or ``'kkt'`` (through the solver).
    """

    def __init__(
        self,
        steps=100,
        learning_rate=100.0,
        batch_size=4,
        momentum=0.9,
        dampening=0.9,
        seed=0,
        node_weights="cross_reference",
        temperature=matching.DEFAULT_TEMPERATURE,
        gradient_mode="stop_flow",
        l2_strength=0.0,
        tolerance=None,
        max_iterations=100,
        **kwargs,
    ):
        super().__init__(**kwargs)
        matching.check_matching_options(
            node_weights, temperature, gradient_mode, l2_strength, tolerance, max_iterations
        )
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
        self.node_weights = node_weights
        self.temperature = float(temperature)
        self.gradient_mode = gradient_mode
        self.l2_strength = float(l2_strength)
        self.tolerance = None if tolerance is None else float(tolerance)
        self.max_iterations = int(max_iterations)
        # The loop calls the solver (XLA is slow for it on CPU, STACK.md).
        self.supports_jit = False

    def _options(self):
        sfc_options = (
            ("steps", self.steps),
            ("learning_rate", self.learning_rate),
            ("batch_size", self.batch_size),
            ("momentum", self.momentum),
            ("dampening", self.dampening),
        )
        matching_options = (
            ("node_weights", self.node_weights),
            ("temperature", self.temperature),
            ("gradient_mode", self.gradient_mode),
            ("l2_strength", self.l2_strength),
            ("tolerance", self.tolerance),
            ("max_iterations", self.max_iterations),
        )
        return sfc_options, matching_options

    def call(self, support_nodes, support_labels, way=None, seed=None):
        support_nodes, support_labels = check_support(support_nodes, support_labels)
        way = resolve_way(support_labels, way)
        support_labels = check_support_labels(support_labels, way)
        call_seed = tf.cast(0 if seed is None else seed, tf.int64)
        seed_pair = tf.stack([tf.constant(self.seed, tf.int64), call_seed])
        sfc_options, matching_options = self._options()
        if tf.inside_function():
            return _fit(
                support_nodes,
                support_labels,
                way,
                seed_pair,
                sfc_options=sfc_options,
                matching_options=matching_options,
            )
        return _compiled_fit(sfc_options, matching_options)(
            support_nodes, support_labels, tf.cast(way, tf.int32), seed_pair
        )

    def compute_output_shape(self, support_nodes_shape, support_labels_shape):
        return (None,) + tuple(support_nodes_shape)[1:]

    def get_config(self):
        config = super().get_config()
        sfc_options, matching_options = self._options()
        config.update(sfc_options)
        config.update(matching_options)
        config.update(seed=self.seed)
        return config
