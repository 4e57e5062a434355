// The 'L2' EMD: minimise <C,F> + l2/2 ||F||^2 over F >= 0 with F 1 <= a,
// F^T 1 <= b and 1^T F 1 = min(sum a, sum b) (l2 > 0, every mass > 0).
//
// Dual (minimised here, x = (u, v)):
//   Phi(u, v) = 1/(2 l2) sum_ij max(u_i + v_j - C_ij, 0)^2 - <u,a> - <v,b>,
// with F = max(u_i + v_j - C_ij, 0) / l2 and grad Phi = (F 1 - a, F^T 1 - b).
// Balanced: u, v free ((u + t, v - t) is a free constant). Unbalanced: the
// heavier side's potentials are bounded above by 0 (0 on nodes with slack).
// Phi is piecewise quadratic; its generalised Hessian is H / l2 with
// H = [D_r A; A^T D_c], A the active cells (u_i + v_j > C_ij), D the degrees.
// Iteration (projected semismooth Newton, Bertsekas' bound treatment):
//  1. Components of the active graph that touch no node held at its bound
//     make H singular along n = (+1 on their rows, -1 on their columns);
//     Phi is exactly minimised along each such n that still has a gradient
//     (a 1-D piecewise quadratic). At most a few such rounds in a row, as
//     neighbouring components can pass an imbalance back and forth.
//  2. Newton step H d = -l2 grad on the free nodes (rows eliminated onto the
//     columns, LDL^T of that Schur complement pinning one node per singular
//     component), bounded nodes at 0 with grad <= 0 held there; projected
//     Armijo backtracking on the exactly evaluated change of Phi.
// Once the active set is right a full Newton step lands on the exact
// solution; the loop stops when the KKT conditions hold to rounding (the
// flows carry eps |C| / l2 each) or after kMaxIterations (then false).
// Start: if l2 times the mean flow per cell is small against the spread of
// C, the linear program's optimum (network_simplex.h) with its basis tree B
// and flows F: u_i + v_j = C_ij + l2 F_ij on B, the exact solution when B
// is the QP's support (typical at small l2: no iteration left). Otherwise
// the heavier side (else the rows) at 0, the other at min C.
//
// VJP. With S the support, y the potentials of the constrained nodes (all
// nodes if balanced, else the lighter side and the heavier nodes with a
// potential < 0) and K their incidence to S: F_S = (K^T y - C_S) / l2 and
// K F_S = m, so L y = l2 m + K C_S with L = K K^T. For G = dLoss/dF:
//   z = L^+ K G_S,  dC_S = (K^T z - G_S) / l2,  dm = z,
//   dl2 = (<z, m> - <G_S, F_S>) / l2,
// zero off the support and on the unconstrained nodes.
#include "quadratic.h"

#include "network_simplex.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <functional>
#include <limits>
#include <new>

