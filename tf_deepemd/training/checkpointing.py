"""Resuming and best-model checkpoints of one training stage.

Each stage (``pretrain``, ``meta_train``) owns ``<model_dir>/<stage>/``
(`tf_deepemd.run_folder.StageFiles`):

* ``resume/``: a `tf.train.CheckpointManager` of the training model, its
  optimizer (momentum, accumulators, iteration count) and the number of
  finished epochs, saved at the end of every epoch. A run that is killed and
  started again with the same command restores it and continues with the
  next epoch (`keras.callbacks.BackupAndRestore` does the same for weights,
  but it cannot tell the data pipeline where to continue, and it deletes
  its backup when ``fit`` ends).
* ``best.weights.h5`` + ``best.json``: the weights of the episode model at
  the best validation accuracy so far, and which epoch/score that was
  (kept across a resume, so "best" means best over the whole run).
* ``epochs/epoch-<n>.weights.h5``: optionally, the episode model's
  weights after every epoch n (from 1; the official ``-save_all``).
* ``done.json``: written when the stage finishes; a finished stage is
  skipped by later runs and its best weights are used instead.
"""

from __future__ import annotations

import logging
import math

import keras
import tensorflow as tf

from tf_deepemd.run_folder import save_weights_atomically, write_json_atomically

log = logging.getLogger(__name__)


class ResumeState:
    """The stage's resume checkpoints: model + optimizer + number of finished epochs.

    Args:
      files: the stage's `StageFiles`.
      model, optimizer: what the stage trains.
      max_to_keep: checkpoints kept.
    """

    def __init__(self, files, model, optimizer, max_to_keep=2):
        self.stage = files.stage
        self.epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
        # Every weight by position, not `model=model`: a TF checkpoint of a
        # Keras 3 model tracks only the model's own variables, so the
        # sub-layers' non-trainable ones (batch norm's moving statistics)
        # were lost, and the trainable ones kept only through the optimizer.
        checkpoint = tf.train.Checkpoint(
            weights=list(model.weights), optimizer=optimizer, epochs_done=self.epochs_done
        )
        self.manager = tf.train.CheckpointManager(checkpoint, files.resume_dir, max_to_keep=max_to_keep)

    def restore(self):
        """Restores the latest checkpoint if any; returns the epochs already done."""
        if self.manager.latest_checkpoint is None:
            return 0
        # Everything in the checkpoint must find its variable: a mismatch
        # means the configuration changed under an existing model_dir.
        self.manager.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
        done = int(self.epochs_done.numpy())
        log.info("%s: resuming from %s after %d epoch(s)", self.stage, self.manager.latest_checkpoint, done)
        return done

    def save(self, epochs_done):
        self.epochs_done.assign(epochs_done)
        self.manager.save(checkpoint_number=epochs_done)


class ResumeCheckpoint(keras.callbacks.Callback):
    """Saves the resume checkpoint (and the finished-epoch count) after every epoch.

    Put it AFTER the callbacks that add to the epoch's logs or save the best
    model, so that a resumed run never skips their work for an epoch.
    """

    def __init__(self, state):
        super().__init__()
        self.state = state

    def on_epoch_end(self, epoch, logs=None):
        self.state.save(epoch + 1)


class BestCheckpoint(keras.callbacks.Callback):
    """Keeps the weights of ``weights_model`` at the best ``monitor`` value.

    Unlike `keras.callbacks.ModelCheckpoint`, the saved model need not be
    the one being fitted (pre-training fits a classifier but keeps the
    episode model sharing its backbone), and the best score so far is
    stored beside the weights, so a resumed run compares against it. The
    score is read once, at the start: every worker of a multi-worker run
    then takes the same decisions from the same scores.

    Args:
      weights_model: the model whose weights are saved.
      files: the stage's `StageFiles`.
      monitor: key of the epoch logs (higher is better).
    """

    def __init__(self, weights_model, files, monitor):
        super().__init__()
        self.weights_model = weights_model
        self.files = files
        self.monitor = monitor
        best = files.best()
        self.best_value = None if best is None else best["value"]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(
                f"BestCheckpoint: the epoch logs have no {self.monitor!r} (they have "
                f"{sorted(logs or {})}); put the validation callback before it."
            )
        value = float(value)
        if self.best_value is not None and not (value > self.best_value or math.isnan(self.best_value)):
            return
        self.best_value = value
        save_weights_atomically(self.weights_model, self.files.best_weights)
        write_json_atomically(
            self.files.best_info, {"epoch": int(epoch), "monitor": self.monitor, "value": value}
        )
        log.info("%s: new best %s = %.4f at epoch %d", self.files.stage, self.monitor, value, epoch + 1)


class EpochWeights(keras.callbacks.Callback):
    """Keeps the weights of ``weights_model`` after every epoch (`StageFiles.epoch_weights`).

    Put it BEFORE `ResumeCheckpoint`: a resumed run then has the file of
    every finished epoch (a killed epoch is trained again and saved then).
    """

    def __init__(self, weights_model, files):
        super().__init__()
        self.weights_model = weights_model
        self.files = files

    def on_epoch_end(self, epoch, logs=None):
        save_weights_atomically(self.weights_model, self.files.epoch_weights(epoch + 1))


def finish_stage(model, files, epochs):
    """Loads the stage's best weights into `model`, marks the stage done.

    Returns the stage summary ``{'epochs', 'best_epoch', 'best_val_accuracy'
    (in %), 'weights'}`` also written to ``done.json``.
    """
    best = files.best()
    if best is None:
        raise RuntimeError(f"{files.stage}: finished without a best checkpoint in {files.dir}.")
    model.load_weights(files.best_weights)
    info = {
        "epochs": epochs,
        "best_epoch": best["epoch"] + 1,
        "best_val_accuracy": 100.0 * best["value"],
        "weights": files.best_weights,
    }
    files.mark_done(info)
    log.info("%s: done; best val accuracy %.2f %% at epoch %d", files.stage, info["best_val_accuracy"],
             info["best_epoch"])
    return info
