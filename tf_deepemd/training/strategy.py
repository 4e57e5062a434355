"""Distribution strategies by name: one device, one machine, several machines.

Episodic training distributes EPISODES, not images: each replica gets whole
episodes (the episode dataset is batched by the number of replicas and
`tf.distribute` splits that batch), computes its episode's loss, and the
gradients are averaged across replicas, the official "tasks per update"
(``-bs``) done in parallel. Pre-training splits its image batches as usual.
"""

from __future__ import annotations

import json
import os

import gin
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


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
        return tf.distribute.MirroredStrategy(devices=list(devices))
    raw = os.environ.get("TF_CONFIG")
    if raw:
        try:
            json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy):
    """Whether this worker writes the run's files (checkpoints, logs, results).

    Multi-worker runs write from the chief (worker 0, or the ``chief`` task);
    the others save into a scratch folder (the collective save still needs
    every worker to take part).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and
                                     "chief" not in resolver.cluster_spec().as_dict())


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
