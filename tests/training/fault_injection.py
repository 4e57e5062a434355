"""Test-only faults in tool runs: a SIGKILL or an error at a chosen point of a run.

Run a tool through this file to make the callbacks below bindable::

    python tests/training/fault_injection.py tools/train.py --gin_bindings=... \\
        --gin_bindings="run_experiment.callbacks = [@FaultAt()]"

`FaultAt` reads the point from the environment, so the same command with
and without the variable is the same run, interrupted or not:

* ``TEST_KILL_AT=<stage>:<n>``: SIGKILL after the n-th training step of
  ``pretrain`` or ``meta_train`` in this process, or after the n-th
  episode of the ``test`` stage;
* ``TEST_FAIL_AT=<stage>:<n>``: raise a ValueError there instead (a runtime
  error, which the tool must report with its traceback).

``TEST_OP_DETERMINISM=1`` enables TensorFlow's op determinism first.
"""

import os
import runpy
import signal
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gin  # noqa: E402
import keras  # noqa: E402

STAGE_OF_MODEL = {"PretrainClassifier": "pretrain", "DeepEMD": "meta_train"}


class RuntimeFault(ValueError):
    """The error `FaultAt` raises (a ValueError, as TensorFlow's runtime errors often are)."""


def parse_point(variable):
    value = os.environ.get(variable)
    if not value:
        return None
    stage, count = value.split(":")
    return stage, int(count)


@gin.register
class FaultAt(keras.callbacks.Callback):
    """SIGKILLs this process, or raises, at the point named by the environment (module doc)."""

    def __init__(self):
        super().__init__()
        self.kill_at = parse_point("TEST_KILL_AT")
        self.fail_at = parse_point("TEST_FAIL_AT")
        self.counts = {}

    def _count(self, stage):
        self.counts[stage] = self.counts.get(stage, 0) + 1
        for point, act in ((self.kill_at, self._kill), (self.fail_at, self._fail)):
            if point == (stage, self.counts[stage]):
                act(stage)

    @staticmethod
    def _kill(stage):
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    @staticmethod
    def _fail(stage):
        raise RuntimeFault(f"injected runtime fault in {stage}")

    def on_train_batch_end(self, batch, logs=None):
        self._count(STAGE_OF_MODEL[type(self.model).__name__])

    def on_predict_batch_end(self, batch, logs=None):
        self._count("test")


def main():
    if os.environ.get("TEST_OP_DETERMINISM"):
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    tool = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(tool)))
    runpy.run_path(tool, run_name="__main__")


if __name__ == "__main__":
    main()
