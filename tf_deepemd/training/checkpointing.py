"""Resuming and best-model checkpoints of one training stage.

Each stage (``pretrain``, ``meta_train``) owns ``<model_dir>/<stage>/``:

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
* ``done.json``: written when the stage finishes; a finished stage is
  skipped by later runs and its best weights are used instead.

Files are replaced atomically (write, then rename), so a kill never leaves
a half-written best model or marker behind.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile

import keras
import tensorflow as tf

log = logging.getLogger(__name__)

BEST_WEIGHTS = "best.weights.h5"


def write_json_atomically(path, payload):
    """Writes ``payload`` as JSON to ``path`` via a temporary file + rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(payload, stream, indent=2, sort_keys=True)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def read_json(path):
    with open(path) as stream:
        return json.load(stream)


class StageFiles:
    """Paths and state of one stage's folder.

    Args:
      model_dir: the run's folder.
      stage: stage name (sub-folder).
      chief: False on non-chief workers of a multi-worker run, which must
        take part in saving but write to a scratch folder instead.
    """

    def __init__(self, model_dir, stage, chief=True):
        self.stage = stage
        self.chief = chief
        self.dir = os.path.join(model_dir, stage)
        if not chief:
            self.dir = os.path.join(model_dir, "worker_scratch", f"{stage}-{os.getpid()}")
        self.resume_dir = os.path.join(self.dir, "resume")
        self.best_weights = os.path.join(self.dir, BEST_WEIGHTS)
        self.best_info = os.path.join(self.dir, "best.json")
        self.done_marker = os.path.join(self.dir, "done.json")

    def is_done(self):
        return os.path.isfile(self.done_marker)

    def done_info(self):
        return read_json(self.done_marker)

    def mark_done(self, info):
        write_json_atomically(self.done_marker, info)

    def best(self):
        """``{'epoch', 'monitor', 'value'}`` of the best epoch so far, or None."""
        return read_json(self.best_info) if os.path.isfile(self.best_info) else None

    def resume_manager(self, model, optimizer, max_to_keep=2):
        """`(CheckpointManager, epoch variable)` over model + optimizer + epochs done."""
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epochs_done=epoch)
        manager = tf.train.CheckpointManager(checkpoint, self.resume_dir, max_to_keep=max_to_keep)
        return manager, epoch

    def restore(self, manager, epoch):
        """Restores the latest resume checkpoint if any; returns the epochs already done."""
        if manager.latest_checkpoint is None:
            return 0
        # Everything in the checkpoint must find its variable: a mismatch
        # means the configuration changed under an existing model_dir.
        manager.checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        done = int(epoch.numpy())
        log.info("%s: resuming from %s after %d epoch(s)", self.stage, manager.latest_checkpoint, done)
        return done


def save_weights_atomically(model, path):
    """``model.save_weights(path)`` through a temporary file + rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".tmp-{os.getpid()}.weights.h5")
    model.save_weights(temporary)
    os.replace(temporary, path)


class ResumeCheckpoint(keras.callbacks.Callback):
    """Saves the resume checkpoint (and the finished-epoch count) after every epoch.

    Put it AFTER the callbacks that add to the epoch's logs or save the best
    model, so that a resumed run never skips their work for an epoch.
    """

    def __init__(self, manager, epoch_variable):
        super().__init__()
        self.manager = manager
        self.epoch_variable = epoch_variable

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_variable.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)


class BestCheckpoint(keras.callbacks.Callback):
    """Keeps the weights of ``weights_model`` at the best ``monitor`` value.

    Unlike `keras.callbacks.ModelCheckpoint`, the saved model need not be
    the one being fitted (pre-training fits a classifier but keeps the
    episode model sharing its backbone), and the best score so far is
    stored beside the weights, so a resumed run compares against it.

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

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(
                f"BestCheckpoint: the epoch logs have no {self.monitor!r} (they have "
                f"{sorted(logs or {})}); put the validation callback before it."
            )
        value = float(value)
        best = self.files.best()
        if best is not None and not (value > best["value"] or math.isnan(best["value"])):
            return
        save_weights_atomically(self.weights_model, self.files.best_weights)
        write_json_atomically(
            self.files.best_info, {"epoch": int(epoch), "monitor": self.monitor, "value": value}
        )
        log.info("%s: new best %s = %.4f at epoch %d", self.files.stage, self.monitor, value, epoch + 1)


def finish_stage(stage, model, files, epochs):
    """Loads the stage's best weights into `model`, marks the stage done.

    Returns the stage summary ``{'epochs', 'best_epoch', 'best_val_accuracy'
    (in %), 'weights'}`` also written to ``done.json``.
    """
    best = files.best()
    if best is None:
        raise RuntimeError(f"{stage}: finished without a best checkpoint in {files.dir}.")
    model.load_weights(files.best_weights)
    info = {
        "epochs": epochs,
        "best_epoch": best["epoch"] + 1,
        "best_val_accuracy": 100.0 * best["value"],
        "weights": files.best_weights,
    }
    files.mark_done(info)
    log.info("%s: done; best val accuracy %.2f %% at epoch %d", stage, info["best_val_accuracy"], info["best_epoch"])
    return info
