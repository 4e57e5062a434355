"""Optimizers and learning-rate schedules of the official protocol, for gin.

The official scripts (docs/method.md, "Protocol") use PyTorch SGD with momentum 0.9,
Nesterov and ``weight_decay=5e-4``, stepped by ``StepLR`` once per epoch, and
zero any parameter's gradient that contains a NaN. The official author now
prefers a cosine schedule without restarts (in the official repository's
issue threads): ``CosineAnnealingLR`` over the stage's epochs, stepped once per epoch (`CosineDecay`); each stage
picks one by name (`epoch_schedule`).

Keras' own ``weight_decay`` is *decoupled* (``w -= lr * wd * w`` beside the
momentum update); PyTorch's adds ``wd * w`` to the gradient before momentum
(an L2 penalty). `EpisodicSGD` does the latter so that the momentum history
sees the decay, as officially.

Keras and PyTorch also write momentum differently (Keras keeps
``m = mu * m - lr * g``, PyTorch ``b = mu * b + g`` and steps by
``lr * b``): the two agree exactly while the learning rate is constant and
differ only in the first steps after a decay.
"""

from __future__ import annotations

import math

import gin
import keras
import tensorflow as tf

WEIGHT_DECAY_MODES = ("coupled", "decoupled")


@keras.saving.register_keras_serializable(package="tf_deepemd")
class EpisodicSGD(keras.optimizers.SGD):
    """Keras SGD with PyTorch-style (L2, "coupled") weight decay and NaN guard.

    Args:
      coupled_weight_decay: ``wd`` added as ``wd * variable`` to every
        variable's gradient (all variables, as PyTorch, batch-norm scales
        included).
      zero_nonfinite_gradients: a variable whose gradient has any NaN/Inf
        gets a zero gradient for that step (the official meta-training
        guard), instead of poisoning the weights.
      **kwargs: `keras.optimizers.SGD` arguments (``learning_rate``,
        ``momentum``, ``nesterov``, ``gradient_accumulation_steps``, ...).
    """

    def __init__(self, coupled_weight_decay=0.0, zero_nonfinite_gradients=True, **kwargs):
        super().__init__(**kwargs)
        if coupled_weight_decay < 0:
            raise ValueError(f"`coupled_weight_decay` must be >= 0, got {coupled_weight_decay}.")
        self.coupled_weight_decay = float(coupled_weight_decay)
        self.zero_nonfinite_gradients = bool(zero_nonfinite_gradients)

    def update_step(self, gradient, variable, learning_rate):
        gradient = tf.cast(gradient, variable.dtype)
        if self.zero_nonfinite_gradients:
            finite = tf.reduce_all(tf.math.is_finite(gradient))
            gradient = tf.where(finite, gradient, tf.zeros_like(gradient))
        if self.coupled_weight_decay:
            gradient = gradient + tf.cast(self.coupled_weight_decay, variable.dtype) * variable
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.update(
            coupled_weight_decay=self.coupled_weight_decay,
            zero_nonfinite_gradients=self.zero_nonfinite_gradients,
        )
        return config


@gin.configurable
def make_optimizer(
    learning_rate,
    momentum=0.9,
    nesterov=True,
    weight_decay=5e-4,
    weight_decay_mode="coupled",
    zero_nonfinite_gradients=True,
    gradient_accumulation_steps=1,
):
    """The SGD of both training stages (official: momentum 0.9, Nesterov, wd 5e-4).

    Args:
      learning_rate: initial rate (each stage passes its own; the schedule
        is applied per epoch by `epoch_schedule` through a callback).
      momentum, nesterov: SGD momentum settings.
      weight_decay: decay factor; 0 turns it off.
      weight_decay_mode: ``'coupled'`` (PyTorch, L2 added to the gradient)
        or ``'decoupled'`` (Keras' own ``weight_decay``).
      zero_nonfinite_gradients: the official NaN guard (see `EpisodicSGD`).
      gradient_accumulation_steps: replica steps whose gradients are
        averaged into one update (1 = none); how several episodes make one
        update on one device.

    Returns:
      A `keras.optimizers.Optimizer`.
    """
    if weight_decay_mode not in WEIGHT_DECAY_MODES:
        raise ValueError(
            f"`weight_decay_mode` must be one of {WEIGHT_DECAY_MODES}, got {weight_decay_mode!r}."
        )
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be > 0, got {learning_rate}.")
    if int(gradient_accumulation_steps) < 1:
        raise ValueError(
            f"`gradient_accumulation_steps` must be >= 1, got {gradient_accumulation_steps}."
        )
    coupled = weight_decay if weight_decay_mode == "coupled" else 0.0
    decoupled = weight_decay if weight_decay_mode == "decoupled" and weight_decay else None
    return EpisodicSGD(
        learning_rate=learning_rate,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=decoupled,
        coupled_weight_decay=coupled,
        zero_nonfinite_gradients=zero_nonfinite_gradients,
        gradient_accumulation_steps=(
            int(gradient_accumulation_steps) if int(gradient_accumulation_steps) > 1 else None
        ),
    )


