"""Test-wide settings: Keras backend, quiet logs, a fixed thread count, seeds.

TensorFlow's threading can only be configured before its first op, so this
runs at collection time, before any test module imports tf_deepemd.

Seeds: every run uses the base seed `TEST_SEED` (env; `DEFAULT_TEST_SEED`
when unset). Each test's seed is derived from the base seed and the test's
node id, so a test draws the same numbers whichever tests run with it. Before
each test, Python's, NumPy's global, TensorFlow's and Keras' seeds are set to
it (unseeded initialisers and ops are reproducible too), and the `rng` /
`test_seed` fixtures hand it out. A failing test's report says which
``TEST_SEED=...`` replays it; ``TEST_SEED=7 pytest ...`` runs everything on
other numbers.
"""

import os
import zlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# The solver's small batched ops were measured as fast on 1 intra-op thread as
# on 2; two inter-op threads keep tf.data pipelines moving.
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(2)


DEFAULT_TEST_SEED = 20260101


def base_seed() -> int:
    value = os.environ.get("TEST_SEED", "").strip()
    if not value:
        return DEFAULT_TEST_SEED
    try:
        return int(value)
    except ValueError:
        raise pytest.UsageError(f"TEST_SEED must be an integer, got {value!r}") from None


BASE_SEED = base_seed()


def seed_for(node_id: str) -> int:
    """The seed of a test (or of a module, for module-scoped fixtures): a
    function of `BASE_SEED` and the pytest node id only."""
    entropy = [BASE_SEED % (1 << 63), zlib.crc32(node_id.encode())]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def replay_hint(node_id: str) -> str:
    return f"replay with: TEST_SEED={BASE_SEED} pytest '{node_id}'"


def pytest_report_header(config):
    source = "from TEST_SEED" if os.environ.get("TEST_SEED", "").strip() else "default; set TEST_SEED to vary"
    return f"test seeds: base {BASE_SEED} ({source}), one per test derived from it and the test id"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # Before any fixture of the test is set up, so unseeded module-scoped
    # fixtures created for it are reproducible as well.
    seed = seed_for(item.nodeid)
    item.user_properties.append(("seed", seed))
    tf.keras.utils.set_random_seed(seed)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        report.sections.append(
            ("test seed", f"{replay_hint(item.nodeid)}\n(this test's seed: {seed_for(item.nodeid)})")
        )
    return report


@pytest.fixture
def test_seed(request) -> int:
    """This test's seed (an int < 2**32), for code that takes a seed."""
    return seed_for(request.node.nodeid)


@pytest.fixture
def rng(test_seed):
    """A NumPy generator seeded with this test's seed."""
    return np.random.default_rng(test_seed)


@pytest.fixture(scope="module")
def module_rng(request):
    """A NumPy generator for module-scoped fixtures, seeded from the module's id."""
    return np.random.default_rng(seed_for(request.node.nodeid))


# The solver suites run once per implementation: the compiled kernel and the
# stock-op interior point (`tf_deepemd.ops.emd.stock_ops_only`). A module
# opts in with `pytestmark = pytest.mark.usefixtures("emd_implementation")`;
# a test limited to some of them is marked
# `@pytest.mark.emd_implementations("tf_ops")`.
EMD_IMPLEMENTATIONS = ("kernel", "tf_ops")


def pytest_generate_tests(metafunc):
    if "emd_implementation" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("emd_implementations")
        metafunc.parametrize("emd_implementation", marker.args if marker else EMD_IMPLEMENTATIONS,
                             indirect=True)


@pytest.fixture
def emd_implementation(request):
    """'kernel' or 'tf_ops'; the solver calls of the test use it."""
    from tf_deepemd.ops.emd import kernel_available, kernel_load_error, stock_ops_only

    if request.param == "kernel":
        assert kernel_available(), kernel_load_error()
        yield "kernel"
    else:
        with stock_ops_only():
            yield "tf_ops"
