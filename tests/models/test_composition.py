"""DeepEMD as a composite of layers: a user-defined head, nested-config round trips of every
built-in head and prototype layer, and weights saved before the redesign."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_deepemd
from tests.models.test_deepemd import SIZE, EpisodeMaker, episode_dataset, fit_losses, tiny_model
from tf_deepemd.layers import SFC, ClassMeanPrototypes, CosineHead, DeepEMDHead, ProtoNetHead
from tf_deepemd.models import DeepEMD, make_encoder

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
TINY_BACKBONE = dict(widths=(8, 8, 8, 8), num_pools=2)


@keras.saving.register_keras_serializable(package="tests")
class EuclideanHead(keras.layers.Layer):
    """A head a user could write: ``-scale * ||mean(q) - mean(p)||`` with a trained scale."""

    def __init__(self, initial_scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_scale = float(initial_scale)

    def build(self, query_nodes_shape, proto_nodes_shape=None):
        self.scale = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.initial_scale), name="scale"
        )

    def call(self, query_nodes, proto_nodes):
        query = tf.reduce_mean(query_nodes, axis=1)[:, None]  # [Q, 1, C]
        prototypes = tf.reduce_mean(proto_nodes, axis=1)[None]  # [1, W, C]
        distance = tf.sqrt(tf.reduce_sum(tf.square(query - prototypes), axis=-1) + 1e-12)
        return -self.scale * distance

    def get_config(self):
        return {**super().get_config(), "initial_scale": self.initial_scale}


def test_a_user_defined_head_trains_with_fit_and_round_trips(tmp_path, rng):
    keras.utils.set_random_seed(int(rng.integers(1 << 30)))
    make = EpisodeMaker(rng)
    encoder = make_encoder("fcn", "conv4", backbone_options=TINY_BACKBONE)
    model = DeepEMD(encoder, EuclideanHead(initial_scale=0.5))
    assert isinstance(model.prototypes, ClassMeanPrototypes) and model.supports_jit

    fit_losses(model, episode_dataset([make(way=3, shot=2, query=3) for _ in range(6)]))
    assert float(model.head.scale) != 0.5  # the head's own weight trained too

    # The model gave the head class-mean prototypes: a NumPy re-expression.
    (support, labels, query), _ = make(way=4, shot=2, query=2)
    logits = model((support, labels, query)).numpy()
    nodes = model.encoder(np.concatenate([support, query])).numpy().astype(np.float64)
    pooled = nodes.mean(axis=1)
    prototypes = np.stack([pooled[: len(labels)][labels == k].mean(0) for k in range(4)])
    distance = np.linalg.norm(pooled[len(labels):, None] - prototypes[None], axis=-1)
    np.testing.assert_allclose(logits, -float(model.head.scale) * distance, rtol=1e-4, atol=1e-5)

    path = str(tmp_path / "euclidean.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.head, EuclideanHead) and float(loaded.head.scale) == float(
        model.head.scale
    )
    np.testing.assert_array_equal(loaded((support, labels, query)), logits)


ROUND_TRIPS = {
    "deepemd_sfc": lambda: dict(
        head=DeepEMDHead(node_weights="uniform", temperature=4.0, tolerance=1e-6),
        prototypes=SFC(steps=1, learning_rate=2.0, batch_size=3, seed=9, gradient_mode="kkt"),
    ),
    "deepemd_mean": lambda: dict(head="deepemd", prototypes="mean", gradient_mode="stop_flow"),
    "protonet": lambda: dict(head=ProtoNetHead(temperature=0.25), way=3),
    "cosine_learned_temperature": lambda: dict(
        head=CosineHead(temperature=4.0, learn_temperature=True)
    ),
}


@pytest.mark.parametrize("layers", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_keras_round_trip_gives_identical_logits(tmp_path, rng, layers):
    (support, labels, query), _ = EpisodeMaker(rng)(way=3, shot=2, query=2)
    model = tiny_model(**layers())
    model((support, labels, query))
    if isinstance(model.head, CosineHead):
        model.head.temperature_weight.assign(7.5)  # a learned value, not the initial one
    expected = model((support, labels, query)).numpy()
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, DeepEMD)
    for name in ("encoder", "head", "prototypes"):
        assert type(getattr(loaded, name)) is type(getattr(model, name)), name
    # Nested configs, through JSON as saved (tuples come back as lists).
    config = json.loads(json.dumps(model.get_config()))
    assert config["head"]["config"] == json.loads(json.dumps(model.head.get_config()))
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(config, sort_keys=True)
    np.testing.assert_array_equal(loaded((support, labels, query)), expected)


# The saved logits were computed with the stock-op solver; SFC's two-shot fit
# amplifies the solvers' differences at ties (several optimal flows) on
# this tiny random model beyond the tolerance of a weight-loading check.
@pytest.mark.emd_implementations("tf_ops")
@pytest.mark.usefixtures("emd_implementation")
def test_weights_saved_before_the_redesign_load(rng):
    """``start_commit_deepemd.*`` were written by the flat-argument DeepEMD of commit b7bd4d3
    (``make_model('conv4', backbone_options=TINY_BACKBONE, sfc_steps=2, sfc_lr=5.0)``, seeded,
    one training-mode call, moving means set): weights and the logits it gave."""
    saved = np.load(os.path.join(DATA, "start_commit_deepemd.npz"))
    model = tiny_model(prototypes=SFC(steps=2, learning_rate=5.0))
    model.build([(None, SIZE, SIZE, 3), (None,), (None, SIZE, SIZE, 3)])
    model.load_weights(os.path.join(DATA, "start_commit_deepemd.weights.h5"))
    support, labels, query = saved["support"], saved["labels"], saved["query"]
    np.testing.assert_allclose(model((support[:3], labels[:3], query)), saved["one_shot"], rtol=1e-6)
    np.testing.assert_allclose(model((support, labels, query)), saved["two_shot"], rtol=1e-5)
    # A protonet model of the same backbone takes the same file (no head weights).
    protonet = tiny_model(head="protonet")
    protonet.build([(None, SIZE, SIZE, 3), (None,), (None, SIZE, SIZE, 3)])
    protonet.load_weights(os.path.join(DATA, "start_commit_deepemd.weights.h5"))
    for mine, theirs in zip(protonet.backbone.weights, model.backbone.weights):
        np.testing.assert_array_equal(mine, theirs)
    assert tf_deepemd.models.method_name(protonet) == "protonet"
