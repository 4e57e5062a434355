"""DeepEMD episode model: model.fit, SFC for k-shot, gradients, saving, export, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_deepemd
from tests.layers.test_emd_layer import graph_op_types
from tf_deepemd.layers import SFC, ClassMeanPrototypes
from tf_deepemd.models import DeepEMD, PretrainClassifier

SIZE = 16  # tiny images: Conv-4 (8 channels, 2 pools) gives a 4x4 map = 16 nodes


def tiny_model(**options):
    return tf_deepemd.make_model(
        "conv4", backbone_options=dict(widths=(8, 8, 8, 8), num_pools=2), **options
    )


class EpisodeMaker:
    """Episodes of a toy dataset: each class is a fixed random image plus noise."""

    def __init__(self, rng, num_classes=10, noise=0.5):
        self.rng = rng
        self.noise = noise
        self.templates = rng.normal(size=(num_classes, SIZE, SIZE, 3)).astype(np.float32)

    def images(self, classes, labels):
        noise = self.noise * self.rng.normal(size=(len(labels), SIZE, SIZE, 3))
        return (self.templates[classes][labels] + noise).astype(np.float32)

    def __call__(self, way, shot, query):
        classes = self.rng.choice(len(self.templates), way, replace=False)
        support_labels = np.tile(np.arange(way, dtype=np.int32), shot)
        self.rng.shuffle(support_labels)
        query_labels = np.repeat(np.arange(way, dtype=np.int32), query)
        support = self.images(classes, support_labels)
        return (support, support_labels, self.images(classes, query_labels)), query_labels


def episode_dataset(episodes):
    """The episodes as a dataset whose elements are ONE episode each (as
    make_episode_dataset yields), no batch dim."""
    image_spec = tf.TensorSpec([None, SIZE, SIZE, 3])
    label_spec = tf.TensorSpec([None], tf.int32)
    return tf.data.Dataset.from_generator(
        lambda: iter(episodes),
        output_signature=((image_spec, label_spec, image_spec), label_spec),
    ).apply(tf.data.experimental.assert_cardinality(len(episodes)))


def fit_losses(model, dataset, learning_rate=0.05, epochs=3):
    """Compiles ``model`` for episodes, fits it and returns the epoch losses."""
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    losses = model.fit(dataset, epochs=epochs, verbose=0, shuffle=False).history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses
    return losses


def test_fit_trains_on_unbatched_episodes(rng):
    keras.utils.set_random_seed(int(rng.integers(1 << 30)))
    make = EpisodeMaker(rng)
    dataset = episode_dataset([make(way=3, shot=1, query=3) for _ in range(6)])
    model = tiny_model()
    fit_losses(model, dataset)
    # A dataset batched by one episode evaluates the same (logits [1, Q, way]).
    unbatched = model.evaluate(dataset, verbose=0, return_dict=True)
    # A fresh trace: tf.function's reduce_retracing would otherwise relax the
    # rank-4/rank-5 mix to unknown rank, which the model rejects.
    model.make_test_function(force=True)
    batched = model.evaluate(dataset.batch(1), verbose=0, return_dict=True)
    np.testing.assert_allclose(batched["loss"], unbatched["loss"], rtol=1e-5)
    np.testing.assert_allclose(batched["accuracy"], unbatched["accuracy"])


def test_five_way_two_shot_goes_through_sfc(rng):
    (support, labels, query), _ = EpisodeMaker(rng)(way=5, shot=2, query=2)
    model = tiny_model(prototypes=SFC(steps=2, learning_rate=5.0, batch_size=4, seed=4))
    logits = model((support, labels, query)).numpy()
    assert logits.shape == (10, 5)

    # The same computation from the parts: encoder -> SFC prototypes -> head.
    nodes = model.encoder(np.concatenate([support, query]))
    head = tf_deepemd.DeepEMDHead()
    sfc = tf_deepemd.SFC(steps=2, learning_rate=5.0, batch_size=4, seed=4)
    prototypes = sfc(nodes[:10], labels, way=5, head=head)
    expected = head(nodes[10:], prototypes)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)

    # The per-class mean (same encoder and head) is a different model...
    mean_model = DeepEMD(model.encoder, model.head, ClassMeanPrototypes())
    assert np.abs(mean_model((support, labels, query)).numpy() - logits).max() > 1e-3
    # ...but for 1-shot both use the support nodes as they are.
    one_shot = (support[:5], np.arange(5, dtype=np.int32), query)
    np.testing.assert_allclose(model(one_shot), mean_model(one_shot), rtol=1e-6)


@pytest.mark.parametrize("shot", [1, 2])
def test_gradients_reach_every_backbone_weight(rng, shot):
    (support, labels, query), query_labels = EpisodeMaker(rng)(way=3, shot=shot, query=2)
    model = tiny_model(prototypes=SFC(steps=1, learning_rate=1.0))
    model((support, labels, query))
    with tf.GradientTape() as tape:
        logits = model((support, labels, query), training=True)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(query_labels, logits)
        )
    weights = model.backbone.trainable_weights
    assert weights
    for weight, grad in zip(weights, tape.gradient(loss, weights)):
        assert grad is not None, weight.path
        assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0, weight.path


def test_pretrain_classifier_shares_the_backbone_and_round_trips(tmp_path, rng):
    make = EpisodeMaker(rng)
    episode, _ = make(way=3, shot=1, query=2)
    model = tiny_model()
    before = model(episode).numpy()
    pretrain = tf_deepemd.make_pretrain_model(model.backbone, num_classes=7)
    images = make.templates[:4]
    assert pretrain.backbone is model.backbone
    assert pretrain(images).shape == (4, 7)

    # One pre-training step moves the episode model's logits.
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(np.arange(4), pretrain(images, training=True))
        )
    grads = tape.gradient(loss, pretrain.trainable_weights)
    keras.optimizers.SGD(0.5).apply(grads, pretrain.trainable_weights)
    assert np.abs(model(episode).numpy() - before).max() > 1e-4

    path = str(tmp_path / "pretrain.keras")
    pretrain.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, PretrainClassifier) and loaded.num_classes == 7
    np.testing.assert_allclose(loaded(images), pretrain(images), rtol=1e-5, atol=1e-6)


def test_export_serves_any_way_and_shot(tmp_path, rng):
    make = EpisodeMaker(rng)
    model = tiny_model(prototypes=SFC(steps=1, learning_rate=2.0))
    episodes = [make(way=3, shot=1, query=2)[0], make(way=2, shot=2, query=1)[0]]
    # The export holds the stock-op solver. This tiny model's matchings have
    # ties (several optimal flows), where the kernel and the interior point
    # pick different optimal flows and SFC's update follows the one it got:
    # the reference is the in-process model on the same solver.
    with tf_deepemd.stock_ops_only():
        expected = [model(episode).numpy() for episode in episodes]
    image_spec = tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)
    path = str(tmp_path / "exported")
    model.export(
        path,
        input_signature=[(image_spec, tf.TensorSpec([None], tf.int32), image_spec)],
        verbose=False,
    )
    ops = graph_op_types(path)
    assert "Cholesky" in ops and ops & {"While", "StatelessWhile"}  # solver, SFC loop
    assert not ops & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
    served = tf.saved_model.load(path)
    for episode, want in zip(episodes, expected):
        np.testing.assert_allclose(served.serve(episode), want, rtol=1e-5, atol=1e-5)


def test_a_batch_of_one_episode_gives_a_batch_of_one(rng):
    (support, labels, query), _ = EpisodeMaker(rng)(way=3, shot=1, query=2)
    model = tiny_model()
    batched = model((support[None], labels[None], query[None])).numpy()
    assert batched.shape == (1, 6, 3)
    np.testing.assert_allclose(batched[0], model((support, labels, query)), rtol=1e-6)
    # Training takes one episode per call (batch norm over that episode).
    two = (np.stack([support] * 2), np.stack([labels] * 2), np.stack([query] * 2))
    with pytest.raises(ValueError, match="batch of 2 episodes; in training"):
        model(two, training=True)


@pytest.mark.parametrize("shot", [1, 3])
def test_a_batch_of_episodes_gives_each_episode_its_logits_alone(rng, shot):
    """Inference on E episodes in one call (SFC for shot 3): each episode's logits alone."""
    make = EpisodeMaker(rng)
    episodes = [make(way=3, shot=shot, query=2)[0] for _ in range(3)]
    stacked = tuple(np.stack(parts) for parts in zip(*episodes))
    model = tiny_model(prototypes=SFC(steps=2, learning_rate=5.0, batch_size=4, seed=4))
    alone = np.stack([model(episode).numpy() for episode in episodes])
    # Dynamic E under tf.function, as the evaluator traces it.
    image = tf.TensorSpec([None, None, SIZE, SIZE, 3])
    compiled = tf.function(lambda x: model(x), input_signature=[
        (image, tf.TensorSpec([None, None], tf.int32), image)])
    for batched in (model(stacked).numpy(), compiled(stacked).numpy()):
        assert batched.shape == (3, 6, 3)
        np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="`support_labels` is for 2 episodes"):
        model((stacked[0], stacked[1][:2], stacked[2]))


