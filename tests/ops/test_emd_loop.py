"""The solver's loop engineering: compaction of the last running problems, shards."""

import numpy as np
import tensorflow as tf

import tf_deepemd
from tf_deepemd.ops.emd import loop, newton


def easy_and_slow_problems(rng, num_easy=30, num_slow=3, n=6):
    """Balanced problems: uniform costs and masses (~8 iterations) and a few
    with masses and costs over many orders of magnitude (12-13 iterations),
    the slow ones spread through the batch."""
    cost = rng.uniform(size=(num_easy + num_slow, n, n))
    source = rng.uniform(0.5, 1.5, size=(num_easy + num_slow, n))
    target = rng.uniform(0.5, 1.5, size=(num_easy + num_slow, n))
    slow = rng.choice(num_easy + num_slow, size=num_slow, replace=False)
    cost[slow] = 10.0 ** rng.uniform(-6, 0, size=(num_slow, n, n))
    source[slow] = 10.0 ** rng.uniform(-4, 4, size=(num_slow, n))
    target[slow] = 10.0 ** rng.uniform(-4, 4, size=(num_slow, n))
    target *= source.sum(-1, keepdims=True) / target.sum(-1, keepdims=True)
    return cost, source, target


def normalised_problem(cost, source, target):
    """The loop's input: unit masses, costs in [0, 1]."""
    low = cost.min(axis=(-2, -1), keepdims=True)
    cost = (cost - low) / (cost.max(axis=(-2, -1), keepdims=True) - low)
    total = source.sum(-1, keepdims=True)
    return newton.transport_problem(*(tf.constant(x) for x in (cost, source / total,
                                                               target / total)))


def test_compaction_gives_every_problem_its_solo_solution(rng):
    """Each problem of a batch that compacts gets the solution it gets alone:
    the gathered problems are scattered back into their own slots, and a
    stopped problem's result no longer changes while others run on."""
    cost, source, target = easy_and_slow_problems(rng)
    tolerance = tf.fill([len(cost)], tf.constant(1e-10, tf.float64))
    batch = loop.interior_point(normalised_problem(cost, source, target), tolerance, 100)
    assert batch.compactions.numpy() >= 1, "the test batch must trigger compaction"
    for i in range(len(cost)):
        alone = loop.interior_point(
            normalised_problem(cost[i:i + 1], source[i:i + 1], target[i:i + 1]),
            tolerance[:1], 100,
        )
        assert alone.compactions.numpy() == 0
        # Equal up to rounding: batched kernels do not promise the bits of
        # single-problem ones; a problem scattered into another's slot
        # would be off by the size of the values.
        for field, value in alone.best._asdict().items():
            np.testing.assert_allclose(getattr(batch.best, field)[i:i + 1], value, rtol=1e-9,
                                       atol=1e-14, err_msg=f"problem {i}, {field}")

    # The public API, which adds the normalisation around the loop.
    result = tf_deepemd.solve_emd(cost, source, target, num_shards=1)
    for i in range(len(cost)):
        alone = tf_deepemd.solve_emd(cost[i:i + 1], source[i:i + 1], target[i:i + 1])
        np.testing.assert_allclose(result.flow[i:i + 1], alone.flow, rtol=1e-9,
                                   atol=1e-14 * source[i].sum(), err_msg=f"problem {i}")
