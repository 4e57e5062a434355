"""The deep-metric-learning evaluation: every gallery image queries the rest.

`evaluate_leave_one_out` ranks the gallery for each query (itself left
out) with up to three methods and scores them with `metrics`:

* ``'global'``: cosine of the global features (the shortlist order);
* ``'uniform'``: the top-K shortlist re-ranked by DeepEMD with uniform
  node weights;
* ``'cross_reference'``: re-ranked by DeepEMD with cross-reference weights.

The shortlist is computed once per query batch and shared by the methods;
mAP uses the full ranking: the (re-ranked) shortlist followed by the rest of
the gallery in global-feature order. Queries per second count the search
only (shortlist, plus re-ranking for the EMD methods), measured after a
warm-up batch that traces the compiled steps; the gallery is embedded once,
beforehand, and timed separately by the caller.

`RetrievalSettings` (gin: ``retrieval.*``) holds the protocol's settings
for ``tools/retrieve.py``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional, Sequence

import gin
import numpy as np
import tensorflow as tf

from tf_deepemd.ops.matching import NODE_WEIGHTS
from tf_deepemd.retrieval import metrics as metrics_lib
from tf_deepemd.retrieval.index import GalleryIndex, global_features
from tf_deepemd.retrieval.search import rerank, shortlist
from tf_deepemd.progress import Progress

METHODS = ("global", "uniform", "cross_reference")
METHOD_LABELS = {
    "global": "global features (cosine)",
    "uniform": "EMD re-rank, uniform weights",
    "cross_reference": "EMD re-rank, cross-reference",
}


def check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown or len(set(methods)) != len(methods):
        raise ValueError(f"`methods` must be distinct names from {METHODS}, got {methods}.")
    return methods


@gin.configurable("retrieval")
@dataclasses.dataclass
class RetrievalSettings:
    """Settings of a leave-one-out retrieval evaluation (``tools/retrieve.py``).

    Attributes:
      split: the gallery split (classes unseen in training): e.g. ``'test'``,
        or ``'dml_test'`` for CUB's classes 101-200.
      shortlist_size: K, candidates re-ranked per query.
      methods: any of ``'global'``, ``'uniform'``, ``'cross_reference'``.
      recall_ks: Recall@K cut-offs.
      query_batch_size: queries per re-ranking step (one solver call each).
      max_queries: evaluate this many queries drawn at random (None: every
        gallery image); they still search the whole gallery.
      query_seed: seed of that draw.
      embed_batch_size: images per encoder call when indexing.
      solver_tolerance: EMD solver tolerance of the re-ranking; None = the
        model head's (the solver's default, 1e-7 in float32). A ranking
        needs less: 1e-4 halves the cross-reference re-ranking time
        (`benchmarks/retrieval_speed.py`) and moves scores by < 1e-4.
    """

    split: str = "test"
    shortlist_size: int = 100
    methods: Sequence[str] = METHODS
    recall_ks: Sequence[int] = metrics_lib.DEFAULT_RECALL_KS
    query_batch_size: int = 32
    max_queries: Optional[int] = None
    query_seed: int = 0
    embed_batch_size: int = 128
    solver_tolerance: Optional[float] = None

    def check(self):
        """ValueError naming the ``retrieval.*`` binding."""
        for name in ("shortlist_size", "query_batch_size", "embed_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"retrieval.{name} must be >= 1, got {getattr(self, name)}.")
        if self.solver_tolerance is not None and not float(self.solver_tolerance) > 0:
            raise ValueError(f"retrieval.solver_tolerance must be > 0 or None, got {self.solver_tolerance}.")
        if self.max_queries is not None and int(self.max_queries) < 1:
            raise ValueError(f"retrieval.max_queries must be >= 1 or None, got {self.max_queries}.")
        for name, check in (("methods", check_methods), ("recall_ks", metrics_lib.check_ks)):
            try:
                check(getattr(self, name))
            except ValueError as error:
                raise ValueError(f"retrieval.{name}: {error}") from None


def evaluate_leave_one_out(
    index: GalleryIndex,
    *,
    methods: Sequence[str] = METHODS,
    shortlist_size: int = 100,
    ks: Sequence[int] = metrics_lib.DEFAULT_RECALL_KS,
    query_batch_size: int = 32,
    max_queries: Optional[int] = None,
    query_seed: int = 0,
    solver_tolerance: Optional[float] = None,
    solver_max_iterations: int = 100,
    progress: Optional[str] = None,
) -> dict:
    """Recall@K, mAP and queries/s of each method, leave-one-out.

    Args:
      index: the gallery (at least 2 images).
      methods: see the module docstring.
      shortlist_size: K, ``1 <= K <= G - 1``.
      ks: Recall@K cut-offs, each ``<= G - 1``.
      query_batch_size: queries per step.
      max_queries: random subset of queries (None: all G).
      query_seed: seed of the subset.
      solver_tolerance, solver_max_iterations: EMD solver settings.
      progress: show the count of queries done, their rate and the time
        left, labelled with this (`tf_deepemd.progress.Progress`),
        updated after every batch; None: nothing.

    Returns:
      ``{'gallery_size', 'queries', 'num_classes', 'shortlist_size',
      'recall_ks', 'methods': {method: {'recall@k' (%), 'mAP' (%),
      'queries', 'queries_without_match', 'seconds',
      'queries_per_second'}}}``.

    Raises:
      ValueError: naming the argument.
    """
    methods = check_methods(methods)
    if not isinstance(index, GalleryIndex):
        raise ValueError(f"`index` must be a GalleryIndex, got {type(index).__name__}.")
    size = index.size
    if size < 2:
        raise ValueError(f"`index` has {size} image(s); leave-one-out retrieval needs at least 2.")
    if int(shortlist_size) != shortlist_size or not 1 <= int(shortlist_size) <= size - 1:
        raise ValueError(
            f"`shortlist_size` must be an integer in [1, {size - 1}] (the gallery size minus the "
            f"query), got {shortlist_size}."
        )
    ks = metrics_lib.check_ks(ks, size - 1)
    if int(query_batch_size) < 1:
        raise ValueError(f"`query_batch_size` must be >= 1, got {query_batch_size}.")
    shortlist_size, query_batch_size = int(shortlist_size), int(query_batch_size)
    rows = np.arange(size)
    if max_queries is not None:
        if int(max_queries) < 1:
            raise ValueError(f"`max_queries` must be >= 1 or None, got {max_queries}.")
        if int(max_queries) < size:
            rows = np.sort(np.random.default_rng(query_seed).choice(size, int(max_queries), replace=False))

    gallery_nodes = tf.constant(index.nodes)
    gallery_global = tf.constant(index.global_features)
    class_sizes = np.bincount(index.labels - index.labels.min())
    num_relevant = class_sizes[index.labels[rows] - index.labels.min()] - 1
    scores = {method: metrics_lib.RetrievalMetrics(ks) for method in methods}
    seconds = dict.fromkeys(methods, 0.0)
    emd_methods = [m for m in methods if m in NODE_WEIGHTS]
    solver = dict(tolerance=solver_tolerance, max_iterations=solver_max_iterations)

    def batch_inputs(batch_rows):
        query_nodes = index.nodes[batch_rows]
        return query_nodes, global_features(query_nodes), batch_rows.astype(np.int32)

    # Warm-up: trace every compiled step once, outside the timings.
    query_nodes, query_global, exclude = batch_inputs(rows[:query_batch_size])
    candidates, _ = shortlist(query_global, gallery_global, shortlist_size, exclude)
    for method in emd_methods:
        rerank(query_nodes, gallery_nodes, candidates, method, **solver)[0].numpy()

    display = Progress(len(rows), progress, unit="query", units="queries") if progress else None
    for start in range(0, len(rows), query_batch_size):
        batch_rows = rows[start : start + query_batch_size]
        query_nodes, query_global, exclude = batch_inputs(batch_rows)
        query_labels = index.labels[batch_rows]
        relevant = num_relevant[start : start + query_batch_size]
        # The full ranking (for mAP) is not timed: a search only needs K.
        full, _ = shortlist(query_global, gallery_global, size - 1, exclude)
        full = full.numpy()
        tick = time.perf_counter()
        candidates, _ = shortlist(query_global, gallery_global, shortlist_size, exclude)
        candidates = candidates.numpy()
        shortlist_seconds = time.perf_counter() - tick
        if "global" in methods:
            seconds["global"] += shortlist_seconds
            scores["global"].update(index.labels[full], query_labels, relevant)
        for method in emd_methods:
            tick = time.perf_counter()
            head, _ = rerank(query_nodes, gallery_nodes, candidates, method, **solver)
            head = head.numpy()
            seconds[method] += shortlist_seconds + time.perf_counter() - tick
            ranking = np.concatenate([head, full[:, shortlist_size:]], axis=1)
            scores[method].update(index.labels[ranking], query_labels, relevant)
        if display:
            display.update(start + len(batch_rows))

    results = {}
    for method in methods:
        result = scores[method].result()
        result["seconds"] = round(seconds[method], 3)
        result["queries_per_second"] = round(len(rows) / max(seconds[method], 1e-9), 2)
        results[method] = result
    return {
        "gallery_size": size,
        "queries": int(len(rows)),
        "num_classes": int(len(np.unique(index.labels))),
        "shortlist_size": shortlist_size,
        "recall_ks": list(ks),
        "methods": results,
    }


def format_table(results: dict) -> str:
    """The methods as a fixed-width text table (Recall@K and mAP in %, queries/s)."""
    ks = results["recall_ks"]
    header = f"{'method':<40}" + "".join(f"{'R@' + str(k):>8}" for k in ks) + f"{'mAP':>8}{'queries/s':>11}"
    lines = [header, "-" * len(header)]
    for method, row in results["methods"].items():
        label = METHOD_LABELS[method]
        if method != "global":
            label += f" (K={results['shortlist_size']})"
        lines.append(
            f"{label:<40}" + "".join(f"{row[f'recall@{k}']:8.2f}" for k in ks)
            + f"{row['mAP']:8.2f}{row['queries_per_second']:11.1f}"
        )
    return "\n".join(lines)
