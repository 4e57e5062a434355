"""The solver's public API: `solve_emd`, `emd`, `EMDResult`; input validation
and the flattening of the broadcast batch."""

import collections
from typing import Any, Optional, Union

import numpy as np
import tensorflow as tf

from tf_deepemd.ops.emd import balancing, kernel, loop
from tf_deepemd.ops.emd.implementation import resolve_implementation

# Anything `tf.convert_to_tensor` takes: tensors, NumPy arrays, nested lists.
TensorLike = Any

EMDResult = collections.namedtuple(
    "EMDResult",
    [
        "flow",
        "transport_cost",
        "distance",
        "source_potentials",
        "target_potentials",
        "converged",
        "num_iterations",
    ],
)
EMDResult.__doc__ = """Solution of a batch of EMD problems (see `solve_emd`).

Fields (`...` = the broadcast batch shape, dtype = the input dtype):
  flow: [..., N, M] optimal transport plan.
  transport_cost: [...] `sum(cost * flow)` (the work; no L2 term).
  distance: [...] `transport_cost / sum(flow)`, Rubner's Earth Mover's
    Distance (0 where no mass moves). `cv2.EMD` returns the same for equal
    totals; for unequal ones it divides by the larger total instead.
  source_potentials: [..., N], target_potentials: [..., M] dual potentials
    (u, v) of the balanced problem; for the linear program
    `cost[i, j] >= u[i] + v[j]` with equality wherever flow > 0, and
    `transport_cost == sum(u * source_weights) + sum(v * target_weights)`.
    Balanced problems leave a constant free (u + t, v - t); it is fixed so
    that both sums are equal. Not differentiable (stop-gradient).
  converged: [...] bool: the kernel reached optimality (always, barring a
    pivot cap that is not met in practice); the stock-op solver met its
    tolerance within `max_iterations`.
  num_iterations: scalar int32, interior-point iterations run for the batch
    (0 for the kernel, which has none).
"""


# The stock-op solver is written with explicit `tf.while_loop` and `tf.cond`.
# Called from a user's own `tf.function`, AutoGraph would convert all of it,
# which only costs time at the first call and changes nothing
# (benchmarks/first_trace.py measures the first call).
@tf.autograph.experimental.do_not_convert
def solve_emd(
    cost: TensorLike,
    source_weights: TensorLike,
    target_weights: TensorLike,
    *,
    l2_strength: Union[float, tf.Tensor] = 0.0,
    implementation: str = "auto",
    tolerance: Optional[float] = None,
    max_iterations: int = 100,
    num_shards: Optional[int] = None,
    validate_args: bool = True,
    name: Optional[str] = None,
) -> EMDResult:
    """Solves a batch of EMD (transportation) problems; see the module docstring.

    Args:
      cost: [..., N, M] float tensor (float16/32/64), cost of moving a unit of
        mass from source node i to target node j.
      source_weights: [..., N] non-negative masses of the source nodes.
      target_weights: [..., M] non-negative masses of the target nodes. The
        batch dimensions of the three inputs broadcast against each other.
      l2_strength: float >= 0; adds `l2_strength / 2 * ||flow||^2` to the
        objective (the official DeepEMD 'L2' form). May be a scalar tensor of
        any float dtype (the flow is differentiable with respect to it); a
        Python or NumPy 0 selects the cheaper linear-program iteration.
      implementation: 'kernel', the compiled C++ op (CPU; exact: the
        transportation simplex for the linear program, semismooth Newton
        finished on the active set for the L2 form; exact gradients);
        'tf_ops', the interior-point method built from stock TensorFlow ops
        (runs on GPUs and in SavedModels that stock TensorFlow Serving
        loads); 'auto' (default), the kernel when it is built and no GPU is
        visible, else 'tf_ops' (see `tf_deepemd.ops.emd.kernel_available`).
        `tolerance`, `max_iterations` and `num_shards` concern 'tf_ops' only.
      tolerance: stopping tolerance on the duality gap and the residuals of
        the problem rescaled to unit total mass and unit cost range; default
        1e-10 for float64 and 1e-7 for lower precision inputs.
      max_iterations: cap on interior-point iterations (typically 10-25 are
        needed); problems still above the tolerance then report
        `converged=False`.
      num_shards: inside a `tf.function`, the batch is split into this many
        parts, each solved by its own loop, which TensorFlow's inter-op
        thread pool runs concurrently (the operations of one loop are too
        small to parallelise internally), at most one part per 32 problems
        when the batch size is static. Eager calls solve the batch in one
        loop. Default: `default_num_shards()`.
      validate_args: check at run time that the cost is finite, the weights
        are finite and non-negative, and every problem has some mass on both
        sides (tf.errors.InvalidArgumentError otherwise). Without the checks,
        a problem whose weights on one side are all zero gets the zero flow.
      name: name scope.

    Returns:
      An `EMDResult`. Computation is in float64 whatever the input dtype; the
      outputs have the input dtype. `flow`, `transport_cost` and `distance`
      are differentiable with respect to all three inputs: the kernel's
      gradient is the exact derivative of the solution (at a degenerate
      vertex, that of the optimal basis it returns; see
      `tf_deepemd.ops.emd.kernel`), the stock-op solver's the KKT
      derivative at its final iterate.

    Raises:
      ValueError: on non-float inputs, wrong ranks or mismatched shapes.

    Example: one unit of mass more at the source than the target takes; the
    flow moves what the target can hold at the least cost.

    >>> import tensorflow as tf
    >>> import tf_deepemd
    >>> cost = tf.constant([[0.0, 1.0], [1.0, 0.0]])
    >>> result = tf_deepemd.solve_emd(cost, tf.constant([0.5, 1.5]), tf.constant([1.0, 1.0]))
    >>> result.flow.numpy().round(4)
    array([[0.5, 0. ],
           [0.5, 1. ]], dtype=float32)
    >>> round(float(result.transport_cost), 4), round(float(result.distance), 4)
    (0.5, 0.25)
    >>> bool(result.converged)
    True
    """
    return _solve(cost, source_weights, target_weights, l2_strength=l2_strength,
                  implementation=implementation, tolerance=tolerance,
                  max_iterations=max_iterations, num_shards=num_shards,
                  validate_args=validate_args, name=name or "solve_emd", flow_only=False)


