// TensorFlow ops TfDeepemd>TransportSolve and TfDeepemd>TransportSolveGrad:
// a batch of EMD problems solved (and differentiated) on the CPU, one
// problem per task on TensorFlow's intra-op thread pool. Each problem is
// computed in float64 by one thread with its own workspace, so results do
// not depend on the number of threads.
//
// l2_strength == 0 selects the transportation simplex (network_simplex.cc),
// l2_strength > 0 the exact 'L2' QP solver (quadratic.cc). The problem
// statement and sign conventions are in transport_problem.h; nodes without
// mass are handled by compact_problem.h.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "compact_problem.h"
#include "network_simplex.h"
#include "quadratic.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/lib/core/threadpool.h"

namespace tf_deepemd {
namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::errors::InvalidArgument;
namespace shape_inference = ::tensorflow::shape_inference;

// Totals within this many units of the dtype's precision count as equal.
template <typename T>
double BalanceThreshold() {
  return std::max(1e-12, 8.0 * static_cast<double>(std::numeric_limits<T>::epsilon()));
}

constexpr int64_t kMaxNodes = 4096;

struct BatchShape {
  int64_t batch = 0;
  int rows = 0, cols = 0;
};

// Shapes of cost [B, N, M], source [B, N], target [B, M].
Status CheckShapes(const Tensor& cost, const Tensor& source, const Tensor& target,
                   BatchShape* shape) {
  if (cost.dims() != 3) {
    return InvalidArgument("cost must have shape [B, N, M], got ", cost.shape().DebugString());
  }
  shape->batch = cost.dim_size(0);
  shape->rows = static_cast<int>(cost.dim_size(1));
  shape->cols = static_cast<int>(cost.dim_size(2));
  // The solvers' workspaces grow as (N + M)^2 per thread.
  if (int64_t{shape->rows} + shape->cols > kMaxNodes) {
    return InvalidArgument("cost must have at most ", kMaxNodes,
                           " rows and columns together for the compiled kernel, got ",
                           cost.shape().DebugString(), " (implementation='tf_ops' has no limit)");
  }
  if (source.dims() != 2 || source.dim_size(0) != shape->batch ||
      source.dim_size(1) != shape->rows) {
    return InvalidArgument("source_weights must have shape [B, N] = [", shape->batch, ", ",
                           shape->rows, "] to match cost ", cost.shape().DebugString(),
                           ", got ", source.shape().DebugString());
  }
  if (target.dims() != 2 || target.dim_size(0) != shape->batch ||
      target.dim_size(1) != shape->cols) {
    return InvalidArgument("target_weights must have shape [B, M] = [", shape->batch, ", ",
                           shape->cols, "] to match cost ", cost.shape().DebugString(),
                           ", got ", target.shape().DebugString());
  }
  return Status();
}

// Finite costs; finite, non-negative masses with some mass on both sides of
// every problem.
template <typename T>
Status CheckValues(const BatchShape& shape, const T* cost, const T* source, const T* target) {
  const int64_t cells = shape.batch * shape.rows * shape.cols;
  for (int64_t k = 0; k < cells; ++k) {
    if (!std::isfinite(static_cast<double>(cost[k]))) {
      const int64_t cell = k % (int64_t{shape.rows} * shape.cols);
      return InvalidArgument("cost must be finite (no NaN or Inf): problem ",
                             k / (int64_t{shape.rows} * shape.cols), ", cell (",
                             cell / shape.cols, ", ", cell % shape.cols, ") is ",
                             static_cast<double>(cost[k]));
    }
  }
  for (const auto& [name, values, size] :
       {std::tuple{"source_weights", source, shape.rows},
        std::tuple{"target_weights", target, shape.cols}}) {
    for (int64_t b = 0; b < shape.batch; ++b) {
      double total = 0.0;
      for (int k = 0; k < size; ++k) {
        const double mass = static_cast<double>(values[b * size + k]);
        if (!(mass >= 0.0)) {
          return InvalidArgument(name, " must be non-negative (not NaN): problem ", b,
                                 ", node ", k, " is ", mass);
        }
        if (std::isinf(mass)) {
          return InvalidArgument(name, " must be finite: problem ", b, ", node ", k, " is ",
                                 mass);
        }
        total += mass;
      }
      if (!(total > 0.0)) {
        return InvalidArgument(name, " must have some mass in every problem: problem ", b,
                               " has none");
      }
    }
  }
  return Status();
}

Status CheckL2(const Tensor& l2_tensor, double* l2) {
  if (l2_tensor.dims() != 0) {
    return InvalidArgument("l2_strength must be a scalar, got shape ",
                           l2_tensor.shape().DebugString());
  }
  *l2 = l2_tensor.scalar<double>()();
  if (!(std::isfinite(*l2) && *l2 >= 0.0)) {
    return InvalidArgument("l2_strength must be finite and >= 0, got ", *l2);
  }
  return Status();
}

// The inputs both ops begin with: cost, source, target and l2_strength.
Status CheckProblemInputs(OpKernelContext* context, BatchShape* shape, double* l2) {
  TF_RETURN_IF_ERROR(
      CheckShapes(context->input(0), context->input(1), context->input(2), shape));
  return CheckL2(context->input(3), l2);
}

// Runs `solve(first, last)` over the batch on the intra-op thread pool.
template <typename Fn>
void ForEachProblem(OpKernelContext* context, const BatchShape& shape, Fn solve) {
  const int64_t cost_per_problem = 2000 + 400 * int64_t{shape.rows} * shape.cols;
  auto* workers = context->device()->tensorflow_cpu_worker_threads()->workers;
  workers->ParallelFor(shape.batch, cost_per_problem,
                       [&](int64_t first, int64_t last) { solve(first, last); });
}

template <typename T>
class TransportSolveOp : public OpKernel {
 public:
  explicit TransportSolveOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("validate", &validate_));
  }

  void Compute(OpKernelContext* context) override {
    BatchShape shape;
    double l2 = 0.0;
    OP_REQUIRES_OK(context, CheckProblemInputs(context, &shape, &l2));
    const Tensor& cost = context->input(0);
    const Tensor& source = context->input(1);
    const Tensor& target = context->input(2);
    const T* cost_data = cost.flat<T>().data();
    const T* source_data = source.flat<T>().data();
    const T* target_data = target.flat<T>().data();
    if (validate_) {
      OP_REQUIRES_OK(context, CheckValues(shape, cost_data, source_data, target_data));
    }
    const int basis_size = BasisSize(shape.rows, shape.cols);
    Tensor *flow, *u, *v, *converged, *basis;
    OP_REQUIRES_OK(context, context->allocate_output(0, cost.shape(), &flow));
    OP_REQUIRES_OK(context, context->allocate_output(1, source.shape(), &u));
    OP_REQUIRES_OK(context, context->allocate_output(2, target.shape(), &v));
    OP_REQUIRES_OK(context, context->allocate_output(3, TensorShape({shape.batch}), &converged));
    OP_REQUIRES_OK(context, context->allocate_output(
                                4, TensorShape({shape.batch, basis_size}), &basis));
    T* flow_data = flow->flat<T>().data();
    T* u_data = u->flat<T>().data();
    T* v_data = v->flat<T>().data();
    bool* converged_data = converged->flat<bool>().data();
    int* basis_data = basis->flat<int>().data();
    const int64_t cells = int64_t{shape.rows} * shape.cols;

    ForEachProblem(context, shape, [&](int64_t first, int64_t last) {
      CompactProblem compact;
      SimplexWorkspace simplex_workspace;
      QuadraticWorkspace quadratic_workspace;
      std::vector<int> compact_basis(basis_size);
      for (int64_t b = first; b < last; ++b) {
        compact.Gather(shape.rows, shape.cols, cost_data + b * cells,
                       source_data + b * shape.rows, target_data + b * shape.cols,
                       BalanceThreshold<T>());
        int* problem_basis = basis_data + b * basis_size;
        std::fill(problem_basis, problem_basis + basis_size, -1);
        if (!compact.HasMass()) {  // only without validation
          std::fill(flow_data + b * cells, flow_data + (b + 1) * cells, T(0));
          std::fill(u_data + b * shape.rows, u_data + (b + 1) * shape.rows, T(0));
          std::fill(v_data + b * shape.cols, v_data + (b + 1) * shape.cols, T(0));
          converged_data[b] = true;
          continue;
        }
        const TransportProblem& problem = compact.problem();
        double* problem_flow = compact.compact_cells();
        double* problem_u = compact.compact_rows();
        double* problem_v = compact.compact_cols();
        if (l2 > 0.0) {
          converged_data[b] = SolveQuadratic(problem, l2, &quadratic_workspace, problem_flow,
                                             problem_u, problem_v);
        } else {
          converged_data[b] = SolveNetworkSimplex(problem, &simplex_workspace, problem_flow,
                                                  problem_u, problem_v, compact_basis.data());
          compact.ScatterBasis(compact_basis.data(), BasisSize(problem.rows, problem.cols),
                               problem_basis);
        }
        if (problem.balanced) Centre(problem, problem_u, problem_v);
        compact.ScatterCells(problem_flow, flow_data + b * cells);
        compact.ScatterPotentials(problem_u, problem_v, u_data + b * shape.rows,
                                  v_data + b * shape.cols);
      }
    });
  }

 private:
  bool validate_ = true;
};

