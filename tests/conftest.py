"""Test-wide settings: Keras backend, quiet logs and a fixed thread count.

TensorFlow's threading can only be configured before its first op, so this
runs at collection time, before any test module imports tf_deepemd.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# The solver's small batched ops were measured as fast on 1 intra-op thread as
# on 2; two inter-op threads keep tf.data pipelines moving.
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(2)


@pytest.fixture
def rng(request):
    """A NumPy generator with a fresh seed per test, printed on failure;
    `TEST_SEED=<seed> pytest ...` replays one."""
    seed = int(os.environ.get("TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    request.node.user_properties.append(("seed", seed))
    print(f"numpy seed: {seed}")
    return np.random.default_rng(seed)
