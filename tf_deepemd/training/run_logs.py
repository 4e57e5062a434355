"""What a stage writes while it trains: CSV rows, TensorBoard events, log lines.

Per stage folder: ``log.csv`` (one row per epoch, appended across resumed
runs, so the epoch column shows where a run continued) and ``tensorboard/``
(event files with one scalar per epoch log entry). Epochs are numbered from
1 everywhere: the console (Keras' ``Epoch 1/4``), ``log.csv`` and
TensorBoard's steps. Each epoch's metrics reach the console once: Keras'
line, or, when ``fit`` is silent (``verbose=0``), `EpochLog`'s.

`keras.callbacks.TensorBoard` cannot be used without the ``tensorboard``
package (TF 2.21's ``tf.summary.scalar`` raises ``TBNotInstalledError``);
`EpochSummaries` writes the same scalars with core ``tf.summary.write`` and
the scalar plugin's metadata, so TensorBoard, where installed, shows them.
"""

from __future__ import annotations

import logging
import os
import time

import keras
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

log = logging.getLogger(__name__)


class EpochLog(keras.callbacks.Callback):
    """One log line per epoch when ``log_lines`` (for runs whose ``fit`` is silent).

    Also adds ``train_seconds`` to the epoch's logs: the wall time from the
    epoch's start to the end of its last training step, so ``log.csv`` gives
    the seconds per training step or episode without the validation (which
    runs after the last step, in ``fit``'s validation or in an epoch-end
    callback). It must come before the callbacks that write the logs.
    """

    def __init__(self, stage, epochs, log_lines=True):
        super().__init__()
        self.stage = stage
        self.epochs = epochs
        self.log_lines = log_lines
        self._start = None
        self._last_step_end = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._last_step_end = None

    def on_train_batch_end(self, batch, logs=None):
        self._last_step_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        end = time.perf_counter()
        start = self._start or end
        if logs is not None:
            logs["train_seconds"] = (self._last_step_end or end) - start
        if not self.log_lines:
            return
        seconds = end - start
        values = ", ".join(f"{key} {value:.4g}" for key, value in sorted((logs or {}).items())
                           if isinstance(value, (int, float)))
        log.info("%s epoch %d/%d (%.1f s): %s", self.stage, epoch + 1, self.epochs, seconds, values)


class EpochCSVLogger(keras.callbacks.CSVLogger):
    """Keras' `CSVLogger` with the epochs numbered from 1, as on the console and in TensorBoard."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)


def scalar_metadata():
    """`SummaryMetadata` that TensorBoard's scalar dashboard recognises."""
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    metadata.data_class = summary_pb2.DATA_CLASS_SCALAR
    return metadata


class EpochSummaries(keras.callbacks.Callback):
    """Every numeric epoch log entry as a TensorBoard scalar (step = epoch number).

    Training entries go to ``<log_dir>/train``, ``val_*`` ones (without the
    prefix) to ``<log_dir>/validation``, Keras' own layout, so TensorBoard
    overlays e.g. training and validation accuracy.
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self._writers = {}

    def _writer(self, name):
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(os.path.join(self.log_dir, name))
        return self._writers[name]

    def on_epoch_end(self, epoch, logs=None):
        metadata = scalar_metadata()
        for key, value in sorted((logs or {}).items()):
            if not isinstance(value, (int, float)) and not hasattr(value, "dtype"):
                continue
            writer_name, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self._writer(writer_name).as_default():
                tf.summary.write(
                    "epoch_" + tag, tf.cast(value, tf.float32), step=epoch + 1, metadata=metadata
                )
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def logging_callbacks(files, epochs, keras_verbose=0):
    """``[EpochLog, EpochCSVLogger, EpochSummaries]`` writing into the stage's folder.

    Args:
      files: the stage's `tf_deepemd.run_folder.StageFiles` (``log.csv``,
        ``tensorboard/``).
      epochs: the stage's number of epochs (for the log lines).
      keras_verbose: ``fit``'s verbosity; `EpochLog` writes its line only
        when it is 0 (otherwise Keras prints the epoch's metrics).
    """
    os.makedirs(files.dir, exist_ok=True)
    return [
        EpochLog(files.stage, epochs, log_lines=not keras_verbose),
        EpochCSVLogger(files.log_csv, append=True),
        EpochSummaries(os.path.join(files.dir, "tensorboard")),
    ]