namespace tf_deepemd {
namespace {

constexpr int kMaxIterations = 400;
constexpr int kMaxBacktracks = 50;
constexpr int kMaxBalancingRounds = 4;  // then a Newton step regardless
constexpr double kArmijo = 1e-4;
constexpr double kPivotFloor = 1e-10;    // relative; smaller pivots pin
constexpr double kMassTolerance = 1e-13;  // of the total mass
constexpr double kRoundingUlps = 16 * DBL_EPSILON;
constexpr double kNearLinear = 0.03;  // see NearLinear

enum class Heavier { kNone, kRows, kCols };

// The problem with rows >= cols (transposed if needed); nodes are numbered
// rows 0..n-1, then columns n..n+m-1.
struct Canonical {
  int n = 0, m = 0;
  bool transposed = false;
  Heavier heavier = Heavier::kNone;
  double l2 = 0, total_mass = 0;
  bool Bounded(int k) const {
    return heavier == Heavier::kRows ? k < n
                                     : heavier == Heavier::kCols && k >= n;
  }
  int Original(int i, int j) const {  // index of cell (i, j) in the input
    return transposed ? j * n + i : i * m + j;
  }
};

struct Arrays {
  double *cost, *cells, *grad_cells;  // n*m each
  double *x, *g, *d, *trial, *mass, *deg, *tol, *scale;  // n+m each
  double *schur, *schur_rhs, *breaks;  // m*m, m, 2*n*m
  double* tree_values;  // n+m+2
  int *in_system, *grounded;  // n+m each
  int *label, *list;  // n+m+1, 2 (n+m) + 1
  int* tree;  // 2 (n+m) + 3
};

Arrays Carve(int n, int m, QuadraticWorkspace* ws) {
  const size_t nm = size_t(n) * m, nodes = size_t(n) + m;
  ws->buffer.resize(5 * nm + 9 * nodes + size_t(m) * m + m + 2);
  ws->indices.resize(7 * nodes + 5);
  double* p = ws->buffer.data();
  auto take = [&p](size_t count) { double* q = p; p += count; return q; };
  Arrays a;
  a.cost = take(nm), a.cells = take(nm), a.grad_cells = take(nm);
  a.x = take(nodes), a.g = take(nodes), a.d = take(nodes);
  a.trial = take(nodes), a.mass = take(nodes), a.deg = take(nodes);
  a.tol = take(nodes), a.scale = take(nodes);
  a.schur = take(size_t(m) * m), a.schur_rhs = take(m), a.breaks = take(2 * nm);
  a.tree_values = take(nodes + 2);
  int* q = ws->indices.data();
  a.in_system = q, a.label = q + nodes, a.grounded = q + 2 * nodes + 1;
  a.list = q + 3 * nodes + 1, a.tree = q + 5 * nodes + 2;
  return a;
}

// Copies cost and masses in canonical orientation; returns the shape.
Canonical Canonicalise(const TransportProblem& p, double l2,
                       QuadraticWorkspace* ws, Arrays* a) {
  Canonical c;
  c.transposed = p.rows < p.cols;
  c.n = c.transposed ? p.cols : p.rows;
  c.m = c.transposed ? p.rows : p.cols;
  c.l2 = l2;
  *a = Carve(c.n, c.m, ws);
  const double* row_mass = c.transposed ? p.target : p.source;
  const double* col_mass = c.transposed ? p.source : p.target;
  double row_total = 0, col_total = 0;
  for (int i = 0; i < c.n; ++i) row_total += a->mass[i] = row_mass[i];
  for (int j = 0; j < c.m; ++j) col_total += a->mass[c.n + j] = col_mass[j];
  for (int i = 0; i < c.n; ++i)
    for (int j = 0; j < c.m; ++j) a->cost[i * c.m + j] = p.cost[c.Original(i, j)];
  if (!p.balanced)
    c.heavier = row_total > col_total ? Heavier::kRows : Heavier::kCols;
  c.total_mass = std::max(row_total, col_total);
  return c;
}

// cells = u_i + v_j - C_ij; g = marginals - masses; tol = what rounding
// leaves of g (the flows carry eps * |u_i + v_j - C_ij| / l2 each).
void Evaluate(const Canonical& c, Arrays& a) {
  const int n = c.n, m = c.m;
  std::fill(a.g, a.g + n + m, 0.0);
  std::fill(a.scale, a.scale + n + m, 0.0);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < m; ++j) {
      const double z = a.x[i] + a.x[n + j] - a.cost[i * m + j];
      a.cells[i * m + j] = z;
      if (z <= 0) continue;
      const double size = std::fabs(a.x[i]) + std::fabs(a.x[n + j]) +
                          std::fabs(a.cost[i * m + j]);
      a.g[i] += z / c.l2, a.g[n + j] += z / c.l2;
      a.scale[i] += size, a.scale[n + j] += size;
    }
  }
  for (int k = 0; k < n + m; ++k) {
    a.g[k] -= a.mass[k];
    a.tol[k] = kMassTolerance * c.total_mass + kRoundingUlps * a.scale[k] / c.l2;
  }
}

bool KktHolds(const Canonical& c, const Arrays& a) {
  for (int k = 0; k < c.n + c.m; ++k) {
    const bool equality = !c.Bounded(k) || a.x[k] < 0;
    if (equality ? std::fabs(a.g[k]) > a.tol[k] : a.g[k] > a.tol[k]) return false;
  }
  return true;
}