def test_clear_errors(rng):
    (support, labels, query), _ = EpisodeMaker(rng)(way=3, shot=2, query=1)
    model = tiny_model(way=3, prototypes="mean")
    with pytest.raises(ValueError, match="Empty support"):
        model((support[:0], labels[:0], query))
    with pytest.raises(ValueError, match="`support_labels` has 5 entries"):
        model((support, labels[:5], query))
    with pytest.raises(ValueError, match="`support_labels` must be an integer"):
        model((support, labels.astype(np.float32), query))
    with pytest.raises(ValueError, match="`query_images` must have rank 4"):
        model((support, labels, query[0]))
    with pytest.raises(ValueError, match="episode"):
        model((support, labels))
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be < `way`"):
        model((support, np.where(labels == 2, 3, labels).astype(np.int32), query))
    with pytest.raises(tf.errors.InvalidArgumentError, match="support example"):
        model((support, np.where(labels == 2, 0, labels).astype(np.int32), query))
    for bad, pattern in (
        (dict(head="matching"), "head"),
        (dict(prototypes="median"), "prototypes"),
        (dict(way=0), "way"),
        (dict(gradient_mode="exact"), "gradient_mode"),
        (dict(head=tf_deepemd.DeepEMDHead(), temperature=2.0), "given by name"),
    ):
        with pytest.raises(ValueError, match=pattern):
            tiny_model(**bad)
    with pytest.raises(ValueError, match="`head`.*Keras layer"):
        DeepEMD(model.encoder, head=lambda q, p: q)
    with pytest.raises(ValueError, match="`head`: SFC fits prototypes for a DeepEMD"):
        tiny_model(head="cosine", prototypes="sfc")((support, labels, query))