template <typename T>
class TransportSolveGradOp : public OpKernel {
 public:
  explicit TransportSolveGradOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    BatchShape shape;
    double l2 = 0.0;
    OP_REQUIRES_OK(context, CheckProblemInputs(context, &shape, &l2));
    const Tensor& cost = context->input(0);
    const Tensor& source = context->input(1);
    const Tensor& target = context->input(2);
    const Tensor& flow = context->input(4);
    const Tensor& u = context->input(5);
    const Tensor& v = context->input(6);
    const Tensor& basis = context->input(7);
    const Tensor& grad_flow = context->input(8);
    const int basis_size = BasisSize(shape.rows, shape.cols);
    OP_REQUIRES(context,
                flow.shape() == cost.shape() && grad_flow.shape() == cost.shape() &&
                    u.shape() == source.shape() && v.shape() == target.shape() &&
                    basis.shape() == TensorShape({shape.batch, basis_size}),
                InvalidArgument("TransportSolveGrad: the solution's shapes do not match the "
                                "problem's"));
    Tensor *grad_cost, *grad_source, *grad_target, *grad_l2;
    OP_REQUIRES_OK(context, context->allocate_output(0, cost.shape(), &grad_cost));
    OP_REQUIRES_OK(context, context->allocate_output(1, source.shape(), &grad_source));
    OP_REQUIRES_OK(context, context->allocate_output(2, target.shape(), &grad_target));
    OP_REQUIRES_OK(context, context->allocate_output(3, TensorShape({}), &grad_l2));