// Bounded nodes at (or within eps of) 0 whose gradient pushes them up are
// held at 0; the others are in the Newton system.
void MarkFreeNodes(const Canonical& c, Arrays& a) {
  double width = 0;
  for (int k = 0; k < c.n + c.m; ++k)
    if (c.Bounded(k)) {
      const double step = a.x[k] - std::min(a.x[k] - c.l2 * a.g[k], 0.0);
      width += step * step;
    }
  const double eps = std::sqrt(width);
  for (int k = 0; k < c.n + c.m; ++k)
    a.in_system[k] = !(c.Bounded(k) && a.x[k] >= -eps && a.g[k] <= a.tol[k]);
}

int Find(int* parent, int k) {
  while (parent[k] != k) k = parent[k] = parent[parent[k]];
  return k;
}

// Calls visit(cell, sign) for the cells with one end in the component
// `members` (label `root`); sign = +1 from its rows, -1 from its columns.
template <typename Visit>
void ForEachCrossingCell(const Canonical& c, const Arrays& a, const int* members,
                         int count, int root, Visit visit) {
  for (int p = 0; p < count; ++p) {
    const int k = members[p];
    if (k < c.n) {
      for (int j = 0; j < c.m; ++j)
        if (a.label[c.n + j] != root) visit(k * c.m + j, 1);
    } else {
      for (int i = 0; i < c.n; ++i)
        if (a.label[i] != root) visit(i * c.m + k - c.n, -1);
    }
  }
}

// Exact minimisation of Phi along (+1 on rows, -1 on columns of a component
// that reaches no held node); h(t) = dPhi/dt is nondecreasing and piecewise
// linear. Works in tau = sigma t >= 0, sigma the descent sign; returns
// whether x moved.
bool SearchAlongComponent(const Canonical& c, Arrays& a, const int* members,
                          int count) {
  const int n = c.n, root = a.label[members[0]];
  double h0 = 0, tol = 0;  // h(0) = sum of g over rows - over columns
  for (int p = 0; p < count; ++p) {
    const int k = members[p];
    h0 += k < n ? a.g[k] : -a.g[k];
    tol += a.tol[k];
  }
  if (!(std::fabs(h0) > tol)) return false;
  const int sigma = h0 < 0 ? 1 : -1;
  double* up = a.breaks;  // slope +1/l2 from these tau on
  double* down = a.breaks + size_t(n) * c.m;  // slope -1/l2 from these on
  int n_up = 0, n_down = 0, active = 0;
  ForEachCrossingCell(c, a, members, count, root, [&](int cell, int sign) {
    const double z = a.cells[cell];
    if (z > 0) ++active;
    if (sign * sigma > 0 && z <= 0) up[n_up++] = -z;
    if (sign * sigma < 0 && z > 0) down[n_down++] = z;
  });
  double tau_max = std::numeric_limits<double>::infinity();
  for (int p = 0; p < count; ++p) {
    const int k = members[p];
    if (c.Bounded(k) && (k < n ? sigma : -sigma) > 0)  // x_k would rise
      tau_max = std::min(tau_max, -a.x[k]);
  }
  const std::greater<double> later;  // min-heaps: the root is usually near
  std::make_heap(up, up + n_up, later);
  std::make_heap(down, down + n_down, later);
  double tau = 0, value = sigma * h0;  // value < 0, rising to its root
  while (true) {
    const double slope = active / c.l2;
    const double next = std::min({n_up > 0 ? up[0] : tau_max,
                                  n_down > 0 ? down[0] : tau_max, tau_max});
    if (slope > 0 && tau - value / slope <= next) {
      tau -= value / slope;
      break;
    }
    if (next == tau_max) {
      if (std::isinf(tau_max)) return false;
      tau = tau_max;
      break;
    }
    value += slope * (next - tau);
    tau = next;
    if (n_up > 0 && up[0] == next) {
      std::pop_heap(up, up + n_up--, later), ++active;
    } else {
      std::pop_heap(down, down + n_down--, later), --active;
    }
  }
  const double t = sigma * tau;
  if (!(t > 0 || t < 0)) return false;
  for (int p = 0; p < count; ++p) {
    const int k = members[p];
    a.x[k] += k < n ? t : -t;
    if (c.Bounded(k)) a.x[k] = std::min(a.x[k], 0.0);  // rounding past 0
  }
  ForEachCrossingCell(c, a, members, count, root, [&](int cell, int sign) {
    const double before = std::max(a.cells[cell], 0.0);
    a.cells[cell] += sign * t;
    const double change = (std::max(a.cells[cell], 0.0) - before) / c.l2;
    a.g[cell / c.m] += change, a.g[n + cell % c.m] += change;
  });
  return true;
}

