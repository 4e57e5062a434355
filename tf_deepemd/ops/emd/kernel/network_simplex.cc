// The transportation simplex (the network simplex on a complete bipartite
// graph), as in Dantzig's MODI method and Rubner's EMD code.
//
// An unbalanced problem gets one dummy node on its lighter side, with the
// excess mass and cost 0, so that every marginal is an equality. A basis is
// a spanning tree of rows + cols - 1 cells; the first is greedy (least cost
// first, on the cost less a feasible dual). Given a basis:
//   flows:      leaf elimination; a leaf's one basic cell carries its mass;
//   potentials: u_i + v_j = C_ij on basic cells (root potential 0);
//   pricing:    d_ij = C_ij - u_i - v_j; the basis is optimal when d >= 0.
// Otherwise a cell of negative reduced cost enters: the most negative of the
// first block of rows (scanned cyclically) that has one; mass theta moves around
// the cycle it closes in the tree (+theta on the entering cell, alternating
// signs), and the cell of the smallest flow among the decreasing ones
// leaves (ties: the smallest cell index). After a run of degenerate pivots
// (theta = 0), the entering cell is the first improving one by index until
// theta > 0 again (Bland's rule, which cannot cycle).
//
// Derivative at a basis: the basic flows are B^-1 m (m: the masses,
// dummies included), independent of the cost. Their vector-Jacobian
// product is y = B^-T g, i.e. y_i + y_j = g_ij on basic cells: the same tree
// solve as the potentials, with the upstream gradient g for the cost (0 on
// dummy cells). A dummy's mass is the difference of the totals, which adds
// its y to the heavier side's gradient and subtracts it from the lighter's.
#include "network_simplex.h"

#include <algorithm>
#include <cmath>
#include <limits>




namespace tf_deepemd {
namespace {

// The problem on the grid extended by the dummy, and the spanning tree of
// the current basis. Nodes 0..rows-1 are rows, rows..rows+cols-1 columns.
struct Simplex {
  int rows, cols, nodes;
  int real_rows, real_cols;
  double* cost;       // [rows * cols]
  double* mass;       // [nodes]
  double* flow;       // [rows * cols], 0 off the basis
  double* potential;  // [nodes]: u then v
  double* residual;   // [nodes]
  double* reduced;    // [rows * cols] scratch of the start
  int* degree;        // [nodes]
  int* adjacent;      // [nodes * nodes] basic cells at each node
  int* parent;        // [nodes], -1 at the root
  int* parent_cell;   // [nodes]
  int* depth;         // [nodes]
  int* order;         // [nodes] breadth-first from the root
  int* open_cols;     // [cols]
  int* cycle;         // [2 * nodes]

