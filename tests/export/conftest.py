"""One tiny DeepEMD model, exported once per test session, and its reference outputs.

The reference is the Keras model itself fed through the EVALUATION data
path (`tf_deepemd.data.preprocessing.preprocess_image` per image, as the
episode pipeline does), so a match shows both that the export computes the
model and that its in-graph preprocessing is evaluation's.
"""

import numpy as np
import pytest
import tensorflow as tf

import tf_deepemd
from tf_deepemd.data.preprocessing import preprocess_image
from tf_deepemd.export import export_for_serving
from tf_deepemd.export.preprocessing import preprocess_images
from tf_deepemd.layers import SFC

IMAGE_SIZE = 16
NORMALIZATION = ((0.45, 0.5, 0.55), (0.2, 0.25, 0.3))
MODEL_NAME = "deepemd"


def make_tiny_model():
    """Conv-4 with 8 channels, 16 px -> 4x4 = 16 nodes; SFC shortened for speed."""
    tf.keras.utils.set_random_seed(3)
    model = tf_deepemd.make_model(
        "conv4", backbone_options=dict(widths=(8, 8, 8, 8), num_pools=2),
        prototypes=SFC(steps=5),
    )
    model.build([(None, IMAGE_SIZE, IMAGE_SIZE, 3), (None,), (None, IMAGE_SIZE, IMAGE_SIZE, 3)])
    return model


def episode_request(rng, way, shot, queries=4, support_size=(20, 24), query_size=(12, 12)):
    """Raw uint8 pixels of an episode; sizes differ from the model's on purpose
    (support images are shrunk with antialiasing, query images enlarged)."""
    return {
        "support_images": rng.integers(0, 256, (way * shot, *support_size, 3), dtype=np.uint8),
        "support_labels": np.tile(np.arange(way, dtype=np.int32), shot),
        "query_images": rng.integers(0, 256, (queries, *query_size, 3), dtype=np.uint8),
    }


def evaluation_preprocess(images):
    return tf.stack(
        [preprocess_image(tf.constant(image), IMAGE_SIZE, False, NORMALIZATION) for image in images]
    )


@tf.function
def graph_preprocess(images):
    return preprocess_images(images, IMAGE_SIZE, NORMALIZATION)


def keras_outputs(model, request):
    """The Keras model's logits on the request's images preprocessed by the export's function."""
    logits = model(
        (
            graph_preprocess(request["support_images"]),
            tf.constant(request["support_labels"]),
            graph_preprocess(request["query_images"]),
        ),
        training=False,
    )
    return np.asarray(logits)


@pytest.fixture(scope="session")
def tiny_model():
    return make_tiny_model()


@pytest.fixture(scope="session")
def export(tiny_model, tmp_path_factory):
    """`ExportResult` of the tiny model exported to a fresh base folder, with warmup."""
    base = str(tmp_path_factory.mktemp("exports") / MODEL_NAME)
    return export_for_serving(
        tiny_model,
        base,
        image_size=IMAGE_SIZE,
        normalization=NORMALIZATION,
        warmup_requests=True,
        model_name=MODEL_NAME,
    )


@pytest.fixture(scope="session")
def loaded_signatures(export):
    """The export's signatures through `tf.saved_model.load` (fast, in-process)."""
    return tf.saved_model.load(export.path).signatures