    const T* cost_data = cost.flat<T>().data();
    const T* source_data = source.flat<T>().data();
    const T* target_data = target.flat<T>().data();
    const T* flow_data = flow.flat<T>().data();
    const T* u_data = u.flat<T>().data();
    const T* v_data = v.flat<T>().data();
    const int* basis_data = basis.flat<int>().data();
    const T* grad_flow_data = grad_flow.flat<T>().data();
    T* grad_cost_data = grad_cost->flat<T>().data();
    T* grad_source_data = grad_source->flat<T>().data();
    T* grad_target_data = grad_target->flat<T>().data();
    const int64_t cells = int64_t{shape.rows} * shape.cols;
    // Each problem's share of d/d l2, summed in batch order afterwards so
    // that the total does not depend on how the batch was split.
    std::vector<double> grad_l2_parts(shape.batch, 0.0);

    ForEachProblem(context, shape, [&](int64_t first, int64_t last) {
      CompactProblem compact;
      SimplexWorkspace simplex_workspace;
      QuadraticWorkspace quadratic_workspace;
      std::vector<int> compact_basis(basis_size);
      std::vector<double> solution, upstream, grad_cells;
      for (int64_t b = first; b < last; ++b) {
        compact.Gather(shape.rows, shape.cols, cost_data + b * cells,
                       source_data + b * shape.rows, target_data + b * shape.cols,
                       BalanceThreshold<T>());
        const TransportProblem& problem = compact.problem();
        double* problem_grad_source = compact.compact_rows();
        double* problem_grad_target = compact.compact_cols();
        const int compact_cells = problem.rows * problem.cols;
        upstream.resize(std::max(compact_cells, 1));
        compact.GatherCells(grad_flow_data + b * cells, upstream.data());
        grad_cells.assign(std::max(compact_cells, 1), 0.0);
        if (!compact.HasMass()) {
          std::fill(problem_grad_source, problem_grad_source + problem.rows, 0.0);
          std::fill(problem_grad_target, problem_grad_target + problem.cols, 0.0);
        } else if (l2 > 0.0) {
          solution.resize(compact_cells + problem.rows + problem.cols);
          compact.GatherCells(flow_data + b * cells, solution.data());
          double* problem_u = solution.data() + compact_cells;
          double* problem_v = problem_u + problem.rows;
          compact.GatherNodes(u_data + b * shape.rows, v_data + b * shape.cols, problem_u,
                              problem_v);
          QuadraticVjp(problem, l2, solution.data(), problem_u, problem_v, upstream.data(),
                       &quadratic_workspace, grad_cells.data(), problem_grad_source,
                       problem_grad_target, &grad_l2_parts[b]);
        } else {
          compact.GatherBasis(basis_data + b * basis_size, basis_size, compact_basis.data());
          BasisVjp(problem, compact_basis.data(), upstream.data(), &simplex_workspace,
                   problem_grad_source, problem_grad_target);
        }
        if (problem.balanced) Centre(problem, problem_grad_source, problem_grad_target);
        compact.ScatterCells(grad_cells.data(), grad_cost_data + b * cells);
        compact.ScatterNodes(problem_grad_source, problem_grad_target,
                             grad_source_data + b * shape.rows,
                             grad_target_data + b * shape.cols);
      }
    });
    double total = 0.0;
    for (const double part : grad_l2_parts) total += part;
    grad_l2->scalar<double>()() = total;
  }

};

