// One dense transportation problem in float64, as the kernel's solvers see it.
//
// The op driver (emd_op.cc) has already removed rows and columns without
// mass, so every mass is > 0, and decided whether the totals count as equal;
// when they do it has rescaled the target masses so that both totals agree
// to rounding. The solvers then solve, with Rubner's constraints,
//
//     minimise    sum(cost * flow) + l2 / 2 * ||flow||^2
//     subject to  flow >= 0, flow.sum(1) <= source, flow.sum(0) <= target,
//                 flow.sum() == min(source.sum(), target.sum()).
//
// Dual potentials u [rows], v [cols] follow the sign convention of the
// linear program's dual: cost[i][j] >= u[i] + v[j] with equality on the
// support (l2 = 0), flow[i][j] = max(u[i] + v[j] - cost[i][j], 0) / l2
// (l2 > 0). On the heavier side of an unbalanced problem the potentials are
// <= 0 and are 0 on nodes that keep some of their mass; a balanced problem
// leaves a constant free (u + t, v - t), which the driver fixes.
#ifndef TF_DEEPEMD_OPS_EMD_KERNEL_TRANSPORT_PROBLEM_H_
#define TF_DEEPEMD_OPS_EMD_KERNEL_TRANSPORT_PROBLEM_H_

namespace tf_deepemd {

struct TransportProblem {
  int rows = 0;
  int cols = 0;
  const double* cost = nullptr;    // [rows * cols], row-major
  const double* source = nullptr;  // [rows], all > 0
  const double* target = nullptr;  // [cols], all > 0
  bool balanced = false;           // totals equal (to rounding)
};

}  // namespace tf_deepemd

#endif  // TF_DEEPEMD_OPS_EMD_KERNEL_TRANSPORT_PROBLEM_H_