def _solve(cost, source_weights, target_weights, *, l2_strength, implementation, tolerance,
           max_iterations, num_shards, validate_args, name, flow_only):
    """`solve_emd`, or only its flow (fewer ops for eager callers of `emd`)."""
    with tf.name_scope(name):
        cost, source_weights, target_weights = _converted_inputs(
            cost, source_weights, target_weights
        )
        dtype = cost.dtype
        num_rows, num_cols = _check_shapes(cost, source_weights, target_weights)
        l2_strength, linear = _checked_l2_strength(l2_strength)
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}.")
        num_shards = loop.default_num_shards() if num_shards is None else int(num_shards)
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}.")
        if tolerance is None:
            tolerance = balancing.default_tolerance(dtype)
        elif not tolerance > 0:
            raise ValueError(f"tolerance must be > 0, got {tolerance}.")
        batch_shape = _batch_shape(cost, source_weights, target_weights)
        if resolve_implementation(implementation) == "kernel":
            flat_cost, flow, source_potentials, target_potentials, converged = _kernel_solve(
                batch_shape, cost, source_weights, target_weights, l2_strength, validate_args
            )
            num_iterations = tf.constant(0, tf.int32)
        else:
            if validate_args:
                with tf.control_dependencies(
                    _runtime_checks(cost, source_weights, target_weights, l2_strength)
                ):
                    cost = tf.identity(cost)
            flat_cost, flow, source_potentials, target_potentials, converged, num_iterations = (
                _interior_point_solve(
                    batch_shape, cost, source_weights, target_weights, l2_strength, linear,
                    num_rows, num_cols, tolerance=tolerance, max_iterations=max_iterations,
                    num_shards=num_shards,
                )
            )

        def unflatten(value, event_shape):
            return tf.cast(_unflattened(value, batch_shape, event_shape), dtype)

        rows = num_rows if num_rows is not None else tf.shape(cost)[-2]
        cols = num_cols if num_cols is not None else tf.shape(cost)[-1]
        if flow_only:
            return unflatten(flow, [rows, cols])
        transport_cost = tf.reduce_sum(flat_cost * flow, axis=[-2, -1])
        distance = tf.math.divide_no_nan(transport_cost, tf.reduce_sum(flow, axis=[-2, -1]))
        return EMDResult(
            flow=unflatten(flow, [rows, cols]),
            transport_cost=unflatten(transport_cost, []),
            distance=unflatten(distance, []),
            source_potentials=unflatten(tf.stop_gradient(source_potentials), [rows]),
            target_potentials=unflatten(tf.stop_gradient(target_potentials), [cols]),
            converged=_unflattened(converged, batch_shape, []),
            num_iterations=num_iterations,
        )


def _kernel_solve(batch_shape, cost, source_weights, target_weights, l2_strength,
                  validate_args):
    """The compiled kernel on the flattened batch, in float32 or float64."""
    compute_dtype = tf.float64 if cost.dtype == tf.float64 else tf.float32
    flat_cost, flat_source, flat_target = _flattened(
        batch_shape, cost, source_weights, target_weights, compute_dtype
    )
    flow, source_potentials, target_potentials, converged = kernel.transport_solve(
        flat_cost, flat_source, flat_target, l2_strength, validate=validate_args
    )
    return flat_cost, flow, source_potentials, target_potentials, converged


