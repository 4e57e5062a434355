"""A run's folder: its layout, files replaced atomically, best weights, its model restored.

Training (`tf_deepemd.training`) writes the folder; export, retrieval and
visualization read it. Only Python, Keras and TensorFlow are imported here,
so every package can use it::

    <model_dir>/
      config.gin, operative_config.gin   the gin settings given / used
      settings.json                      the effective settings (a resumed run must match)
      results.json                       the test stage's results
      pretrain/, meta_train/             one folder per training stage (`StageFiles`):
        resume/                          model + optimizer + epochs done, every epoch
        best.weights.h5, best.json       the episode model at the best validation score
        epochs/epoch-<n>.weights.h5      optional: the episode model after every epoch n
        done.json                        the stage's summary, once it finished
        log.csv, tensorboard/            one row / scalar per epoch
      test/                              per-episode accuracies of an unfinished test

Files are replaced atomically (write, then rename), so a kill never leaves
a half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile

import keras

log = logging.getLogger(__name__)

PRETRAIN, META_TRAIN, TEST = "pretrain", "meta_train", "test"
STAGES = (PRETRAIN, META_TRAIN, TEST)
TRAINING_STAGES = (PRETRAIN, META_TRAIN)

UNTRAINED_WARNING = (
    "No trained weights in {model_dir!r} (no best.weights.h5 of a pretrain or meta_train stage): "
    "using an UNTRAINED model with random weights. Its predictions are meaningless; use it only "
    "to try the setup. Train first with tools/train.py using the same gin files."
)


def new_file_mode():
    """The mode ``open()`` gives a new file: 0666 minus the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path, suffix=".tmp"):
    """Yields a temporary file path beside ``path`` to write; on success it replaces ``path``.

    The folders are created. On success the file gets the mode of a newly
    opened file (the temporary one is private, 0600) and is renamed onto
    ``path``; on any exception it is removed. ``suffix`` ends the temporary
    name (writers that insist on an extension need theirs).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=suffix)
    os.close(handle)
    try:
        yield temporary
        os.chmod(temporary, new_file_mode())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_json_atomically(path, payload):
    """Writes ``payload`` as JSON to ``path`` via a temporary file + rename."""
    with atomic_path(path) as temporary, open(temporary, "w") as stream:
        json.dump(payload, stream, indent=2, sort_keys=True)
        stream.write("\n")


def read_json(path):
    with open(path) as stream:
        return json.load(stream)


def save_weights_atomically(model, path):
    """``model.save_weights(path)`` through a temporary file + rename."""
    with atomic_path(path, suffix=".weights.h5") as temporary:
        model.save_weights(temporary)


class StageFiles:
    """Paths and state of one stage's folder, ``<root>/<stage>/``.

    Args:
      root: the run's folder (or a worker's scratch folder, see
        `tf_deepemd.training.strategy.writes_run_folder`).
      stage: the stage's name (sub-folder).
    """

    def __init__(self, root, stage):
        self.stage = stage
        self.dir = os.path.join(root, stage)
        self.resume_dir = os.path.join(self.dir, "resume")
        self.best_weights = os.path.join(self.dir, "best.weights.h5")
        self.best_info = os.path.join(self.dir, "best.json")
        self.done_marker = os.path.join(self.dir, "done.json")
        self.log_csv = os.path.join(self.dir, "log.csv")

    def epoch_weights(self, epoch):
        """``<stage>/epochs/epoch-<epoch>.weights.h5``: the weights after epoch ``epoch`` (from 1)."""
        return os.path.join(self.dir, "epochs", f"epoch-{int(epoch)}.weights.h5")

    def is_done(self):
        return os.path.isfile(self.done_marker)

    def done_info(self):
        return read_json(self.done_marker)

    def mark_done(self, info):
        write_json_atomically(self.done_marker, info)

    def best(self):
        """``{'epoch', 'monitor', 'value'}`` of the best epoch so far, or None."""
        return read_json(self.best_info) if os.path.isfile(self.best_info) else None

    def has_resume_checkpoint(self):
        return os.path.isfile(os.path.join(self.resume_dir, "checkpoint"))


def trained_weights(model_dir):
    """Best weights of the latest FINISHED training stage in ``model_dir``, or None."""
    for stage in reversed(TRAINING_STAGES):
        files = StageFiles(model_dir, stage)
        if files.is_done() and os.path.isfile(files.best_weights):
            return files.best_weights
    return None


def latest_weights(model_dir):
    """The weights ``tools/eval.py`` tests, else the best so far of an unfinished stage (warned).

    Returns:
      A ``.weights.h5`` path, or None when ``model_dir`` holds no weights.
    """
    if not model_dir or not os.path.isdir(model_dir):
        return None
    finished = trained_weights(model_dir)
    if finished:
        return finished
    for stage in reversed(TRAINING_STAGES):
        files = StageFiles(model_dir, stage)
        if os.path.isfile(files.best_weights):
            log.warning(
                "The %s stage in %s has not finished: using its best weights so far (%s).",
                stage, model_dir, files.best_weights,
            )
            return files.best_weights
    return None


def new_episode_model(model_factory, image_size, seed):
    """``model_factory()`` built for square RGB episodes of side ``image_size``, seeded first.

    The seed fixes the initial weights, so an untrained model is at least
    reproducible and a fresh run starts from the same weights every time.
    """
    keras.utils.set_random_seed(int(seed))
    model = model_factory()
    image = (None, int(image_size), int(image_size), 3)
    model.build([image, (None,), image])
    return model


def restore_model(model_factory, image_size, seed, model_dir=None, weights=None):
    """The run's episode model with its weights.

    Args:
      model_factory: a function returning the (unbuilt) episode model, e.g.
        the gin-bound `tf_deepemd.training.model_config.configured_model`.
      image_size, seed: as the run built it (`new_episode_model`).
      model_dir: the run's folder, where `latest_weights` looks.
      weights: a ``.weights.h5`` file to load instead.

    Returns:
      ``(model, weights_path)``; ``weights_path`` is None for an untrained
      model (a warning is logged).

    Raises:
      ValueError: ``weights`` is not a file.
    """
    if weights is not None and not os.path.isfile(weights):
        raise ValueError(f"No such weights file {weights!r}.")
    weights = weights or latest_weights(model_dir)
    model = new_episode_model(model_factory, image_size, seed)
    if weights is None:
        log.warning(UNTRAINED_WARNING.format(model_dir=model_dir))
    else:
        model.load_weights(weights)
        log.info("Loaded weights %s", weights)
    return model, weights
