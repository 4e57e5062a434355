// The linear program (l2 = 0): a transportation simplex on the spanning
// tree of a basis, and the vector-Jacobian product at that basis.
// (Method and math: the comment at the top of network_simplex.cc.)
#ifndef TF_DEEPEMD_OPS_EMD_KERNEL_NETWORK_SIMPLEX_H_
#define TF_DEEPEMD_OPS_EMD_KERNEL_NETWORK_SIMPLEX_H_

#include <vector>

#include "transport_problem.h"

namespace tf_deepemd {

// Scratch memory reused across the problems one thread solves.
struct SimplexWorkspace {
  std::vector<double> reals;
  std::vector<int> ints;
};

// A basis names its cells in the grid extended by one dummy row (index
// `rows`) and one dummy column (index `cols`): cell (i, j) is
// i * (cols + 1) + j. An unbalanced problem sends the heavier side's excess
// to the dummy on the other side at cost 0. A basis has
// BasisSize(rows, cols) cells; unused entries are -1.
inline int BasisSize(int rows, int cols) { return rows + cols + 1; }

// Solves `problem` with l2 = 0. Writes flow [rows * cols], the potentials
// u [rows], v [cols] (conventions in transport_problem.h) and the optimal
// basis [BasisSize(rows, cols)]. Returns whether the simplex reached
// optimality within its pivot cap.
bool SolveNetworkSimplex(const TransportProblem& problem,
                         SimplexWorkspace* workspace, double* flow, double* u,
                         double* v, int* basis);

// Vector-Jacobian product of (source, target) -> flow at a fixed basis:
// the flow's derivative with respect to the cost is 0. Writes
// grad_source [rows] and grad_target [cols]; for a balanced problem they are
// defined up to (+t, -t) and returned with
// sum(grad_source * source) == sum(grad_target * target).
void BasisVjp(const TransportProblem& problem, const int* basis,
              const double* grad_flow, SimplexWorkspace* workspace,
              double* grad_source, double* grad_target);

}  // namespace tf_deepemd

#endif  // TF_DEEPEMD_OPS_EMD_KERNEL_NETWORK_SIMPLEX_H_