def _interior_point_solve(batch_shape, cost, source_weights, target_weights, l2_strength,
                          linear, num_rows, num_cols, *, tolerance, max_iterations, num_shards):
    """The stock-op interior-point solver on the flattened batch, in float64."""
    flat_cost, flat_source, flat_target = _flattened(
        batch_shape, cost, source_weights, target_weights, tf.float64
    )
    # The Schur complement is taken over the columns: put the smaller side there.
    transpose = num_rows is not None and num_cols is not None and num_rows < num_cols
    if transpose:
        problem = (tf.linalg.matrix_transpose(flat_cost), flat_target, flat_source)
    else:
        problem = (flat_cost, flat_source, flat_target)
    solution = balancing.solve_flat(
        *problem,
        None if linear else l2_strength,
        balance_threshold=balancing.balance_threshold(cost.dtype),
        tolerance=tolerance,
        max_iterations=max_iterations,
        num_shards=num_shards,
    )
    flow = solution.flow
    source_potentials, target_potentials = (solution.source_potentials,
                                            solution.target_potentials)
    if transpose:
        flow = tf.linalg.matrix_transpose(flow)
        source_potentials, target_potentials = target_potentials, source_potentials
    return (flat_cost, flow, source_potentials, target_potentials, solution.converged,
            solution.num_iterations)


@tf.autograph.experimental.do_not_convert
def emd(
    cost: TensorLike,
    source_weights: TensorLike,
    target_weights: TensorLike,
    *,
    l2_strength: Union[float, tf.Tensor] = 0.0,
    implementation: str = "auto",
    tolerance: Optional[float] = None,
    max_iterations: int = 100,
    num_shards: Optional[int] = None,
    validate_args: bool = True,
    name: Optional[str] = None,
) -> tf.Tensor:
    """Optimal flow of a batch of EMD problems: `solve_emd(...).flow`.

    Args and semantics as `solve_emd`. Returns the flow [..., N, M] in the
    dtype of `cost`, differentiable with respect to all three inputs.

    >>> import tensorflow as tf
    >>> import tf_deepemd
    >>> cost = tf.constant([[0.0, 1.0], [1.0, 0.0]])
    >>> tf_deepemd.emd(cost, tf.constant([1.0, 1.0]), tf.constant([1.0, 1.0])).numpy().round(4)
    array([[1., 0.],
           [0., 1.]], dtype=float32)
    """
    return _solve(cost, source_weights, target_weights, l2_strength=l2_strength,
                  implementation=implementation, tolerance=tolerance,
                  max_iterations=max_iterations, num_shards=num_shards,
                  validate_args=validate_args, name=name or "emd", flow_only=True)


def _converted_inputs(cost, source_weights, target_weights):
    """Tensors of the cost's floating dtype."""
    cost = tf.convert_to_tensor(cost, name="cost")
    if not cost.dtype.is_floating:
        raise ValueError(f"cost must be a floating-point tensor, got dtype {cost.dtype.name}.")
    converted = []
    for arg_name, value in (("source_weights", source_weights),
                            ("target_weights", target_weights)):
        value = tf.convert_to_tensor(value, name=arg_name)
        if not value.dtype.is_floating and not value.dtype.is_integer:
            raise ValueError(f"{arg_name} must be numeric, got dtype {value.dtype.name}.")
        converted.append(tf.cast(value, cost.dtype))
    return (cost, *converted)


def _checked_l2_strength(l2_strength):
    """(float64 scalar tensor, whether it is statically 0: the linear program)."""
    static_l2 = tf.get_static_value(l2_strength)
    if static_l2 is not None and (np.any(np.isnan(static_l2)) or np.any(static_l2 < 0)):
        raise ValueError(f"l2_strength must be >= 0, got {static_l2}.")
    if not tf.is_tensor(l2_strength):
        l2_strength = np.asarray(l2_strength, np.float64)  # a Python float keeps its precision
    l2_strength = tf.convert_to_tensor(l2_strength, name="l2_strength")
    if not l2_strength.dtype.is_floating and not l2_strength.dtype.is_integer:
        raise ValueError(f"l2_strength must be numeric, got dtype {l2_strength.dtype.name}.")
    l2_strength = tf.cast(l2_strength, tf.float64)
    if l2_strength.shape.rank != 0:
        raise ValueError(f"l2_strength must be a scalar, got shape {l2_strength.shape}.")
    # A statically zero L2 weight selects the cheaper LP iteration.
    return l2_strength, static_l2 is not None and static_l2 == 0


