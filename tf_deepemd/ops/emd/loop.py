"""Loop engineering: the interior-point `tf.while_loop` over a batch, the
compaction of its last running problems, and the split into shards."""

import collections
import os

import tensorflow as tf

from tf_deepemd.ops.emd import iteration

# Fraction of a batch still iterating below which the rest is gathered into a
# smaller batch. DeepEMD-style batches converge together except a tail of a
# few percent that needs 1-3 more iterations: compacted, that tail no longer
# pays the per-op cost of the whole batch.
_COMPACTION_FRACTION = 0.25
# Fewest problems per concurrent loop: below that a second loop adds more
# per-op overhead than it saves.
_MIN_PROBLEMS_PER_SHARD = 32


def default_num_shards():
    """Loops `solve_emd` splits a batch into by default: one per CPU core that
    TensorFlow's inter-op thread pool uses (at most 8), or 1 when a GPU is
    visible (its kernels do not gain from concurrent loops)."""
    if tf.config.list_logical_devices("GPU"):
        return 1
    threads = tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count() or 1
    return max(1, min(threads, 8))


LoopResult = collections.namedtuple("LoopResult", ["best", "iterations", "compactions"])
LoopResult.__doc__ = """The best `iteration.Iterate` of each problem, the iterations run
(int32 scalar) and how often the running problems were gathered (int32)."""


def _batch_free(value):
    return tf.TensorShape([None]).concatenate(value.shape[1:])


def interior_point(problem, tolerance, max_iterations):
    """Mehrotra predictor-corrector on a `newton.TransportProblem`.

    Whenever at most `_COMPACTION_FRACTION` of the problems in the loop are
    still running, the best iterates of all are recorded and the running ones
    are gathered into a smaller batch that iterates on alone.

    Args:
      problem: the `newton.TransportProblem`.
      tolerance: [B]; a problem stops once its duality gap and marginal
        residuals are below its tolerance.
      max_iterations: iteration cap (Python int).

    Returns:
      A `LoopResult`.
    """
    state = iteration.initial_state(problem, tolerance)
    positions = tf.range(tf.shape(tolerance)[0])
    # What the loop compacts: the problem, tolerance and state, and the
    # positions of its problems in the batch.
    compacted = (problem, tolerance, state, positions)

    def record(recorded, compacted):
        *_, state, positions = compacted
        return tf.nest.map_structure(
            lambda old, new: tf.tensor_scatter_nd_update(old, positions[:, None], new),
            recorded, state.best,
        )

    def body(step, compactions, recorded, compacted):
        problem, tolerance, state, positions = compacted
        state = iteration.iteration(problem, state, tolerance)
        compacted = (problem, tolerance, state, positions)
        running = ~state.stopped
        num_running = tf.reduce_sum(tf.cast(running, tf.int32))
        batch = tf.size(running)

        def compact():
            kept = tf.where(running)[:, 0]
            return record(recorded, compacted), tf.nest.map_structure(
                lambda value: tf.gather(value, kept), compacted
            )

        few_running = tf.cast(num_running, tf.float32) <= _COMPACTION_FRACTION * tf.cast(
            batch, tf.float32
        )
        # (Not when all have stopped: the loop ends and records them anyway.)
        compacting = (num_running > 0) & (num_running < batch) & few_running
        recorded, compacted = tf.cond(compacting, compact, lambda: (recorded, compacted))
        return step + 1, compactions + tf.cast(compacting, tf.int32), recorded, compacted

    def cond(unused_step, unused_compactions, unused_recorded, compacted):
        return ~tf.reduce_all(compacted[2].stopped)

    iterations, compactions, recorded, compacted = tf.while_loop(
        cond, body, (tf.constant(0), tf.constant(0), state.best, compacted),
        shape_invariants=(
            tf.TensorShape([]),
            tf.TensorShape([]),
            tf.nest.map_structure(lambda value: value.shape, state.best),
            tf.nest.map_structure(_batch_free, compacted),
        ),
        maximum_iterations=max_iterations,
    )
    return LoopResult(record(recorded, compacted), iterations, compactions)


# One traced loop for every call with the same structure: shards, eager
# calls and both branches of the dummy/no-dummy choice share it. Written with
# `tf.while_loop` and `tf.cond`, it has nothing for AutoGraph to convert, so
# its first trace does not pay for a conversion (benchmarks/first_trace.py).
_interior_point_function = tf.function(interior_point, reduce_retracing=True, autograph=False)


def solve_sharded(problem, tolerance, *, max_iterations, num_shards):
    """`interior_point` on `num_shards` consecutive parts of the batch, run
    concurrently by TensorFlow's inter-op thread pool inside a graph (eager
    calls, and batches known to be small, are solved in one loop). Returns
    (best iterates, iterations)."""
    static_batch = problem.cost.shape[0]
    if static_batch is not None:
        num_shards = max(1, min(num_shards, static_batch // _MIN_PROBLEMS_PER_SHARD))
    if num_shards == 1 or tf.executing_eagerly():
        return _interior_point_function(problem, tolerance, max_iterations)[:2]
    batch = tf.shape(tolerance)[0]
    sizes = batch // num_shards + tf.cast(tf.range(num_shards) < batch % num_shards, tf.int32)
    inputs = (problem, tolerance)
    parts = [tf.split(value, sizes, num=num_shards) for value in tf.nest.flatten(inputs)]
    shards = [tf.nest.pack_sequence_as(inputs, [part[i] for part in parts])
              for i in range(num_shards)]
    results = [_interior_point_function(*shard, max_iterations) for shard in shards]
    best = tf.nest.map_structure(lambda *parts: tf.concat(parts, axis=0),
                                 *(result.best for result in results))
    return best, tf.reduce_max(tf.stack([result.iterations for result in results]))
