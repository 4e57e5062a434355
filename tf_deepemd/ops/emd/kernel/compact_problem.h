// One problem of the batch as the solvers see it (transport_problem.h):
// rows and columns without mass are left out, the totals are compared, and
// a balanced problem's target masses are rescaled to the source total.
// Results are scattered back to the full grid: nodes without mass get no
// flow and the tightest potential the other side allows
// (u_i = min_j cost_ij - v_j), so that cost >= u + v holds on every cell.
#ifndef TF_DEEPEMD_OPS_EMD_KERNEL_COMPACT_PROBLEM_H_
#define TF_DEEPEMD_OPS_EMD_KERNEL_COMPACT_PROBLEM_H_

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "transport_problem.h"

namespace tf_deepemd {

// Masses at most this fraction of the larger total count as 0.
constexpr double kNegligibleMass = 1e-14;

class CompactProblem {
 public:
  // Reads problem `cost` [rows, cols], `source` [rows], `target` [cols] of
  // any float type. Totals whose difference is at most
  // `balance_threshold` of the larger count as equal.
  template <typename T>
  void Gather(int rows, int cols, const T* cost, const T* source, const T* target,
              double balance_threshold) {
    full_rows_ = rows;
    full_cols_ = cols;
    full_cost_.assign(cost, cost + rows * cols);
    double source_total = 0.0, target_total = 0.0;
    for (int i = 0; i < rows; ++i) source_total += source[i];
    for (int j = 0; j < cols; ++j) target_total += target[j];
    const double total = std::max(source_total, target_total);
    row_index_.clear();
    col_index_.clear();
    source_.clear();
    target_.clear();
    for (int i = 0; i < rows; ++i) {
      if (source[i] > kNegligibleMass * total) {
        row_index_.push_back(i);
        source_.push_back(source[i]);
      }
    }
    for (int j = 0; j < cols; ++j) {
      if (target[j] > kNegligibleMass * total) {
        col_index_.push_back(j);
        target_.push_back(target[j]);
      }
    }
    double kept_source = 0.0, kept_target = 0.0;
    for (double mass : source_) kept_source += mass;
    for (double mass : target_) kept_target += mass;
    problem_.rows = static_cast<int>(row_index_.size());
    problem_.cols = static_cast<int>(col_index_.size());
    problem_.balanced =
        std::abs(source_total - target_total) <= balance_threshold * total;
    if (problem_.balanced && kept_target > 0.0) {
      for (double& mass : target_) mass *= kept_source / kept_target;
    }
    cost_.resize(problem_.rows * problem_.cols);
    for (int r = 0; r < problem_.rows; ++r) {
      for (int c = 0; c < problem_.cols; ++c) {
        cost_[r * problem_.cols + c] = full_cost_[row_index_[r] * cols + col_index_[c]];
      }
    }
    problem_.cost = cost_.data();
    problem_.source = source_.data();
    problem_.target = target_.data();
  }

  // Whether both sides have mass (otherwise nothing moves).
  bool HasMass() const { return problem_.rows > 0 && problem_.cols > 0; }
  const TransportProblem& problem() const { return problem_; }

  // Buffers for a compact solution or gradient, sized for this problem.
  double* compact_cells() { return Sized(&cells_, problem_.rows * problem_.cols); }
  double* compact_rows() { return Sized(&rows_, problem_.rows); }
  double* compact_cols() { return Sized(&cols_, problem_.cols); }

  // Compact values [rows' * cols'] -> full grid [rows * cols], 0 elsewhere.
  template <typename T>
  void ScatterCells(const double* compact, T* full) const {
    std::fill(full, full + full_rows_ * full_cols_, T(0));
    for (int r = 0; r < problem_.rows; ++r) {
      for (int c = 0; c < problem_.cols; ++c) {
        full[row_index_[r] * full_cols_ + col_index_[c]] =
            static_cast<T>(compact[r * problem_.cols + c]);
      }
    }
  }

  // Full grid [rows * cols] -> compact values.
  template <typename T>
  void GatherCells(const T* full, double* compact) const {
    for (int r = 0; r < problem_.rows; ++r) {
      for (int c = 0; c < problem_.cols; ++c) {
        compact[r * problem_.cols + c] = full[row_index_[r] * full_cols_ + col_index_[c]];
      }
    }
  }

  // Full node values -> compact ones.
  template <typename T>
  void GatherNodes(const T* u, const T* v, double* compact_u, double* compact_v) const {
    for (int r = 0; r < problem_.rows; ++r) compact_u[r] = u[row_index_[r]];
    for (int c = 0; c < problem_.cols; ++c) compact_v[c] = v[col_index_[c]];
  }

