"""The serving signatures of an exported `DeepEMD` model.

Three endpoints (SignatureDefs), each a function of the request tensors:

``serving_default`` -- few-shot classification of one whole episode::

    support_images  uint8 [S, H, W, 3]   raw RGB pixels 0..255, any H, W
    support_labels  int32 [S]            classes 0 .. way-1, each present
    query_images    uint8 [Q, H', W', 3] raw RGB pixels 0..255, any H', W'
 -> logits          float32 [Q, way]
    probabilities   float32 [Q, way]     softmax of the logits
    classes         int32 [Q]            argmax of the logits

  ``way = max(support_labels) + 1`` and the shot (images per class, may
  differ between classes) are read from each request, so one export serves
  any way and shot; with an `SFC` prototype layer a class with several
  images gets an SFC prototype fitted in the graph, as at evaluation.

``embed`` -- ``images`` uint8 ``[N, H, W, 3]`` -> ``nodes`` float32
  ``[N, K, C]``: the encoder's node features (K regions of C channels).

``emd`` -- the batched EMD solver: ``cost`` float32 ``[B, N, M]``,
  ``source_weights`` float32 ``[B, N]``, ``target_weights`` float32
  ``[B, M]`` -> ``flow`` float32 ``[B, N, M]``, ``distance`` float32
  ``[B]`` (`tf_deepemd.solve_emd` with the model's solver settings, no L2
  term).

Images are preprocessed in the graph exactly as at evaluation
(`tf_deepemd.export.preprocessing`). Inputs are declared with unknown rank
so that a malformed request reaches the checks of `request_checks` and is
answered with an `InvalidArgumentError` naming the problem.
"""

from __future__ import annotations

import tensorflow as tf

from tf_deepemd.data.image_split import Normalization
from tf_deepemd.export import request_checks
from tf_deepemd.export.preprocessing import check_normalization, preprocess_images
from tf_deepemd.layers.deepemd_head import DeepEMDHead
from tf_deepemd.ops.emd import solve_emd

EPISODE = "serving_default"
EMBED = "embed"
EMD = "emd"

# Input name -> (dtype, documented shape). The declared TensorSpecs have
# unknown rank (see the module docstring); clients and docs use these.
INPUTS = {
    EPISODE: {
        "support_images": (tf.uint8, "[S, H, W, 3]"),
        "support_labels": (tf.int32, "[S]"),
        "query_images": (tf.uint8, "[Q, H, W, 3]"),
    },
    EMBED: {"images": (tf.uint8, "[N, H, W, 3]")},
    EMD: {
        "cost": (tf.float32, "[B, N, M]"),
        "source_weights": (tf.float32, "[B, N]"),
        "target_weights": (tf.float32, "[B, M]"),
    },
}
OUTPUTS = {
    EPISODE: ("logits", "probabilities", "classes"),
    EMBED: ("nodes",),
    EMD: ("flow", "distance"),
}


def input_signature(name):
    """``[tf.TensorSpec(shape=None, dtype, name=input)]`` of signature ``name``, in order."""
    return [tf.TensorSpec(None, dtype, name=key) for key, (dtype, _) in INPUTS[name].items()]


class ServingSignatures:
    """The signature functions of one model.

    Args:
      model: a built `tf_deepemd.models.DeepEMD`.
      image_size: side of the images the model was trained and evaluated on.
      normalization: ``(mean, std)`` per RGB channel in [0, 1] units, the
        evaluation normalisation of the model's dataset.
    """

    def __init__(self, model, image_size: int, normalization: Normalization):
        if not model.built:
            raise ValueError("Build the model (or load its weights) before exporting it.")
        self.model = model
        self.image_size = int(image_size)
        if self.image_size < 1:
            raise ValueError(f"`image_size` must be >= 1, got {image_size}.")
        self.normalization = check_normalization(normalization)

    def preprocess(self, images):
        return preprocess_images(images, self.image_size, self.normalization)

    def classify_episode(self, support_images, support_labels, query_images):
        """``serving_default``: see the module docstring for shapes and dtypes."""
        support_images, support_labels, query_images = request_checks.check_episode(
            support_images, support_labels, query_images
        )
        logits = self.model(
            (self.preprocess(support_images), support_labels, self.preprocess(query_images)),
            training=False,
        )
        logits = tf.cast(logits, tf.float32)
        return {
            "logits": logits,
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "classes": tf.argmax(logits, axis=-1, output_type=tf.int32),
        }

    def embed(self, images):
        """``embed``: uint8 ``[N, H, W, 3]`` -> ``{'nodes': float32 [N, K, C]}``."""
        images = request_checks.check_images(images, "images", "N")
        nodes = self.model.encoder(self.preprocess(images), training=False)
        return {"nodes": tf.cast(nodes, tf.float32)}

    def emd(self, cost, source_weights, target_weights):
        """``emd``: ``{'flow': [B, N, M], 'distance': [B]}`` of a batch of EMD problems."""
        cost, source_weights, target_weights = request_checks.check_emd_problem(
            cost, source_weights, target_weights
        )
        head = self.model.head
        # A DeepEMD head's solver settings; the solver's defaults for other heads.
        solver = {}
        if isinstance(head, DeepEMDHead):
            solver = dict(tolerance=head.tolerance, max_iterations=head.max_iterations)
        result = solve_emd(cost, source_weights, target_weights, **solver)
        return {"flow": result.flow, "distance": result.distance}

    def endpoints(self):
        """``{signature name: (function, input_signature)}`` for `keras.export.ExportArchive`."""
        functions = {EPISODE: self.classify_episode, EMBED: self.embed, EMD: self.emd}
        return {name: (function, input_signature(name)) for name, function in functions.items()}
