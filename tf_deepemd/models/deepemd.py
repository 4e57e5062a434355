"""`DeepEMD`: a few-shot episode classifier (region encoder + matching head)."""

import keras
import tensorflow as tf

from tf_deepemd.layers.baselines import CosineHead, ProtoNetHead
from tf_deepemd.layers.deepemd_head import DeepEMDHead, check_node_sets
from tf_deepemd.layers.sfc import SFC, check_support, resolve_way
from tf_deepemd.ops import matching
from tf_deepemd.ops.prototypes import check_support_labels, class_means

HEADS = ("deepemd", "protonet", "cosine")
K_SHOT_MODES = ("sfc", "mean")
_EPISODE_KEYS = ("support_images", "support_labels", "query_images")


def _squeeze_episode_batch(tensor, name, rank):
    """Drops a leading batch dimension of size 1 (``dataset.batch(1)``)."""
    if tensor.shape.rank != rank + 1:
        return tensor
    if tensor.shape[0] is not None and tensor.shape[0] != 1:
        raise ValueError(
            f"`{name}` has a leading batch of {tensor.shape[0]} episodes; DeepEMD takes one "
            "episode per call (leave the episode dataset unbatched, or batch(1))."
        )
    check = tf.debugging.assert_equal(
        tf.shape(tensor)[0], 1, message=f"`{name}`: only one episode per batch is supported."
    )
    with tf.control_dependencies([check]):
        return tf.squeeze(tensor, axis=0)


def unpack_episode(inputs):
    """``((support_images, support_labels, query_images), batched)`` from a model input.

    Accepts a tuple/list of the three tensors or a dict with those keys,
    each optionally with a leading batch dimension of 1 (then ``batched``
    is True and the dimension is removed). Raises ValueError naming the
    argument on wrong structure, ranks, dtypes or counts.
    """
    if isinstance(inputs, dict):
        missing = [key for key in _EPISODE_KEYS if key not in inputs]
        if missing:
            raise ValueError(f"Episode dict is missing {missing}; expected keys {_EPISODE_KEYS}.")
        inputs = tuple(inputs[key] for key in _EPISODE_KEYS)
    if not isinstance(inputs, (tuple, list)) or len(inputs) != 3:
        raise ValueError(
            "DeepEMD input must be an episode (support_images [S, H, W, 3], support_labels "
            f"[S], query_images [Q, H, W, 3]), got {type(inputs).__name__}."
        )
    support_images, support_labels, query_images = (tf.convert_to_tensor(x) for x in inputs)
    for name, tensor in zip(_EPISODE_KEYS, (support_images, support_labels, query_images)):
        if tensor.shape.rank is None:
            raise ValueError(
                f"`{name}` has unknown rank; DeepEMD needs the rank (one episode, or a batch "
                "of one) at trace time. (A tf.function called with both batched and unbatched "
                "episodes relaxes to unknown rank: use one form per function.)"
            )
    batched = query_images.shape.rank == 5
    support_images = _squeeze_episode_batch(support_images, "support_images", 4)
    support_labels = _squeeze_episode_batch(support_labels, "support_labels", 1)
    query_images = _squeeze_episode_batch(query_images, "query_images", 4)
    for name, tensor in (("support_images", support_images), ("query_images", query_images)):
        if tensor.shape.rank != 4:
            raise ValueError(
                f"`{name}` must have rank 4 ([images, height, width, channels]), got shape "
                f"{tensor.shape}."
            )
    if support_labels.shape.rank != 1 or not support_labels.dtype.is_integer:
        raise ValueError(
            "`support_labels` must be an integer tensor of rank 1 ([S]), got "
            f"{support_labels.dtype.name} of shape {support_labels.shape}."
        )
    if support_images.shape[0] == 0:
        raise ValueError("Empty support set: `support_images` has 0 images.")
    num_images, num_labels = support_images.shape[0], support_labels.shape[0]
    if num_images is not None and num_labels is not None and num_images != num_labels:
        raise ValueError(
            f"`support_labels` has {num_labels} entries but `support_images` has "
            f"{num_images} images."
        )
    check = tf.debugging.assert_equal(
        tf.shape(support_labels)[0],
        tf.shape(support_images)[0],
        message="`support_labels` and `support_images` must have one entry per support image.",
    )
    with tf.control_dependencies([check]):
        support_labels = tf.identity(support_labels)
    return (support_images, support_labels, query_images), batched