// Step 1: components of the active graph over the free nodes; those that
// reach no held node are searched along their null direction.
bool BalanceComponents(const Canonical& c, Arrays& a) {
  const int n = c.n, m = c.m, nodes = n + m, ground = nodes;
  int* parent = a.label;  // held nodes all stand for the node `ground`
  for (int k = 0; k <= nodes; ++k)
    parent[k] = k == ground || a.in_system[k] ? k : ground;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < m; ++j)
      if (a.cells[i * m + j] > 0) parent[Find(parent, i)] = Find(parent, n + j);
  const int grounded_root = Find(parent, ground);
  for (int k = 0; k < nodes; ++k) {
    parent[k] = Find(parent, k);
    a.grounded[k] = parent[k] == grounded_root;
  }
  // Members of the ungrounded components, grouped (counting sort on the
  // root, which is never `ground`); the other nodes get label -1.
  int *start = a.list, *members = a.list + nodes + 1;
  std::fill(start, start + nodes + 1, 0);
  for (int k = 0; k < nodes; ++k) {
    if (!a.in_system[k] || a.grounded[k]) parent[k] = -1;
    else ++start[parent[k] + 1];
  }
  for (int k = 0; k < nodes; ++k) start[k + 1] += start[k];
  for (int k = 0; k < nodes; ++k)
    if (parent[k] >= 0) members[start[parent[k]]++] = k;
  bool moved = false;
  for (int root = 0, begin = 0; root < nodes; begin = start[root++]) {
    const int count = start[root] - begin;
    if (count > 0)
      moved = SearchAlongComponent(c, a, members + begin, count) || moved;
  }
  return moved;
}

// In place: LDL^T of the symmetric s (lower triangle, size m) with the
// unit lower factor below the diagonal; a pivot that vanishes marks its node
// pinned (the last node of a singular component; nodes outside the system
// are pinned from the start).
void FactorPinning(int m, const int* in_system, const double* diagonal,
                   double* s, int* pinned) {
  for (int k = 0; k < m; ++k) {
    const double pivot = s[k * m + k];
    pinned[k] = !in_system[k] || pivot <= kPivotFloor * std::max(1.0, diagonal[k]);
    if (pinned[k]) continue;
    for (int i = k + 1; i < m; ++i) {
      const double l = s[i * m + k] / pivot;
      if (l != 0)
        for (int j = k + 1; j <= i; ++j) s[i * m + j] -= l * s[j * m + k];
    }
    for (int i = k + 1; i < m; ++i) s[i * m + k] /= pivot;
  }
}

// Solves with the factor of FactorPinning, y = 0 on the pinned nodes.
void SubstitutePinned(int m, const double* s, const int* pinned, double* y) {
  for (int k = 0; k < m; ++k) {
    if (pinned[k]) { y[k] = 0; continue; }
    for (int i = k + 1; i < m; ++i) y[i] -= s[i * m + k] * y[k];
  }
  for (int k = m - 1; k >= 0; --k) {
    if (pinned[k]) continue;
    y[k] /= s[k * m + k];
    for (int i = k + 1; i < m; ++i) y[k] -= s[i * m + k] * y[i];
  }
}