  int RowOf(int cell) const { return cell / cols; }
  int ColNodeOf(int cell) const { return rows + cell % cols; }
  int OtherEnd(int cell, int node) const {
    return node < rows ? ColNodeOf(cell) : RowOf(cell);
  }
};

Simplex Layout(const TransportProblem& problem, SimplexWorkspace* workspace) {
  double source_total = 0.0, target_total = 0.0;
  for (int i = 0; i < problem.rows; ++i) source_total += problem.source[i];
  for (int j = 0; j < problem.cols; ++j) target_total += problem.target[j];
  const bool dummy_row = !problem.balanced && target_total > source_total;
  const bool dummy_col = !problem.balanced && source_total > target_total;

  Simplex s;
  s.real_rows = problem.rows;
  s.real_cols = problem.cols;
  s.rows = problem.rows + (dummy_row ? 1 : 0);
  s.cols = problem.cols + (dummy_col ? 1 : 0);
  s.nodes = s.rows + s.cols;
  const int cells = s.rows * s.cols;
  workspace->reals.resize(3 * cells + 3 * s.nodes);
  workspace->ints.resize(s.nodes * s.nodes + 7 * s.nodes + s.cols);
  double* reals = workspace->reals.data();
  s.cost = reals;
  s.flow = reals + cells;
  s.mass = reals + 2 * cells;
  s.potential = s.mass + s.nodes;
  s.residual = s.potential + s.nodes;
  s.reduced = s.residual + s.nodes;
  int* ints = workspace->ints.data();
  s.adjacent = ints;
  s.degree = ints + s.nodes * s.nodes;
  s.parent = s.degree + s.nodes;
  s.parent_cell = s.parent + s.nodes;
  s.depth = s.parent_cell + s.nodes;
  s.order = s.depth + s.nodes;
  s.cycle = s.order + s.nodes;
  s.open_cols = s.cycle + 2 * s.nodes;

  for (int i = 0; i < s.rows; ++i) {
    for (int j = 0; j < s.cols; ++j) {
      const bool real = i < s.real_rows && j < s.real_cols;
      s.cost[i * s.cols + j] = real ? problem.cost[i * s.real_cols + j] : 0.0;
    }
  }
  std::copy(problem.source, problem.source + s.real_rows, s.mass);
  std::copy(problem.target, problem.target + s.real_cols, s.mass + s.rows);
  if (dummy_row) s.mass[s.real_rows] = target_total - source_total;
  if (dummy_col) s.mass[s.rows + s.real_cols] = source_total - target_total;
  std::fill(s.flow, s.flow + cells, 0.0);
  std::fill(s.degree, s.degree + s.nodes, 0);
  return s;
}

void AddCell(Simplex& s, int cell) {
  const int row = s.RowOf(cell), col = s.ColNodeOf(cell);
  s.adjacent[row * s.nodes + s.degree[row]++] = cell;
  s.adjacent[col * s.nodes + s.degree[col]++] = cell;
}

void RemoveCell(Simplex& s, int cell) {
  for (const int node : {s.RowOf(cell), s.ColNodeOf(cell)}) {
    int* cells = s.adjacent + node * s.nodes;
    const int last = --s.degree[node];
    for (int k = 0; k <= last; ++k) {
      if (cells[k] == cell) {
        cells[k] = cells[last];
        break;
      }
    }
  }
}

// Row-minimum start: each row in turn sends its mass to its cheapest open
// columns. Every allocation closes one row or column (the last closes
// both), so the rows + cols - 1 cells form a spanning tree.
void InitialBasis(Simplex& s) {
  // The greedy runs on the cost less a feasible dual (u_i = min_j C_ij,
  // v_j = min_i C_ij - u_i): cheap cells of columns every row finds cheap
  // are taken by the row that needs them least.
  double* u = s.potential;
  double* v = s.potential + s.rows;
  for (int i = 0; i < s.rows; ++i) {
    const double* row_cost = s.cost + i * s.cols;
    u[i] = *std::min_element(row_cost, row_cost + s.cols);
  }
  for (int j = 0; j < s.cols; ++j) v[j] = std::numeric_limits<double>::infinity();
  for (int i = 0; i < s.rows; ++i) {
    for (int j = 0; j < s.cols; ++j) v[j] = std::min(v[j], s.cost[i * s.cols + j] - u[i]);
  }
  for (int i = 0; i < s.rows; ++i) {
    for (int j = 0; j < s.cols; ++j) {
      s.reduced[i * s.cols + j] = s.cost[i * s.cols + j] - u[i] - v[j];
    }
  }
  // Least-cost greedy: the open row whose cheapest open column is the
  // cheapest takes it. Every allocation closes one row or column (the last
  // closes both), so the rows + cols - 1 cells form a spanning tree.
  double* remaining = s.residual;
  std::copy(s.mass, s.mass + s.nodes, remaining);
  int* open_rows = s.cycle;              // scratch until the pivots start
  int* row_best = s.cycle + s.nodes;     // cheapest open column of each row
  for (int i = 0; i < s.rows; ++i) open_rows[i] = i;
  for (int j = 0; j < s.cols; ++j) s.open_cols[j] = j;
  int num_rows = s.rows, num_cols = s.cols;
  auto cheapest = [&](int i) {
    const double* row = s.reduced + i * s.cols;
    int best = s.open_cols[0];
    for (int k = 1; k < num_cols; ++k) {
      if (row[s.open_cols[k]] < row[best]) best = s.open_cols[k];
    }
    return best;
  };
  for (int i = 0; i < s.rows; ++i) row_best[i] = cheapest(i);
  while (num_rows > 0 && num_cols > 0) {
    int pick = 0;
    for (int k = 1; k < num_rows; ++k) {
      const int i = open_rows[k], best = open_rows[pick];
      if (s.reduced[i * s.cols + row_best[i]] < s.reduced[best * s.cols + row_best[best]]) {
        pick = k;
      }
    }
    const int i = open_rows[pick], j = row_best[i];
    const int cell = i * s.cols + j;
    AddCell(s, cell);
    double& row_left = remaining[i];
    double& col_left = remaining[s.rows + j];
    const bool last = num_rows == 1 && num_cols == 1;
    const bool close_col = num_rows == 1 || (num_cols > 1 && col_left < row_left);
    s.flow[cell] = std::max(std::min(row_left, col_left), 0.0);
    row_left -= s.flow[cell];
    col_left -= s.flow[cell];
    if (last) break;
    if (close_col) {
      for (int k = 0; k < num_cols; ++k) {
        if (s.open_cols[k] == j) {
          s.open_cols[k] = s.open_cols[--num_cols];
          break;
        }
      }
      for (int k = 0; k < num_rows; ++k) {
        if (row_best[open_rows[k]] == j) row_best[open_rows[k]] = cheapest(open_rows[k]);
      }
    } else {
      open_rows[pick] = open_rows[--num_rows];
    }
  }
}

// Breadth-first from `start`, whose parent, depth and value are set: sets
// those of the nodes below it, with value(row) + value(col) = values[cell]
// on the tree's cells, in `queue` the nodes in the order visited. Returns
// how many nodes were reached (-1 if the cells hold a cycle).
int HangBelow(Simplex& s, int start, const double* values, double* node_values, int* queue) {
  queue[0] = start;
  int tail = 1;
  for (int head = 0; head < tail; ++head) {
    const int node = queue[head];
    const int* cells = s.adjacent + node * s.nodes;
    for (int k = 0; k < s.degree[node]; ++k) {
      const int cell = cells[k];
      if (cell == s.parent_cell[node]) continue;
      if (tail == s.nodes) return -1;
      const int child = s.OtherEnd(cell, node);
      s.parent[child] = node;
      s.parent_cell[child] = cell;
      s.depth[child] = s.depth[node] + 1;
      node_values[child] = values[cell] - node_values[node];
      queue[tail++] = child;
    }
  }
  return tail;
}

// The whole tree from the root, node 0 (value 0), in s.order. Returns false
// if the basis does not span all nodes.
bool WalkTree(Simplex& s, const double* values, double* node_values) {
  s.parent[0] = -1;
  s.parent_cell[0] = -1;
  s.depth[0] = 0;
  node_values[0] = 0.0;
  return HangBelow(s, 0, values, node_values, s.order) == s.nodes;
}

// The entering cell: the most negative reduced cost of a block of rows
// (Dantzig's rule on a third of the rows at a time), or the first below
// -tolerance (Bland). Returns -1 when the basis is optimal.
#if defined(__x86_64__) && defined(__GNUC__)
// The pricing loop is most of the time: AVX2 where the CPU has it.
__attribute__((target_clones("avx2", "default")))
#endif
int EnteringCell(const Simplex& s, double tolerance, bool first_improving, int* next_row) {
  const double* u = s.potential;
  const double* v = s.potential + s.rows;
  if (first_improving) {
    for (int cell = 0; cell < s.rows * s.cols; ++cell) {
      if (s.cost[cell] - u[cell / s.cols] - v[cell % s.cols] < -tolerance) return cell;
    }
    return -1;
  }
  double best = -tolerance;
  int entering = -1;
  // Block pricing: rows are scanned cyclically from where the last scan
  // stopped, a block of rows at a time; the best cell of the first block
  // that has an improving one enters.
  const int block = std::max(1, s.rows / 3);
  const int start = *next_row;
  for (int scanned = 0; scanned < s.rows; ++scanned) {
    const int i = (start + scanned) % s.rows;
    const double* row_cost = s.cost + i * s.cols;
    // The reduced cost is C_ij - v_j - u_i: the row's minimum of C_ij - v_j
    // is a vectorised reduction (the build passes -fopenmp-simd).
    const double threshold = best + u[i];
    double row_min = threshold;
#pragma omp simd reduction(min : row_min)
    for (int j = 0; j < s.cols; ++j) row_min = std::min(row_min, row_cost[j] - v[j]);
    if (row_min < threshold) {
      for (int j = 0; j < s.cols; ++j) {
        if (row_cost[j] - v[j] == row_min) {
          entering = i * s.cols + j;
          break;
        }
      }
      best = row_min - u[i];
    }
    if (entering >= 0 && (scanned + 1) % block == 0) {
      *next_row = (i + 1) % s.rows;
      return entering;
    }
  }
  return entering;
}

// Moves mass around the cycle `entering` closes; returns the amount moved.
double Pivot(Simplex& s, int entering) {
  // The tree paths from the entering cell's row and column to their common
  // ancestor; on each, the cells alternate -theta, +theta, ... from the end.
  int a = s.RowOf(entering), b = s.ColNodeOf(entering);
  int num_a = 0, num_b = 0;
  int* path_a = s.cycle;
  int* path_b = s.cycle + s.nodes;
  while (s.depth[a] > s.depth[b]) { path_a[num_a++] = s.parent_cell[a]; a = s.parent[a]; }
  while (s.depth[b] > s.depth[a]) { path_b[num_b++] = s.parent_cell[b]; b = s.parent[b]; }
  while (a != b) {
    path_a[num_a++] = s.parent_cell[a]; a = s.parent[a];
    path_b[num_b++] = s.parent_cell[b]; b = s.parent[b];
  }
  int leaving = -1;
  double theta = 0.0;
  for (const auto& [path, count] : {std::pair{path_a, num_a}, std::pair{path_b, num_b}}) {
    for (int k = 0; k < count; k += 2) {
      const int cell = path[k];
      if (leaving < 0 || s.flow[cell] < theta ||
          (s.flow[cell] == theta && cell < leaving)) {
        leaving = cell;
        theta = s.flow[cell];
      }
    }
  }
  bool leaving_on_row_side = false;
  for (int k = 0; k < num_a; k += 2) leaving_on_row_side |= path_a[k] == leaving;
  for (const auto& [path, count] : {std::pair{path_a, num_a}, std::pair{path_b, num_b}}) {
    for (int k = 0; k < count; ++k) s.flow[path[k]] += (k % 2 == 0) ? -theta : theta;
  }
  s.flow[entering] = theta;
  s.flow[leaving] = 0.0;
  RemoveCell(s, leaving);
  AddCell(s, entering);
  // The part of the tree cut off by the leaving cell holds the entering
  // cell's endpoint on that side: it is hung below the other endpoint, and
  // only its parents, depths and potentials change.
  const int moved = leaving_on_row_side ? s.RowOf(entering) : s.ColNodeOf(entering);
  const int anchor = s.OtherEnd(entering, moved);
  s.parent[moved] = anchor;
  s.parent_cell[moved] = entering;
  s.depth[moved] = s.depth[anchor] + 1;
  s.potential[moved] = s.cost[entering] - s.potential[anchor];
  HangBelow(s, moved, s.cost, s.potential, s.order);
  return theta;
}

// Flows of the basic cells from the masses, leaves first (exact for the
// basis: no drift from the pivots' updates).
void TreeFlows(Simplex& s) {
  std::copy(s.mass, s.mass + s.nodes, s.residual);
  for (int k = s.nodes - 1; k > 0; --k) {
    const int node = s.order[k];
    s.flow[s.parent_cell[node]] = std::max(s.residual[node], 0.0);
    s.residual[s.parent[node]] -= s.residual[node];
  }
}

// The extended basis as cell indices of the (real_rows + 1) x
// (real_cols + 1) grid of network_simplex.h.
void WriteBasis(const Simplex& s, int* basis) {
  const int size = BasisSize(s.real_rows, s.real_cols);
  std::fill(basis, basis + size, -1);
  for (int k = 1; k < s.nodes; ++k) {
    const int cell = s.parent_cell[s.order[k]];
    basis[k - 1] = s.RowOf(cell) * (s.real_cols + 1) + cell % s.cols;
  }
}

// Rebuilds the tree of a basis written by WriteBasis.
void ReadBasis(Simplex& s, const int* basis) {
  for (int k = 0; k < BasisSize(s.real_rows, s.real_cols) && basis[k] >= 0; ++k) {
    const int row = basis[k] / (s.real_cols + 1), col = basis[k] % (s.real_cols + 1);
    if (row < s.rows && col < s.cols) AddCell(s, row * s.cols + col);
  }
}

// Shifts (u + t, v - t) so that a dummy's potential is 0: the heavier
// side's potentials are then <= 0 (transport_problem.h).
void WritePotentials(const Simplex& s, const double* node_values, double* u, double* v) {
  double shift = 0.0;
  if (s.rows > s.real_rows) shift = -node_values[s.real_rows];
  if (s.cols > s.real_cols) shift = node_values[s.rows + s.real_cols];
  for (int i = 0; i < s.real_rows; ++i) u[i] = node_values[i] + shift;
  for (int j = 0; j < s.real_cols; ++j) v[j] = node_values[s.rows + j] - shift;
}

}  // namespace

bool SolveNetworkSimplex(const TransportProblem& problem, SimplexWorkspace* workspace,
                         double* flow, double* u, double* v, int* basis) {
  Simplex s = Layout(problem, workspace);
  double cost_scale = 0.0, mass_scale = 0.0;
  for (int cell = 0; cell < s.rows * s.cols; ++cell) {
    cost_scale = std::max(cost_scale, std::abs(s.cost[cell]));
  }
  for (int node = 0; node < s.nodes; ++node) mass_scale += s.mass[node];
  const double cost_tolerance = 1e-12 * cost_scale;
  const double degenerate = 1e-14 * mass_scale;
  const int max_pivots = 50 * s.nodes + 2 * s.rows * s.cols;

  InitialBasis(s);
  bool optimal = false;
  int degenerate_run = 0, next_row = 0;
  if (!WalkTree(s, s.cost, s.potential)) return false;
  for (int pivot = 0; pivot <= max_pivots; ++pivot) {
    const int entering = EnteringCell(s, cost_tolerance, degenerate_run > s.nodes, &next_row);
    if (entering < 0) {
      optimal = true;
      break;
    }
    degenerate_run = Pivot(s, entering) <= degenerate ? degenerate_run + 1 : 0;
  }
  // Potentials and flows afresh from the final basis (no drift from the
  // pivots' updates).
  optimal &= WalkTree(s, s.cost, s.potential);
  TreeFlows(s);
  for (int i = 0; i < s.real_rows; ++i) {
    std::copy(s.flow + i * s.cols, s.flow + i * s.cols + s.real_cols, flow + i * s.real_cols);
  }
  WritePotentials(s, s.potential, u, v);
  WriteBasis(s, basis);
  return optimal;
}

void BasisVjp(const TransportProblem& problem, const int* basis, const double* grad_flow,
              SimplexWorkspace* workspace, double* grad_source, double* grad_target) {
  Simplex s = Layout(problem, workspace);
  ReadBasis(s, basis);
  // The upstream gradient on the extended grid (0 on the dummies' cells)
  // plays the cost's part in the tree solve.
  double* gradient = s.flow;
  for (int i = 0; i < s.real_rows; ++i) {
    std::copy(grad_flow + i * s.real_cols, grad_flow + (i + 1) * s.real_cols,
              gradient + i * s.cols);
  }
  if (!WalkTree(s, gradient, s.potential)) {
    std::fill(grad_source, grad_source + s.real_rows, 0.0);
    std::fill(grad_target, grad_target + s.real_cols, 0.0);
    return;
  }
  // A dummy column's mass is sum(source) - sum(target): d/d source_i adds
  // its value, d/d target_j subtracts it (and the converse for a dummy row):
  // the same shift as the potentials'.
  WritePotentials(s, s.potential, grad_source, grad_target);
}

}  // namespace tf_deepemd
