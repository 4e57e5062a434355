"""The official SGD: PyTorch L2 weight decay, Nesterov, NaN guard, StepLR."""

import numpy as np
import pytest
import tensorflow as tf

from tf_deepemd.training.optimizers import EpisodicSGD, StepDecay, make_optimizer


def pytorch_sgd(weights, gradients, lr, momentum, weight_decay):
    """PyTorch SGD(nesterov=True, dampening=0) on a sequence of gradients."""
    w = weights.copy()
    buffer = None
    for g in gradients:
        d = g + weight_decay * w
        buffer = d.copy() if buffer is None else momentum * buffer + d
        w = w - lr * (d + momentum * buffer)
    return w


def test_coupled_weight_decay_matches_pytorch_sgd(rng):
    start = rng.normal(size=(3, 4)).astype(np.float32)
    gradients = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(5)]
    variable = tf.Variable(start)
    optimizer = make_optimizer(0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    assert isinstance(optimizer, EpisodicSGD)
    for g in gradients:
        optimizer.apply_gradients([(tf.constant(g), variable)])
    expected = pytorch_sgd(start, gradients, 0.1, 0.9, 5e-4)
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6)
    # Without decay the result differs: the decay is really applied.
    assert not np.allclose(expected, pytorch_sgd(start, gradients, 0.1, 0.9, 0.0), atol=1e-6)


def test_nonfinite_gradient_is_zeroed_per_variable():
    finite, poisoned = tf.Variable([1.0, 2.0]), tf.Variable([3.0, 4.0])
    optimizer = make_optimizer(0.5, momentum=0.0, weight_decay=0.0)
    optimizer.apply_gradients(
        [(tf.constant([1.0, 1.0]), finite), (tf.constant([np.nan, 1.0]), poisoned)]
    )
    np.testing.assert_allclose(finite.numpy(), [0.5, 1.5])
    np.testing.assert_allclose(poisoned.numpy(), [3.0, 4.0])  # untouched, not NaN


def test_step_decay_is_pytorch_steplr():
    schedule = StepDecay(0.1, step_epochs=30, gamma=0.2)
    rates = [schedule(e) for e in (0, 29, 30, 59, 60, 90, 119)]
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.02, 0.02, 0.004, 0.0008, 0.0008])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weight_decay_mode": "adamw"}, "weight_decay_mode"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
    ],
)
def test_bad_optimizer_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_optimizer(0.1, **kwargs)