  // Compact node values -> full ones, 0 at nodes without mass.
  template <typename T>
  void ScatterNodes(const double* compact_u, const double* compact_v, T* u, T* v) const {
    std::fill(u, u + full_rows_, T(0));
    std::fill(v, v + full_cols_, T(0));
    for (int r = 0; r < problem_.rows; ++r) u[row_index_[r]] = compact_u[r];
    for (int c = 0; c < problem_.cols; ++c) v[col_index_[c]] = compact_v[c];
  }

  // Potentials on the full grid: the nodes without mass get the tightest
  // value the other side's potentials allow.
  template <typename T>
  void ScatterPotentials(const double* compact_u, const double* compact_v, T* u, T* v) const {
    std::vector<double> full_u(full_rows_, std::numeric_limits<double>::quiet_NaN());
    std::vector<double> full_v(full_cols_, std::numeric_limits<double>::quiet_NaN());
    for (int r = 0; r < problem_.rows; ++r) full_u[row_index_[r]] = compact_u[r];
    for (int c = 0; c < problem_.cols; ++c) full_v[col_index_[c]] = compact_v[c];
    for (int i = 0; i < full_rows_; ++i) {
      if (!std::isnan(full_u[i])) continue;
      double tightest = std::numeric_limits<double>::infinity();
      for (int c = 0; c < problem_.cols; ++c) {
        tightest = std::min(tightest, full_cost_[i * full_cols_ + col_index_[c]] - compact_v[c]);
      }
      full_u[i] = std::isinf(tightest) ? 0.0 : tightest;
    }
    for (int j = 0; j < full_cols_; ++j) {
      if (!std::isnan(full_v[j])) continue;
      double tightest = std::numeric_limits<double>::infinity();
      for (int r = 0; r < problem_.rows; ++r) {
        tightest = std::min(tightest, full_cost_[row_index_[r] * full_cols_ + j] - compact_u[r]);
      }
      full_v[j] = std::isinf(tightest) ? 0.0 : tightest;
    }
    for (int i = 0; i < full_rows_; ++i) u[i] = static_cast<T>(full_u[i]);
    for (int j = 0; j < full_cols_; ++j) v[j] = static_cast<T>(full_v[j]);
  }

  // Compact basis cells ((rows' + 1) x (cols' + 1) grid) <-> full ones
  // ((rows + 1) x (cols + 1) grid); the last row and column are the dummies.
  void ScatterBasis(const int* compact, int size, int* full) const {
    for (int k = 0; k < size; ++k) {
      if (compact[k] < 0) {
        full[k] = -1;
        continue;
      }
      const int r = compact[k] / (problem_.cols + 1), c = compact[k] % (problem_.cols + 1);
      const int i = r < problem_.rows ? row_index_[r] : full_rows_;
      const int j = c < problem_.cols ? col_index_[c] : full_cols_;
      full[k] = i * (full_cols_ + 1) + j;
    }
  }
  void GatherBasis(const int* full, int size, int* compact) const {
    std::vector<int> row_of(full_rows_ + 1, problem_.rows), col_of(full_cols_ + 1, problem_.cols);
    for (int r = 0; r < problem_.rows; ++r) row_of[row_index_[r]] = r;
    for (int c = 0; c < problem_.cols; ++c) col_of[col_index_[c]] = c;
    for (int k = 0; k < size; ++k) {
      if (full[k] < 0 || full[k] >= (full_rows_ + 1) * (full_cols_ + 1)) {
        compact[k] = -1;
        continue;
      }
      const int i = full[k] / (full_cols_ + 1), j = full[k] % (full_cols_ + 1);
      compact[k] = row_of[i] * (problem_.cols + 1) + col_of[j];
    }
  }

 private:
  static double* Sized(std::vector<double>* buffer, int size) {
    buffer->resize(std::max(size, 1));
    return buffer->data();
  }

  TransportProblem problem_;
  int full_rows_ = 0, full_cols_ = 0;
  std::vector<double> full_cost_, cost_, source_, target_;
  std::vector<int> row_index_, col_index_;
  std::vector<double> cells_, rows_, cols_;
};

// Fixes the constant t that a balanced problem leaves free in (u + t, v - t)
// so that sum(u * source) == sum(v * target) (potentials and mass gradients).
inline void Centre(const TransportProblem& problem, double* u, double* v) {
  double source_value = 0.0, target_value = 0.0, total = 0.0;
  for (int i = 0; i < problem.rows; ++i) {
    source_value += u[i] * problem.source[i];
    total += problem.source[i];
  }
  for (int j = 0; j < problem.cols; ++j) {
    target_value += v[j] * problem.target[j];
    total += problem.target[j];
  }
  const double shift = total > 0.0 ? (target_value - source_value) / total : 0.0;
  for (int i = 0; i < problem.rows; ++i) u[i] += shift;
  for (int j = 0; j < problem.cols; ++j) v[j] -= shift;
}

}  // namespace tf_deepemd

#endif  // TF_DEEPEMD_OPS_EMD_KERNEL_COMPACT_PROBLEM_H_