Status SolveShape(shape_inference::InferenceContext* c) {
  shape_inference::ShapeHandle cost, source, target;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &cost));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &source));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &target));
  c->set_output(0, cost);
  c->set_output(1, source);
  c->set_output(2, target);
  c->set_output(3, c->Vector(c->Dim(cost, 0)));
  shape_inference::DimensionHandle basis_size;
  TF_RETURN_IF_ERROR(c->Add(c->Dim(cost, 1), c->Dim(cost, 2), &basis_size));
  TF_RETURN_IF_ERROR(c->Add(basis_size, 1, &basis_size));
  c->set_output(4, c->Matrix(c->Dim(cost, 0), basis_size));
  return Status();
}

Status GradShape(shape_inference::InferenceContext* c) {
  c->set_output(0, c->input(0));
  c->set_output(1, c->input(1));
  c->set_output(2, c->input(2));
  c->set_output(3, c->Scalar());
  return Status();
}

}  // namespace

REGISTER_OP("TfDeepemd>TransportSolve")
    .Input("cost: T")
    .Input("source_weights: T")
    .Input("target_weights: T")
    .Input("l2_strength: double")
    .Output("flow: T")
    .Output("source_potentials: T")
    .Output("target_potentials: T")
    .Output("converged: bool")
    .Output("basis: int32")
    .Attr("T: {float, double}")
    .Attr("validate: bool = true")
    .SetShapeFn(SolveShape)
    .Doc("Solves a batch of EMD problems; see tf_deepemd.ops.emd.kernel.");

REGISTER_OP("TfDeepemd>TransportSolveGrad")
    .Input("cost: T")
    .Input("source_weights: T")
    .Input("target_weights: T")
    .Input("l2_strength: double")
    .Input("flow: T")
    .Input("source_potentials: T")
    .Input("target_potentials: T")
    .Input("basis: int32")
    .Input("grad_flow: T")
    .Output("grad_cost: T")
    .Output("grad_source_weights: T")
    .Output("grad_target_weights: T")
    .Output("grad_l2_strength: double")
    .Attr("T: {float, double}")
    .SetShapeFn(GradShape)
    .Doc("Vector-Jacobian product of TfDeepemd>TransportSolve's flow.");

#define REGISTER_KERNELS(T)                                                      \
  REGISTER_KERNEL_BUILDER(Name("TfDeepemd>TransportSolve")                       \
                              .Device(::tensorflow::DEVICE_CPU)                  \
                              .TypeConstraint<T>("T"),                           \
                          TransportSolveOp<T>);                                  \
  REGISTER_KERNEL_BUILDER(Name("TfDeepemd>TransportSolveGrad")                   \
                              .Device(::tensorflow::DEVICE_CPU)                  \
                              .TypeConstraint<T>("T"),                           \
                          TransportSolveGradOp<T>)

REGISTER_KERNELS(float);
REGISTER_KERNELS(double);

}  // namespace tf_deepemd