// Solves [D_r A; A^T D_c] out = rhs on the nodes with in_system, A_ij =
// [cells_ij > 0], D counting all such cells of a node. Rows are eliminated
// onto the columns; the factor of that Schur complement pins (out = 0) one
// node per singular component, whose equation is then dropped.
void SolveOnActiveGraph(const Canonical& c, Arrays& a, const double* cells,
                        const double* rhs, double* out) {
  const int n = c.n, m = c.m;
  const int* in = a.in_system;
  double *s = a.schur, *y = a.schur_rhs, *deg = a.deg;
  int* cols = a.list;
  std::fill(deg, deg + n + m, 0.0);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < m; ++j)
      if (cells[i * m + j] > 0) deg[i] += 1, deg[n + j] += 1;
  std::fill(s, s + size_t(m) * m, 0.0);
  for (int j = 0; j < m; ++j) y[j] = in[n + j] ? rhs[n + j] : 0;
  for (int i = 0; i < n; ++i) {
    if (!in[i] || deg[i] == 0) continue;
    int count = 0;
    for (int j = 0; j < m; ++j)
      if (cells[i * m + j] > 0 && in[n + j]) cols[count++] = j;
    const double w = 1 / deg[i];
    for (int p = 0; p < count; ++p) {
      y[cols[p]] -= w * rhs[i];
      for (int r = 0; r <= p; ++r) s[cols[p] * m + cols[r]] -= w;  // lower
    }
  }
  for (int j = 0; j < m; ++j) s[j * m + j] += deg[n + j];
  int* pinned = a.grounded;  // free scratch here
  FactorPinning(m, in + n, deg + n, s, pinned);
  SubstitutePinned(m, s, pinned, y);
  for (int j = 0; j < m; ++j) out[n + j] = y[j];
  for (int i = 0; i < n; ++i) {
    out[i] = 0;
    if (!in[i] || deg[i] == 0) continue;
    double sum = rhs[i];
    for (int j = 0; j < m; ++j)
      if (cells[i * m + j] > 0 && in[n + j]) sum -= y[j];
    out[i] = sum / deg[i];
  }
}

// Exact change of Phi for the step s, cell by cell (no cancellation of the
// large totals).
double DualChange(const Canonical& c, const Arrays& a, const double* s) {
  const int n = c.n, m = c.m;
  double change = 0;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < m; ++j) {
      const double z0 = a.cells[i * m + j], shift = s[i] + s[n + j];
      const double z1 = z0 + shift;
      const double p0 = std::max(z0, 0.0), p1 = std::max(z1, 0.0);
      const double dp = z0 > 0 && z1 > 0 ? shift : p1 - p0;
      change += dp * (p0 + p1);
    }
  change /= 2 * c.l2;
  for (int k = 0; k < n + m; ++k) change -= s[k] * a.mass[k];
  return change;
}

// Step 2: Newton direction and projected Armijo backtracking.
bool NewtonStep(const Canonical& c, Arrays& a) {
  const int nodes = c.n + c.m;
  for (int k = 0; k < nodes; ++k) a.trial[k] = -c.l2 * a.g[k];
  SolveOnActiveGraph(c, a, a.cells, a.trial, a.d);
  for (int k = 0; k < nodes; ++k)
    if (!a.in_system[k]) a.d[k] = -a.x[k];
  double alpha = 1;
  for (int attempt = 0; attempt < kMaxBacktracks; ++attempt, alpha /= 2) {
    double predicted = 0;
    for (int k = 0; k < nodes; ++k) {
      double next = a.x[k] + alpha * a.d[k];
      if (c.Bounded(k)) next = std::min(next, 0.0);
      a.trial[k] = next - a.x[k];
      predicted += a.g[k] * a.trial[k];
    }
    if (!(predicted < 0)) return false;
    if (DualChange(c, a, a.trial) <= kArmijo * predicted) {
      for (int k = 0; k < nodes; ++k)
        a.x[k] = c.Bounded(k) ? std::min(a.x[k] + alpha * a.d[k], 0.0)
                              : a.x[k] + alpha * a.d[k];
      return true;
    }
  }
  return false;
}

// Whether the linear program's optimum is the better start: l2 times the
// mean flow per cell is small against the spread of the costs (then the
// QP's support stays close to the LP's basis tree).
bool NearLinear(const Canonical& c, const Arrays& a) {
  const int cells = c.n * c.m;
  double sum = 0, square = 0, mass = 0;  // of C - C_00
#pragma omp simd reduction(+ : sum, square)
  for (int k = 0; k < cells; ++k) {
    const double shifted = a.cost[k] - a.cost[0];
    sum += shifted, square += shifted * shifted;
  }
  const double variance = square / cells - (sum / cells) * (sum / cells);
  for (int i = 0; i < c.n; ++i) mass += a.mass[i];
  return c.l2 * mass / cells < kNearLinear * std::sqrt(std::max(variance, 0.0));
}

