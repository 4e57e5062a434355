"""Episode evaluation: accuracy and the official 95 % confidence interval."""

import numpy as np
import pytest
import tensorflow as tf

from tf_deepemd.training.evaluate import (
    EpisodeEvaluator,
    _scoring_function,
    auto_episodes_per_call,
    confidence_interval,
    evaluate_episodes,
)


def test_confidence_interval_is_196_population_std_over_sqrt_n(rng):
    values = rng.uniform(0, 100, size=37)
    mean, ci = confidence_interval(values)
    assert mean == pytest.approx(values.mean())
    assert ci == pytest.approx(1.96 * np.sqrt(np.mean((values - values.mean()) ** 2)) / np.sqrt(37))
    with pytest.raises(ValueError):
        confidence_interval([])


def test_evaluate_episodes_scores_each_episode():
    """A 'model' whose correctness per episode is known: episode i gets i of 4 queries right."""

    def episode(i):
        query_labels = tf.constant([0, 1, 2, 3], tf.int32)
        support = tf.fill([4, 2, 2, 3], float(i))
        return (support, tf.range(4), tf.zeros([4, 2, 2, 3])), query_labels

    episodes = tf.data.Dataset.range(5).map(lambda i: episode(tf.cast(i, tf.float32)))

    def model(inputs, training=False):
        assert training is False
        support, _, _ = inputs
        right = tf.cast(support[0, 0, 0, 0], tf.int32)  # number of correct queries
        predicted = tf.where(tf.range(4) < right, tf.range(4), (tf.range(4) + 1) % 4)
        return tf.one_hot(predicted, 4)

    result = evaluate_episodes(model, episodes, episodes_per_call=1)
    expected = np.array([0, 25, 50, 75, 100], np.float64)
    np.testing.assert_allclose(result.per_episode, expected)
    assert result.episodes == 5
    assert result.accuracy == pytest.approx(50.0)
    assert result.ci95 == pytest.approx(1.96 * expected.std() / np.sqrt(5))
    assert result.episodes_per_second > 0
    assert evaluate_episodes(model, episodes, num_episodes=2, episodes_per_call=1).accuracy == (
        pytest.approx(12.5))


def test_several_episodes_per_call_score_each_episode_as_alone(rng):
    """DeepEMD on 7 episodes, 3 per call (the last call padded): the accuracies of 1 per call."""
    from tests.models.test_deepemd import SIZE, EpisodeMaker, episode_dataset, tiny_model

    make = EpisodeMaker(rng, noise=1.5)
    episodes = episode_dataset([make(way=3, shot=1, query=4) for _ in range(7)])
    model = tiny_model()
    one = EpisodeEvaluator(model, episodes_per_call=1)(episodes)
    three = EpisodeEvaluator(model, episodes_per_call=3)
    calls = list(three.calls(episodes))
    assert [len(call) for call in calls] == [3, 3, 1]
    np.testing.assert_allclose(np.concatenate(calls), one.per_episode)
    assert 0 < one.accuracy < 100  # the episodes are not all alike
    result = three(episodes, num_episodes=5)
    np.testing.assert_allclose(result.per_episode, one.per_episode[:5])
    assert result.episodes == 5 and result.episodes_per_second > 0
    # The short last calls were padded: one trace for all calls.
    assert _scoring_function(model, batched=True).experimental_get_tracing_count() == 1
    with pytest.raises(ValueError, match="episodes_per_call"):
        EpisodeEvaluator(model, episodes_per_call=0)


def test_evaluators_of_one_model_share_its_trace_and_read_its_current_weights(rng):
    """As each stage's validation and the test stage do: new weights, no new trace."""
    from tests.models.test_deepemd import EpisodeMaker, episode_dataset, tiny_model

    make = EpisodeMaker(rng, noise=1.5)
    episodes = [make(way=3, shot=1, query=4) for _ in range(4)]
    model = tiny_model()

    def accuracies_one_by_one():  # eager, no evaluator
        return [100.0 * np.mean(np.argmax(model(inputs, training=False), -1) == labels)
                for inputs, labels in episodes]

    first = EpisodeEvaluator(model, episodes_per_call=2)
    before = accuracies_one_by_one()
    np.testing.assert_allclose(first(episode_dataset(episodes)).per_episode, before)
    for _ in range(5):  # new weights that change some episode's accuracy
        for variable in model.trainable_variables:
            variable.assign_add(0.5 * rng.normal(size=variable.shape).astype(np.float32))
        if not np.allclose(accuracies_one_by_one(), before):
            break
    assert not np.allclose(accuracies_one_by_one(), before)
    second = EpisodeEvaluator(model, episodes_per_call=2)
    result = second(episode_dataset(episodes))
    np.testing.assert_allclose(result.per_episode, accuracies_one_by_one())
    assert _scoring_function(model, batched=True).experimental_get_tracing_count() == 1
    assert _scoring_function(tiny_model(), batched=True) is not _scoring_function(model, True)


def test_automatic_episodes_per_call_follow_the_pixels_of_an_episode():
    def spec(support, query, size):
        image = lambda n: tf.TensorSpec([n, size, size, 3])  # noqa: E731
        return (image(support), tf.TensorSpec([support], tf.int32), image(query)), None

    assert auto_episodes_per_call(spec(5, 75, 32)) == 12
    assert auto_episodes_per_call(spec(25, 75, 32)) == 9
    assert auto_episodes_per_call(spec(5, 75, 84)) == 1
    assert auto_episodes_per_call(spec(1, 1, 8)) == 16
    assert auto_episodes_per_call(spec(None, 75, 32)) == 1


def test_episode_objectives_accept_batches_of_one_episode(rng):
    from tf_deepemd.training.objectives import episode_accuracy, episode_cross_entropy

    logits = rng.normal(size=(6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=6).astype(np.int32)
    plain = episode_cross_entropy(labels, logits).numpy()
    batched = episode_cross_entropy(labels[None], logits[None]).numpy()
    reference = -np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))[np.arange(6), labels]
    np.testing.assert_allclose(plain, reference, rtol=1e-5)
    np.testing.assert_allclose(batched, reference, rtol=1e-5)
    np.testing.assert_array_equal(
        episode_accuracy(labels[None], logits[None]).numpy(), logits.argmax(-1) == labels
    )