def _check_shapes(cost, source_weights, target_weights):
    """Static shape checks; returns (N, M) as Python ints or None."""
    if cost.shape.rank is not None and cost.shape.rank < 2:
        raise ValueError(f"cost must have shape [..., N, M], got shape {cost.shape}.")
    for arg_name, weights in (("source_weights", source_weights), ("target_weights", target_weights)):
        if weights.shape.rank is not None and weights.shape.rank < 1:
            raise ValueError(f"{arg_name} must have shape [..., K], got a scalar.")
    num_rows, num_cols = cost.shape[-2], cost.shape[-1]
    for arg_name, weights, size, axis_name in (
        ("source_weights", source_weights, num_rows, "N = cost.shape[-2]"),
        ("target_weights", target_weights, num_cols, "M = cost.shape[-1]"),
    ):
        if size is not None and weights.shape[-1] is not None and weights.shape[-1] != size:
            raise ValueError(
                f"{arg_name} must have shape [..., {size}] ({axis_name}), "
                f"got shape {weights.shape}."
            )
    try:
        tf.broadcast_static_shape(
            tf.broadcast_static_shape(cost.shape[:-2], source_weights.shape[:-1]),
            target_weights.shape[:-1],
        )
    except ValueError as error:
        raise ValueError(
            "The batch dimensions of cost [..., N, M], source_weights [..., N] and "
            f"target_weights [..., M] do not broadcast: {cost.shape}, "
            f"{source_weights.shape}, {target_weights.shape}."
        ) from error
    return num_rows, num_cols


def _runtime_checks(cost, source_weights, target_weights, l2_strength):
    return [
        tf.debugging.assert_all_finite(cost, "cost must be finite (no NaN or Inf)."),
        tf.debugging.assert_non_negative(
            source_weights, "source_weights must be non-negative (and not NaN)"
        ),
        tf.debugging.assert_non_negative(
            target_weights, "target_weights must be non-negative (and not NaN)"
        ),
        tf.debugging.assert_all_finite(source_weights, "source_weights must be finite."),
        tf.debugging.assert_all_finite(target_weights, "target_weights must be finite."),
        tf.debugging.assert_non_negative(l2_strength, "l2_strength must be >= 0"),
        *(
            tf.debugging.assert_equal(
                tf.reduce_all(~(tf.reduce_sum(weights, axis=-1) <= 0.0)), True,
                message=f"{arg_name} must have some mass in every problem: a problem's "
                f"{arg_name} are all zero (validate_args=False gives it the zero flow).",
            )
            for arg_name, weights in (("source_weights", source_weights),
                                      ("target_weights", target_weights))
        ),
    ]


def _batch_shape(cost, source_weights, target_weights):
    """The broadcast batch shape: a `tf.TensorShape` when it is static (no
    ops), else an int32 tensor."""
    shapes = [cost.shape[:-2], source_weights.shape[:-1], target_weights.shape[:-1]]
    if all(shape.is_fully_defined() for shape in shapes):
        return tf.broadcast_static_shape(tf.broadcast_static_shape(*shapes[:2]), shapes[2])
    return tf.broadcast_dynamic_shape(
        tf.broadcast_dynamic_shape(tf.shape(cost)[:-2], tf.shape(source_weights)[:-1]),
        tf.shape(target_weights)[:-1],
    )


def _is_flat(batch_shape, *values_and_event_ranks):
    """Whether every value already has the static batch shape [B]."""
    return isinstance(batch_shape, tf.TensorShape) and batch_shape.rank == 1 and all(
        value.shape[:value.shape.rank - event_rank] == batch_shape
        for value, event_rank in values_and_event_ranks
    )


def _flattened(batch_shape, cost, source_weights, target_weights, dtype):
    """[B, N, M], [B, N], [B, M] of `dtype`: the broadcast batch on one axis."""
    if _is_flat(batch_shape, (cost, 2), (source_weights, 1), (target_weights, 1)):
        return tuple(tf.cast(value, dtype) for value in (cost, source_weights, target_weights))
    if isinstance(batch_shape, tf.TensorShape):
        batch_shape = tf.constant(batch_shape.as_list(), tf.int32)
    num_rows, num_cols = tf.shape(cost)[-2], tf.shape(cost)[-1]

    def flatten(value, event_shape):
        value = tf.broadcast_to(value, tf.concat([batch_shape, event_shape], 0))
        return tf.cast(tf.reshape(value, tf.concat([[-1], event_shape], 0)), dtype)

    return (flatten(cost, [num_rows, num_cols]), flatten(source_weights, [num_rows]),
            flatten(target_weights, [num_cols]))


def _unflattened(value, batch_shape, event_shape):
    """[B, *event] -> [*batch_shape, *event]."""
    if _is_flat(batch_shape, (value, len(event_shape))):
        return value
    if isinstance(batch_shape, tf.TensorShape):
        batch_shape = tf.constant(batch_shape.as_list(), tf.int32)
    return tf.reshape(value, tf.concat([batch_shape, event_shape], 0))