@keras.saving.register_keras_serializable(package="tf_deepemd")
class DeepEMD(keras.Model):
    """Classifies the queries of one few-shot episode.

    ``call((support_images [S, H, W, 3], support_labels [S] int in [0, way),
    query_images [Q, H, W, 3]), training=False) -> logits [Q, way]``,
    ``way`` fixed by the ``way`` argument or ``max(support_labels) + 1``.
    This is exactly the ``x`` of `tf_deepemd.data.make_episode_dataset`
    (``y`` = query labels ``[Q]``), so ``model.fit(episodes)`` with
    ``SparseCategoricalCrossentropy(from_logits=True)`` trains one episode
    per step: pass the episode dataset UNBATCHED (each element is already
    a whole episode). A batch of ONE episode (``dataset.batch(1)``: images
    ``[1, S, H, W, 3]``, labels ``[1, S]``, ...) is also accepted and gives
    logits ``[1, Q, way]``, matching query labels ``[1, Q]``; larger batches
    are an error. Any way and shot.

    Support and query images go through the encoder in one batch (so batch
    norm in training uses the statistics of the whole episode, as the
    official code). Then, with ``head='deepemd'``, the prototypes are the
    support node sets of each class (1-shot), or for shot > 1 either their
    per-class mean (``k_shot='mean'``) or an `SFC` fitted to them
    (``k_shot='sfc'``, the official k-shot method; SFC's result carries no
    gradient, so in training the encoder then learns through the queries
    only, as officially); queries are scored by `DeepEMDHead`.
    ``head='protonet'`` / ``'cosine'`` are the pooled-feature baselines
    (`ProtoNetHead`, `CosineHead`) on the same encoder.

    Args:
      encoder: a region encoder (`tf_deepemd.encoders`), images -> nodes.
      head: ``'deepemd'``, ``'protonet'`` or ``'cosine'``.
      way: fixed number of classes, or None to infer it per episode.
      temperature: logit scale; None = the head's default (12.5 DeepEMD,
        1 ProtoNet, 10 cosine).
      node_weights, gradient_mode, l2_strength: `DeepEMDHead` options.
        ``gradient_mode='kkt'`` (default) trains through the differentiable
        EMD as the paper; ``'stop_flow'`` is the official code's default
        training path (OpenCV flows, constant).
      solver_tolerance, solver_max_iterations: EMD solver settings.
      k_shot: ``'sfc'`` or ``'mean'`` (prototype of a class with several
        support images; DeepEMD head only).
      sfc_steps, sfc_lr, sfc_batch_size, sfc_gradient_mode, sfc_seed: `SFC`
        options (``steps``, ``learning_rate``, ``batch_size``,
        ``gradient_mode``, ``seed``).
    """

    def __init__(
        self,
        encoder,
        head="deepemd",
        way=None,
        temperature=None,
        node_weights="cross_reference",
        gradient_mode="kkt",
        l2_strength=0.0,
        solver_tolerance=None,
        solver_max_iterations=100,
        k_shot="sfc",
        sfc_steps=100,
        sfc_lr=100.0,
        sfc_batch_size=4,
        sfc_gradient_mode="stop_flow",
        sfc_seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(encoder, keras.layers.Layer):
            raise ValueError(
                f"`encoder` must be a Keras layer (images -> nodes), got {type(encoder).__name__}."
            )
        if head not in HEADS:
            raise ValueError(f"`head` must be one of {HEADS}, got {head!r}.")
        if k_shot not in K_SHOT_MODES:
            raise ValueError(f"`k_shot` must be one of {K_SHOT_MODES}, got {k_shot!r}.")
        if way is not None and int(way) < 1:
            raise ValueError(f"`way` must be >= 1 or None, got {way}.")
        self.encoder = encoder
        self.head_name = head
        self.way = None if way is None else int(way)
        self.temperature = None if temperature is None else float(temperature)
        self.node_weights = node_weights
        self.gradient_mode = gradient_mode
        self.l2_strength = float(l2_strength)
        self.solver_tolerance = solver_tolerance
        self.solver_max_iterations = int(solver_max_iterations)
        self.k_shot = k_shot
        self.sfc_steps = int(sfc_steps)
        self.sfc_lr = float(sfc_lr)
        self.sfc_batch_size = int(sfc_batch_size)
        self.sfc_gradient_mode = sfc_gradient_mode
        self.sfc_seed = int(sfc_seed)

        self.sfc = None
        if head == "deepemd":
            shared = dict(
                node_weights=node_weights,
                temperature=(
                    matching.DEFAULT_TEMPERATURE if temperature is None else temperature
                ),
                l2_strength=l2_strength,
                tolerance=solver_tolerance,
                max_iterations=solver_max_iterations,
            )
            self.head = DeepEMDHead(gradient_mode=gradient_mode, name="head", **shared)
            if k_shot == "sfc":
                self.sfc = SFC(
                    steps=sfc_steps,
                    learning_rate=sfc_lr,
                    batch_size=sfc_batch_size,
                    gradient_mode=sfc_gradient_mode,
                    seed=sfc_seed,
                    name="sfc",
                    **shared,
                )
        else:
            head_cls = ProtoNetHead if head == "protonet" else CosineHead
            options = {} if temperature is None else {"temperature": temperature}
            self.head = head_cls(name="head", **options)
        # The DeepEMD head runs the solver (XLA is slow for it on CPU).
        self.supports_jit = head != "deepemd"

    @property
    def backbone(self):
        """The encoder's backbone (share it with `PretrainClassifier`)."""
        return self.encoder.backbone

    def build(self, input_shape):
        if isinstance(input_shape, dict):
            input_shape = [input_shape[key] for key in _EPISODE_KEYS]
        image_shape = tuple(input_shape[0])[-3:]
        if not self.encoder.built:
            self.encoder.build((None,) + image_shape)
        self.built = True

    @property
    def _default_save_signature(self):
        # SavedModel traces this Keras hook; Keras builds it from the build
        # shapes with ONE dtype (float32), which would feed float labels.
        if not self.built or self._build_shapes_dict is None:
            return None
        (input_shape,) = self._build_shapes_dict.values()
        if isinstance(input_shape, dict):
            input_shape = [input_shape[key] for key in _EPISODE_KEYS]
        image_shape = tuple(input_shape[0])[-3:]
        image_spec = tf.TensorSpec((None,) + image_shape, self.input_dtype)
        signature = ((image_spec, tf.TensorSpec([None], tf.int32), image_spec),)

        @tf.function(input_signature=signature)
        def serving_default(inputs):
            return self(inputs)

        return serving_default

    def call(self, inputs, training=False):
        (support_images, support_labels, query_images), batched = unpack_episode(inputs)
        num_support = tf.shape(support_images)[0]
        # One encoder pass: batch norm sees the whole episode, as officially.
        nodes = self.encoder(tf.concat([support_images, query_images], 0), training=training)
        logits = self.classify_nodes(nodes[num_support:], nodes[:num_support], support_labels)
        # A batch of one episode in, a batch of one out: matches labels [1, Q].
        return logits[None] if batched else logits

    def classify_nodes(self, query_nodes, support_nodes, support_labels):
        """Logits ``[Q, way]`` from encoded nodes (skips the encoder).

        Args:
          query_nodes: float ``[Q, N, C]``; support_nodes: float ``[S, M, C]``.
          support_labels: int ``[S]`` in ``[0, way)``.
        """
        support_nodes, support_labels = check_support(support_nodes, support_labels)
        query_nodes, support_nodes = check_node_sets(query_nodes, support_nodes, "support_nodes")
        way = resolve_way(support_labels, self.way)
        if self.head_name != "deepemd":
            return self.head(query_nodes, support_nodes, support_labels, way=way)
        support_labels = check_support_labels(support_labels, way)
        prototypes = self.prototypes(support_nodes, support_labels, way)
        return self.head(query_nodes, prototypes)

    def prototypes(self, support_nodes, support_labels, way):
        """``[way, M, C]`` node sets the queries are matched against (DeepEMD head)."""
        means = class_means(support_nodes, support_labels, way)
        if self.sfc is None:
            return means
        shots = tf.math.bincount(
            tf.cast(support_labels, tf.int32),
            minlength=tf.cast(way, tf.int32),
            maxlength=tf.cast(way, tf.int32),
        )
        # 1-shot keeps the support nodes themselves (differentiable), as the
        # official code runs SFC only for shot > 1.
        return tf.cond(
            tf.reduce_max(shots) > 1,
            lambda: self.sfc(support_nodes, support_labels, way=way),
            lambda: means,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            encoder=keras.saving.serialize_keras_object(self.encoder),
            head=self.head_name,
            way=self.way,
            temperature=self.temperature,
            node_weights=self.node_weights,
            gradient_mode=self.gradient_mode,
            l2_strength=self.l2_strength,
            solver_tolerance=self.solver_tolerance,
            solver_max_iterations=self.solver_max_iterations,
            k_shot=self.k_shot,
            sfc_steps=self.sfc_steps,
            sfc_lr=self.sfc_lr,
            sfc_batch_size=self.sfc_batch_size,
            sfc_gradient_mode=self.sfc_gradient_mode,
            sfc_seed=self.sfc_seed,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)
