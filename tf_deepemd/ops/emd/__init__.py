"""Batched, differentiable Earth Mover's Distance (transportation LP) solver.

The problem (Rubner et al.'s EMD, as OpenCV's `cv2.EMD` solves it), for every
batch element independently::

    minimise    sum(cost * flow) + l2_strength / 2 * ||flow||^2
    subject to  flow >= 0,
                flow.sum(-1) <= source_weights,
                flow.sum(-2) <= target_weights,
                flow.sum() == min(source_weights.sum(), target_weights.sum()).

`l2_strength = 0` is the linear program; `l2_strength > 0` is the 'L2' form
of the official DeepEMD training code (a strictly convex QP).

Two implementations solve it (`implementation`, see `implementation.py`):
the compiled kernel (`kernel/`: a C++ TensorFlow op for CPUs, exact, with
exact gradients) and the interior-point method built from stock TensorFlow
ops described below (GPUs, SavedModels for TensorFlow Serving).

How the stock-op solver works, one module per step, in the order a call runs
them:

1. `api`: validates the inputs, flattens the broadcast batch to one axis and
   puts the smaller side on the columns; computation is in float64.
2. `balancing`: one dummy row and column take up the excess mass of
   unbalanced problems (left out when the whole batch is balanced with
   positive masses, as DeepEMD's is); each problem is rescaled to unit mass
   and unit cost range; afterwards the flow and the dual potentials go back
   to the input's units, the potentials' free constant fixed by
   `centre_potentials`.
3. `loop`: a primal-dual interior-point method runs in a `tf.while_loop` over
   the batch. The best iterate of each problem is kept; a problem stops when
   it has met the tolerance or stopped improving; once few problems are left
   running they are gathered into a smaller batch; the batch is split into
   `num_shards` loops run concurrently.
4. `iteration`: one Mehrotra predictor-corrector step (predictor, centering,
   corrector, step lengths, stopping).
5. `newton`: the Newton step of the KKT system. It has the block structure
   `[[diag(R), D], [D^T, diag(C)]]` (D = flow / (l2 * flow + slack)) and is
   solved through its Schur complement onto the columns, an M x M
   positive-definite system once the free constant of the potentials is
   pinned, never as a dense system over the N*M flows. Rows or columns
   without mass make their cells forbidden (infinite cost): they carry no
   flow and get no gradient.
6. `gradient`: `tf.custom_gradient` differentiates the KKT conditions at the
   returned iterate (implicit function theorem, as OptNet/qpth do) with one
   more solve of the same structured system; the iterations are not
   unrolled. For `l2_strength > 0` this is the exact derivative of the
   unique solution. For the linear program (`l2_strength = 0`) it is the
   derivative of the central-path point at the final duality gap, which the
   tolerance keeps tiny: at a non-degenerate vertex it tends to zero for the
   flow, so d sum(cost * flow) / d cost -> flow and d sum(cost * flow) /
   d weights -> the dual potentials, the LP sensitivities; at degenerate
   vertices (where the LP solution is not differentiable) it is a smooth,
   bounded approximation.

Totals that differ by less than about 8 units of the input dtype's
precision are treated as equal.
"""

from tf_deepemd.ops.emd.api import EMDResult, emd, solve_emd
from tf_deepemd.ops.emd.implementation import (
    IMPLEMENTATIONS,
    check_implementation,
    stock_ops_only,
)
from tf_deepemd.ops.emd.kernel import kernel_available, kernel_load_error
from tf_deepemd.ops.emd.loop import default_num_shards

__all__ = [
    "EMDResult",
    "IMPLEMENTATIONS",
    "check_implementation",
    "default_num_shards",
    "emd",
    "kernel_available",
    "kernel_load_error",
    "solve_emd",
    "stock_ops_only",
]