class StepDecay:
    """PyTorch ``StepLR`` by epoch: ``lr(e) = initial * gamma ** (e // step_epochs)``.

    A picklable callable for `keras.callbacks.LearningRateScheduler`, which
    sets the rate at the start of every epoch from the epoch index alone, so
    a resumed run continues the schedule where it stopped.
    """

    def __init__(self, initial_learning_rate, step_epochs, gamma):
        if int(step_epochs) < 1:
            raise ValueError(f"`step_epochs` must be >= 1, got {step_epochs}.")
        if not 0 < gamma <= 1:
            raise ValueError(f"`gamma` must be in (0, 1], got {gamma}.")
        self.initial_learning_rate = float(initial_learning_rate)
        self.step_epochs = int(step_epochs)
        self.gamma = float(gamma)

    def __call__(self, epoch, current_learning_rate=None):
        del current_learning_rate
        return self.initial_learning_rate * self.gamma ** (int(epoch) // self.step_epochs)

    def __repr__(self):
        return (
            f"StepDecay({self.initial_learning_rate}, step_epochs={self.step_epochs}, "
            f"gamma={self.gamma})"
        )


class CosineDecay:
    """PyTorch ``CosineAnnealingLR(T_max=epochs, eta_min=0)`` by epoch, without restarts.

    ``lr(e) = initial * (1 + cos(pi * e / epochs)) / 2`` for epoch ``e`` (from
    0): the initial rate in the first epoch, falling to near 0 in the last.
    Picklable, for `keras.callbacks.LearningRateScheduler`, like `StepDecay`.
    """

    def __init__(self, initial_learning_rate, epochs):
        if int(epochs) < 1:
            raise ValueError(f"`epochs` must be >= 1, got {epochs}.")
        self.initial_learning_rate = float(initial_learning_rate)
        self.epochs = int(epochs)

    def __call__(self, epoch, current_learning_rate=None):
        del current_learning_rate
        return self.initial_learning_rate * (1.0 + math.cos(math.pi * int(epoch) / self.epochs)) / 2.0

    def __repr__(self):
        return f"CosineDecay({self.initial_learning_rate}, epochs={self.epochs})"


LR_SCHEDULES = ("step", "cosine")


def check_lr_schedule(setting, schedule):
    """Raises a ValueError naming the gin ``setting`` unless ``schedule`` is one
    of `LR_SCHEDULES` (as the stages' other setting checks word it, without
    the backquotes of `tf_deepemd.ops.checks.check_choice`'s argument names)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"{setting} must be one of {LR_SCHEDULES}, got {schedule!r}.")


def epoch_schedule(schedule, initial_learning_rate, epochs, step_epochs, gamma):
    """A stage's learning rate by epoch: ``'step'`` (`StepDecay`, the official
    default) or ``'cosine'`` (`CosineDecay` over ``epochs``; ``step_epochs``
    and ``gamma`` unused)."""
    if schedule == "step":
        return StepDecay(initial_learning_rate, step_epochs, gamma)
    if schedule == "cosine":
        return CosineDecay(initial_learning_rate, epochs)
    raise ValueError(f"`schedule` must be one of {LR_SCHEDULES}, got {schedule!r}.")
