"""Distribution strategies by name: one device, one machine, several machines.

Episodic training distributes EPISODES, not images: each replica gets whole
episodes (the episode dataset is batched by the number of replicas and
`tf.distribute` splits that batch), computes its episode's loss, and the
gradients are averaged across replicas, the official "tasks per update"
(``-bs``) done in parallel. Pre-training splits its image batches as usual.

Keras 3's ``fit`` calls ``strategy.reduce`` in two ways TensorFlow's
strategies reject or mistype (keras-team/keras#20585): on the whole nested
first batch (to build the compiled loss and metrics from its shapes and
dtypes) and with ``axis=0`` on the scalar logs of multi-worker runs. The
strategies made here reduce nested values leaf by leaf, keeping each leaf's
dtype, and reduce scalars over replicas only.
"""

from __future__ import annotations

import functools
import json
import os

import gin
import keras
import numpy as np
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


class _LeafwiseReduce:
    """``reduce`` of nested values leaf by leaf, in each leaf's dtype (see the module doc)."""

    def reduce(self, reduce_op, value, axis=None):
        return tf.nest.map_structure(functools.partial(self._reduce_leaf, reduce_op, axis=axis), value)

    def _reduce_leaf(self, reduce_op, value, axis=None):
        local = self.experimental_local_results(value)[0]
        if axis is not None and local.shape.rank == 0:
            axis = None
        return tf.cast(super().reduce(reduce_op, value, axis), local.dtype)


class MirroredStrategy(_LeafwiseReduce, tf.distribute.MirroredStrategy):
    """`tf.distribute.MirroredStrategy` whose ``reduce`` works for Keras' ``fit``."""


class MultiWorkerMirroredStrategy(_LeafwiseReduce, tf.distribute.MultiWorkerMirroredStrategy):
    """`tf.distribute.MultiWorkerMirroredStrategy` whose ``reduce`` works for Keras' ``fit``."""


@gin.configurable
def make_strategy(kind="default", devices=None):
    """A `tf.distribute.Strategy`.

    Args:
      kind: ``'default'`` (the default strategy: one device, no
        distribution), ``'mirrored'`` (`MirroredStrategy` over the local
        GPUs, or the given ``devices``, e.g. logical CPUs) or
        ``'multi_worker'`` (`MultiWorkerMirroredStrategy`; the cluster comes
        from the ``TF_CONFIG`` environment variable, a single local worker
        without it).
      devices: device names for ``'mirrored'`` (None: all GPUs, else the CPU).

    Raises:
      ValueError: unknown kind, or ``TF_CONFIG`` that is not valid JSON.
    """
    if kind not in STRATEGIES:
        raise ValueError(f"Unknown strategy {kind!r}; expected one of {STRATEGIES}.")
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        if devices is None:
            # Mirrored over every logical CPU when there is no GPU: this is
            # what `set_logical_device_configuration` splits a CPU into.
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return MirroredStrategy(devices=list(devices))
    raw = os.environ.get("TF_CONFIG")
    if raw:
        try:
            json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
    return MultiWorkerMirroredStrategy()


def writes_run_folder(strategy):
    """Whether this worker writes the run's folder (checkpoints, logs, results).

    Multi-worker runs write from the chief (worker 0, or the ``chief`` task);
    the others save into a scratch folder of their own (saving a checkpoint
    still needs every worker to take part).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and
                                    "chief" not in resolver.cluster_spec().as_dict())


class SyncMovingStatistics(keras.callbacks.Callback):
    """Averages the per-replica moving statistics (batch norm) over all replicas after every epoch.

    Keras keeps a non-trainable variable without aggregation (batch norm's
    moving mean and variance) per replica, each updated from its replica's
    batches only; the replicas, and the workers of a multi-worker run,
    would validate, save and test different models. Put it before the
    callbacks that validate or save. Nothing to do on one replica.
    """

    def __init__(self, strategy):
        super().__init__()
        self.strategy = strategy

    def on_epoch_end(self, epoch, logs=None):
        if self.strategy.num_replicas_in_sync == 1:
            return
        variables = [v for v in self.model.non_trainable_variables
                     if v.aggregation == "none" and "float" in str(v.dtype)]
        if not variables:
            return
        # One all-reduce of all of them, flattened into one float32 vector.
        local = self.strategy.run(
            lambda: tf.concat([tf.reshape(tf.cast(v.value, tf.float32), [-1]) for v in variables], 0))
        mean = self.strategy.reduce("MEAN", local, axis=None)
        offset = 0
        for variable in variables:
            size = int(np.prod(variable.shape))
            variable.assign(tf.cast(tf.reshape(mean[offset:offset + size], variable.shape), variable.dtype))
            offset += size


def split_logical_cpus(count):
    """Splits the first CPU into ``count`` logical devices (before any TF op).

    For trying ``'mirrored'`` on a machine without GPUs (and for tests);
    raises RuntimeError once TensorFlow has initialised its devices.
    """
    if int(count) < 2:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(int(count))]
    )
