// The 'L2' EMD (l2 > 0): a strictly convex QP with a unique flow; its exact
// solution and the exact vector-Jacobian product on its active set.
// (Method and math: the comment at the top of quadratic.cc.)
#ifndef TF_DEEPEMD_OPS_EMD_KERNEL_QUADRATIC_H_
#define TF_DEEPEMD_OPS_EMD_KERNEL_QUADRATIC_H_

#include <vector>

#include "network_simplex.h"
#include "transport_problem.h"

namespace tf_deepemd {

// Scratch memory reused across the problems one thread solves.
struct QuadraticWorkspace {
  std::vector<double> buffer;
  std::vector<int> indices;
  SimplexWorkspace simplex;  // the linear program's solve for the start
};

// Solves `problem` with l2 > 0. Writes flow [rows * cols] and the
// potentials u [rows], v [cols] (conventions in transport_problem.h).
// Returns whether the KKT conditions hold to rounding (relative 1e-12 of
// the problem's scale).
bool SolveQuadratic(const TransportProblem& problem, double l2,
                    QuadraticWorkspace* workspace, double* flow, double* u,
                    double* v);

// Vector-Jacobian product of (cost, source, target, l2) -> flow at the
// solution (flow, u, v) that SolveQuadratic returned: the derivative of the
// unique solution with its active set (support cells, saturated nodes) held
// fixed. Given grad_flow [rows * cols], writes grad_cost [rows * cols],
// grad_source [rows], grad_target [cols] and *grad_l2. For a balanced
// problem the mass gradients are defined up to (+t, -t); they are returned
// with sum(grad_source * source) == sum(grad_target * target).
void QuadraticVjp(const TransportProblem& problem, double l2,
                  const double* flow, const double* u, const double* v,
                  const double* grad_flow, QuadraticWorkspace* workspace,
                  double* grad_cost, double* grad_source, double* grad_target,
                  double* grad_l2);

}  // namespace tf_deepemd

#endif  // TF_DEEPEMD_OPS_EMD_KERNEL_QUADRATIC_H_
