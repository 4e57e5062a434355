"""`DeepEMD`: a few-shot episode classifier (region encoder + prototypes + matching head)."""

from typing import Optional

import keras
import tensorflow as tf

from tf_deepemd.layers.prototypes import ClassMeanPrototypes
from tf_deepemd.ops.checks import check_labelled_set, check_rank
from tf_deepemd.ops.emd import stock_ops_only

EPISODE_KEYS = ("support_images", "support_labels", "query_images")
IMAGE_LAYOUT = "[images, height, width, channels]"


def _single_episode(tensor, name):
    """Drops the leading batch dim of a batch of ONE episode (training takes one)."""
    if tensor.shape[0] is not None and tensor.shape[0] != 1:
        raise ValueError(
            f"`{name}` has a leading batch of {tensor.shape[0]} episodes; in training DeepEMD "
            "takes one episode per call (batch norm would mix their statistics): leave the "
            "episode dataset unbatched, or batch(1)."
        )
    check = tf.debugging.assert_equal(
        tf.shape(tensor)[0], 1, message=f"`{name}`: training takes one episode per batch."
    )
    with tf.control_dependencies([check]):
        return tf.squeeze(tensor, axis=0)


def unpack_episode(inputs):
    """``((support_images, support_labels, query_images), batched)`` from a model input.

    Accepts a tuple/list of the three tensors or a dict with those keys:
    one episode (``[S, H, W, 3]``, ``[S]``, ``[Q, H, W, 3]``) or a batch of
    E episodes with a leading dim (then ``batched`` is True and the tensors
    keep it). Raises ValueError naming the argument on wrong structure,
    ranks, dtypes or counts.
    """
    if isinstance(inputs, dict):
        missing = [key for key in EPISODE_KEYS if key not in inputs]
        if missing:
            raise ValueError(f"Episode dict is missing {missing}; expected keys {EPISODE_KEYS}.")
        inputs = tuple(inputs[key] for key in EPISODE_KEYS)
    if not isinstance(inputs, (tuple, list)) or len(inputs) != 3:
        raise ValueError(
            "DeepEMD input must be an episode (support_images [S, H, W, 3], support_labels "
            f"[S], query_images [Q, H, W, 3]), got {type(inputs).__name__}."
        )
    episode = [tf.convert_to_tensor(x) for x in inputs]
    for name, tensor in zip(EPISODE_KEYS, episode):
        if tensor.shape.rank is None:
            raise ValueError(
                f"`{name}` has unknown rank; DeepEMD needs the rank (one episode, or a batch "
                "of episodes) at trace time. (A tf.function called with both batched and "
                "unbatched episodes relaxes to unknown rank: use one form per function.)"
            )
    support_images, support_labels, query_images = episode
    batched = query_images.shape.rank == 5
    batch_dims = int(batched)
    layout = IMAGE_LAYOUT if not batched else "[episodes, " + IMAGE_LAYOUT[1:]
    check_rank(query_images, "query_images", 4 + batch_dims, layout)
    support_images, support_labels = check_labelled_set(
        support_images, support_labels, "support_images", 4, IMAGE_LAYOUT, batch_dims=batch_dims
    )
    shapes = [tf.shape(tensor)[: batch_dims + 1] for tensor in (support_labels, support_images)]
    checks = [tf.debugging.assert_equal(
        shapes[0],
        shapes[1],
        message="`support_labels` and `support_images` must have one entry per support image.",
    )]
    if batched:
        checks.append(tf.debugging.assert_equal(
            tf.shape(query_images)[0],
            shapes[1][0],
            message="`query_images` and `support_images` must hold the same number of episodes.",
        ))
    with tf.control_dependencies(checks):
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
    logits ``[1, Q, way]``, matching query labels ``[1, Q]``. In inference
    (``training=False``), a batch of E episodes of one shape gives ``[E,
    Q, way]`` in one pass: one encoder call for all images, one solver call
    for all ``E * Q * way`` problems, SFC fitted to all support sets in one
    loop; each episode's logits are those it gets alone (`tf_deepemd.training`
    evaluates this way). This needs a head and prototype layer that take
    leading episode dims, as the library's do; a batch of several episodes
    in training is an error (batch norm would mix their statistics). Any
    way and shot.

    Built from three layers, saved as nested configs:

    1. ``encoder``: images ``[B, H, W, 3]`` -> node sets ``[B, N, C]``.
       Support and query images go through it in one batch (so batch norm
       in training uses the statistics of the whole episode, as the
       official code).
    2. ``prototypes``: ``(support_nodes [S, M, C], support_labels [S],
       way=, head=) -> [way, M, C]``, one node set per class:
       `ClassMeanPrototypes` (the default) or `SFC`, fitted for the head
       (the official k-shot method; SFC's result carries no gradient, so in
       training the encoder then learns through the queries only, as
       officially; 1-shot keeps the support nodes).
    3. ``head``: ``(query_nodes [Q, N, C], proto_nodes [W, M, C]) -> logits
       [Q, W]``: `DeepEMDHead`, the pooled baselines `ProtoNetHead` /
       `CosineHead`, or any layer with that contract.

    The layers check their own inputs; the model checks the episode.

    Args:
      encoder: a region encoder (`tf_deepemd.encoders`), images -> nodes.
      head: the matching head layer.
      prototypes: the prototype layer; None = `ClassMeanPrototypes()`.
      way: fixed number of classes, or None to infer it per episode.

    Example: a 5-way 1-shot episode with 2 queries per class, 32 x 32 images
    and the small Conv-4 backbone.

    >>> import tensorflow as tf
    >>> import tf_deepemd
    >>> from tf_deepemd.encoders import FCNEncoder
    >>> from tf_deepemd.backbones import Conv4
    >>> model = tf_deepemd.DeepEMD(FCNEncoder(Conv4()), tf_deepemd.DeepEMDHead())
    >>> support = tf.random.stateless_uniform([5, 32, 32, 3], seed=[1, 2])
    >>> queries = tf.random.stateless_uniform([10, 32, 32, 3], seed=[3, 4])
    >>> model((support, tf.range(5), queries)).shape
    TensorShape([10, 5])
    """

    def __init__(self, encoder: keras.layers.Layer, head: keras.layers.Layer,
                 prototypes: Optional[keras.layers.Layer] = None, way: Optional[int] = None,
                 **kwargs):
        super().__init__(**kwargs)
        prototypes = ClassMeanPrototypes() if prototypes is None else prototypes
        for name, layer in (("encoder", encoder), ("head", head), ("prototypes", prototypes)):
            if not isinstance(layer, keras.layers.Layer):
                raise ValueError(f"`{name}` must be a Keras layer, got {type(layer).__name__}.")
        if way is not None and int(way) < 1:
            raise ValueError(f"`way` must be >= 1 or None, got {way}.")
        self.encoder = encoder
        self.head = head
        self.prototypes = prototypes
        self.way = None if way is None else int(way)
        # The solver's layers opt out of XLA (slow for it on CPU, docs/performance.md, "XLA").
        self.supports_jit = all(
            layer.supports_jit for layer in (self.encoder, self.head, self.prototypes)
        )

    @property
    def backbone(self):
        """The encoder's backbone (share it with `PretrainClassifier`)."""
        return self.encoder.backbone

    def build(self, input_shape):
        if isinstance(input_shape, dict):
            input_shape = [input_shape[key] for key in EPISODE_KEYS]
        image_shape = tuple(input_shape[0])[-3:]
        if not self.encoder.built:
            self.encoder.build((None,) + image_shape)
        self.built = True

    def call(self, inputs, training=False):
        (support_images, support_labels, query_images), batched = unpack_episode(inputs)
        if batched and (training or support_images.shape[0] == 1):
            # A batch of one episode: the one-episode path, with its layers'
            # plain shapes (and batch norm over that episode in training).
            support_images, support_labels, query_images = (
                _single_episode(tensor, name) for tensor, name in
                zip((support_images, support_labels, query_images), EPISODE_KEYS)
            )
            return self._classify_episode(
                support_images, support_labels, query_images, training)[None]
        if not batched:
            return self._classify_episode(support_images, support_labels, query_images, training)
        # E episodes: one encoder pass over all their images (inference only).
        support_shape, query_shape = tf.shape(support_images), tf.shape(query_images)
        num_support = support_shape[0] * support_shape[1]
        images = tf.concat([
            tf.reshape(support_images, tf.concat([[num_support], support_shape[2:]], 0)),
            tf.reshape(query_images, tf.concat([[-1], query_shape[2:]], 0)),
        ], 0)
        nodes = self.encoder(images, training=False)
        node_shape = tf.shape(nodes)[1:]
        support_nodes = tf.reshape(
            nodes[:num_support], tf.concat([support_shape[:2], node_shape], 0))
        query_nodes = tf.reshape(nodes[num_support:], tf.concat([query_shape[:2], node_shape], 0))
        return self.classify_nodes(query_nodes, support_nodes, support_labels)

    def _classify_episode(self, support_images, support_labels, query_images, training):
        num_support = tf.shape(support_images)[0]
        # One encoder pass: batch norm sees the whole episode, as officially.
        nodes = self.encoder(tf.concat([support_images, query_images], 0), training=training)
        return self.classify_nodes(nodes[num_support:], nodes[:num_support], support_labels)

    def classify_nodes(self, query_nodes, support_nodes, support_labels):
        """Logits ``[Q, way]`` from encoded nodes (skips the encoder).

        Args:
          query_nodes: float ``[Q, N, C]``; support_nodes: float ``[S, M, C]``.
          support_labels: int ``[S]`` in ``[0, way)``.
          (Or all three with a leading episode dim E: logits ``[E, Q, way]``.)
        """
        prototypes = self.prototypes(support_nodes, support_labels, way=self.way, head=self.head)
        return self.head(query_nodes, prototypes)

    @staticmethod
    def episode_signature(image_size=None, dtype="float32"):
        """``[(support_images, support_labels, query_images)]`` TensorSpecs of one episode.

        ``image_size``: the side of the square images, or None for any size.
        """
        image = tf.TensorSpec([None, image_size, image_size, 3], dtype)
        return [(image, tf.TensorSpec([None], tf.int32), image)]

    def track_for_export(self, archive):
        """Tracks the model's layers in a `keras.export.ExportArchive`.

        The layers, not the model: a SavedModel traces the default signature
        Keras derives for a tracked subclassed model, with ONE dtype for
        every input (float labels), which an episode rejects.
        """
        for layer in self.layers:
            if layer.built:
                archive.track(layer)

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None,
               **kwargs):
        """`keras.Model.export`; the ``serve`` endpoint takes one episode.

        ``input_signature`` defaults to `episode_signature` (int32 labels,
        any image size); other formats go to Keras.
        """
        if format != "tf_saved_model":
            return super().export(filepath, format=format, verbose=verbose,
                                  input_signature=input_signature, **kwargs)
        archive = keras.export.ExportArchive()
        self.track_for_export(archive)
        # SavedModels hold stock ops only, for stock TensorFlow Serving: the
        # solver is traced without the compiled kernel.
        with stock_ops_only():
            archive.add_endpoint(
                "serve",
                self.__call__,
                input_signature or self.episode_signature(dtype=self.input_dtype),
                **kwargs,
            )
            archive.write_out(filepath, verbose=True if verbose is None else verbose)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                name: keras.saving.serialize_keras_object(getattr(self, name))
                for name in ("encoder", "head", "prototypes")
            },
            way=self.way,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in ("encoder", "head", "prototypes"):
            config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)