// Start at the linear program's optimum: with B its basis tree and F its
// flows, x solves u_i + v_j = C_ij + l2 F_ij on B (0 on a dummy's cells,
// the dummy at 0), the QP's exact solution if B is its support. Returns
// false if the simplex failed.
bool LinearStart(const TransportProblem& p, const Canonical& c, Arrays& a,
                 SimplexWorkspace* simplex) {
  const int rows = p.rows, cols = p.cols, size = BasisSize(rows, cols);
  double *u = a.d, *v = a.d + rows, *w = a.tree_values;  // w on the extended
  int *basis = a.tree, *seen = a.tree + size;  // nodes: rows, dummy, cols, dummy
  if (!SolveNetworkSimplex(p, simplex, a.grad_cells, u, v, basis)) return false;
  const int nodes = rows + cols + 2;
  std::fill(seen, seen + nodes, 0);
  seen[0] = 1, w[0] = 0;
  for (bool grew = true; grew;) {  // one sweep when the basis is in tree order
    grew = false;
    for (int e = 0; e < size && basis[e] >= 0; ++e) {
      const int i = basis[e] / (cols + 1), j = basis[e] % (cols + 1);
      const int col = rows + 1 + j;
      if (seen[i] == seen[col]) continue;
      const double value = i < rows && j < cols ? c.l2 * a.grad_cells[i * cols + j] : 0;
      const int from = seen[i] ? i : col, to = seen[i] ? col : i;
      w[to] = value - w[from], seen[to] = grew = true;
    }
  }
  // (u + t, v - t) puts the dummy (if any) at 0.
  const double t = seen[rows] ? -w[rows] : seen[nodes - 1] ? w[nodes - 1] : 0;
  for (int i = 0; i < rows; ++i)
    a.x[c.transposed ? c.n + i : i] = u[i] + (seen[i] ? w[i] + t : 0);
  for (int j = 0; j < cols; ++j)
    a.x[c.transposed ? j : c.n + j] = v[j] + (seen[rows + 1 + j] ? w[rows + 1 + j] - t : 0);
  for (int k = 0; k < c.n + c.m; ++k)
    if (c.Bounded(k)) a.x[k] = std::min(a.x[k], 0.0);
  return true;
}

// Anchor side (the heavier one, else the rows) at 0, the other side at the
// level where its cheapest cell starts to carry flow.
void WarmStart(const Canonical& c, Arrays& a) {
  const int n = c.n, m = c.m;
  const bool anchor_rows = c.heavier != Heavier::kCols;
  std::fill(a.x, a.x + n + m, 0.0);
  for (int k = 0; k < (anchor_rows ? m : n); ++k) {
    double lowest = std::numeric_limits<double>::infinity();
    for (int l = 0; l < (anchor_rows ? n : m); ++l)
      lowest = std::min(lowest, anchor_rows ? a.cost[l * m + k] : a.cost[k * m + l]);
    a.x[anchor_rows ? n + k : k] = lowest;
  }
}

// (u + t, v - t) with sum(u * a) == sum(v * b).
void Centre(const Canonical& c, const double* mass, double* x) {
  double row = 0, col = 0, total = 0;
  for (int k = 0; k < c.n + c.m; ++k) {
    (k < c.n ? row : col) += x[k] * mass[k];
    total += mass[k];
  }
  const double t = (col - row) / total;
  for (int k = 0; k < c.n + c.m; ++k) x[k] += k < c.n ? t : -t;
}

void WriteNodes(const Canonical& c, const double* values, double* rows_out,
                double* cols_out) {
  const double* canonical_rows = c.transposed ? values + c.n : values;
  const double* canonical_cols = c.transposed ? values : values + c.n;
  std::copy(canonical_rows, canonical_rows + (c.transposed ? c.m : c.n), rows_out);
  std::copy(canonical_cols, canonical_cols + (c.transposed ? c.n : c.m), cols_out);
}

bool Valid(const TransportProblem& p, double l2) {
  return p.rows > 0 && p.cols > 0 && l2 > 0 && std::isfinite(l2);
}

}  // namespace

bool SolveQuadratic(const TransportProblem& problem, double l2,
                    QuadraticWorkspace* workspace, double* flow, double* u,
                    double* v) {
  if (!Valid(problem, l2)) return false;
  try {
    Arrays a;
    const Canonical c = Canonicalise(problem, l2, workspace, &a);
    if (!NearLinear(c, a) || !LinearStart(problem, c, a, &workspace->simplex))
      WarmStart(c, a);
    bool converged = false;
    int balancing_rounds = 0;  // in a row; components can trade imbalance
    for (int iteration = 0; iteration < kMaxIterations; ++iteration) {
      Evaluate(c, a);
      if ((converged = KktHolds(c, a))) break;
      MarkFreeNodes(c, a);
      const bool newton_due = balancing_rounds == kMaxBalancingRounds;
      if (!newton_due && BalanceComponents(c, a)) {
        ++balancing_rounds;
        continue;
      }
      balancing_rounds = 0;
      if (!NewtonStep(c, a) && !newton_due) break;
    }
    if (!converged) Evaluate(c, a), converged = KktHolds(c, a);
    for (int i = 0; i < c.n; ++i)
      for (int j = 0; j < c.m; ++j)
        flow[c.Original(i, j)] = std::max(a.cells[i * c.m + j], 0.0) / l2;
    if (c.heavier == Heavier::kNone) Centre(c, a.mass, a.x);
    WriteNodes(c, a.x, u, v);
    return converged;
  } catch (const std::bad_alloc&) {
    return false;
  }
}

void QuadraticVjp(const TransportProblem& problem, double l2,
                  const double* flow, const double* u, const double* v,
                  const double* grad_flow, QuadraticWorkspace* workspace,
                  double* grad_cost, double* grad_source, double* grad_target,
                  double* grad_l2) {
  if (!Valid(problem, l2)) return;
  Arrays a;
  Canonical c;
  try {
    c = Canonicalise(problem, l2, workspace, &a);
  } catch (const std::bad_alloc&) {  // no gradient rather than an exception
    std::fill(grad_cost, grad_cost + problem.rows * problem.cols, 0.0);
    std::fill(grad_source, grad_source + problem.rows, 0.0);
    std::fill(grad_target, grad_target + problem.cols, 0.0);
    *grad_l2 = 0;
    return;
  }
  const int n = c.n, m = c.m;
  const double* row_potential = c.transposed ? v : u;
  const double* col_potential = c.transposed ? u : v;
  for (int k = 0; k < n + m; ++k) {
    const double potential = k < n ? row_potential[k] : col_potential[k - n];
    a.in_system[k] = !c.Bounded(k) || potential < 0;
    a.trial[k] = 0;  // K G_S
  }
  double flow_dot_grad = 0;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < m; ++j) {
      const int cell = c.Original(i, j);
      const double f = flow[cell] > 0 ? flow[cell] : 0;
      a.cells[i * m + j] = f;
      a.grad_cells[i * m + j] = grad_flow[cell];
      if (f == 0) continue;
      a.trial[i] += grad_flow[cell], a.trial[n + j] += grad_flow[cell];
      flow_dot_grad += grad_flow[cell] * f;
    }
  SolveOnActiveGraph(c, a, a.cells, a.trial, a.x);
  for (int k = 0; k < n + m; ++k)
    if (!a.in_system[k]) a.x[k] = 0;
  if (c.heavier == Heavier::kNone) Centre(c, a.mass, a.x);
  double z_dot_mass = 0;
  for (int k = 0; k < n + m; ++k) z_dot_mass += a.x[k] * a.mass[k];
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < m; ++j)
      grad_cost[c.Original(i, j)] =
          a.cells[i * m + j] > 0
              ? (a.x[i] + a.x[n + j] - a.grad_cells[i * m + j]) / l2
              : 0;
  *grad_l2 = (z_dot_mass - flow_dot_grad) / l2;
  WriteNodes(c, a.x, grad_source, grad_target);
}

}  // namespace tf_deepemd
