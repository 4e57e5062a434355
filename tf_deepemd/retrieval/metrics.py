"""Retrieval metrics of the deep-metric-learning protocol: Recall@K and mAP.

Every gallery image is a query in turn and is left out of its own ranking
(leave-one-out); a retrieved image is relevant when it has the query's class.

* Recall@K (Song et al. 2016, as DML papers report it): the fraction of
  queries with at least one relevant image among the first K results.
* Average precision of one query: ``(1 / R) * sum_i rel_i * precision@i``
  over its ranking, R = the number of relevant gallery images; mAP is its
  mean over the queries that have at least one relevant image (AP is
  undefined otherwise; such queries still count as misses in Recall@K).

NumPy, vectorised over a batch of queries; `RetrievalMetrics` accumulates
batches so that a full ``[Q, G]`` ranking never has to be held at once.
Results are in % like the few-shot accuracies.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["DEFAULT_RECALL_KS", "RetrievalMetrics", "average_precision", "check_ks", "recall_at_k"]

DEFAULT_RECALL_KS = (1, 2, 4, 8)


def _relevance(ranked_labels, query_labels):
    """bool ``[Q, L]``: ranked item has the query's label; checks the shapes."""
    ranked_labels = np.asarray(ranked_labels)
    query_labels = np.asarray(query_labels)
    if ranked_labels.ndim != 2:
        raise ValueError(f"`ranked_labels` must have shape [queries, results], got {ranked_labels.shape}.")
    if query_labels.shape != ranked_labels.shape[:1]:
        raise ValueError(
            f"`query_labels` must have shape [{ranked_labels.shape[0]}] (one per query), got "
            f"{query_labels.shape}."
        )
    return ranked_labels == query_labels[:, None]


def check_ks(ks: Sequence[int], length: Optional[int] = None) -> tuple[int, ...]:
    """Sorted unique ints >= 1 (and <= ``length``), or ValueError naming ``ks``."""
    try:
        values = tuple(sorted({int(k) for k in ks}))
    except (TypeError, ValueError):
        raise ValueError(f"`ks` must be positive integers, got {ks!r}.") from None
    if not values or values[0] < 1:
        raise ValueError(f"`ks` must be positive integers, got {ks!r}.")
    if length is not None and values[-1] > length:
        raise ValueError(f"`ks` {values} asks for more than the {length} ranked results per query.")
    return values


def recall_at_k(ranked_labels, query_labels, ks: Sequence[int] = DEFAULT_RECALL_KS) -> dict[int, np.ndarray]:
    """Per-query hits: ``{k: bool [Q]}``, any of the first k results relevant.

    Args:
      ranked_labels: int ``[Q, L]`` labels of each query's results, best first.
      query_labels: int ``[Q]``.
      ks: cut-offs, each ``<= L``.
    """
    relevant = _relevance(ranked_labels, query_labels)
    ks = check_ks(ks, relevant.shape[1])
    # First relevant rank (L if none): hit@k iff it is < k.
    first = np.where(relevant.any(1), relevant.argmax(1), relevant.shape[1])
    return {k: first < k for k in ks}


def average_precision(ranked_labels, query_labels, num_relevant=None) -> np.ndarray:
    """Average precision of each query's ranking.

    Args:
      ranked_labels: int ``[Q, L]``, best first.
      query_labels: int ``[Q]``.
      num_relevant: int ``[Q]`` relevant images in the whole gallery (the
        query excluded); default: those in the ranking (a full ranking).
        Relevant images missing from a truncated ranking add zero precision.

    Returns:
      float64 ``[Q]``, NaN where a query has no relevant image.
    """
    relevant = _relevance(ranked_labels, query_labels)
    hits = np.cumsum(relevant, axis=1)
    ranks = np.arange(1, relevant.shape[1] + 1)
    precision_sum = np.sum(np.where(relevant, hits / ranks, 0.0), axis=1)
    if num_relevant is None:
        total = hits[:, -1] if relevant.shape[1] else np.zeros(len(relevant))
    else:
        total = np.asarray(num_relevant)
        if total.shape != (len(relevant),):
            raise ValueError(f"`num_relevant` must have shape [{len(relevant)}], got {total.shape}.")
        if np.any(total < hits[:, -1]):
            raise ValueError("`num_relevant` is smaller than the relevant results in the ranking.")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, precision_sum / np.maximum(total, 1), np.nan)


class RetrievalMetrics:
    """Accumulates Recall@K and mAP over batches of queries.

    Args:
      ks: Recall@K cut-offs.
    """

    def __init__(self, ks: Sequence[int] = DEFAULT_RECALL_KS):
        self.ks = check_ks(ks)
        self._hits = {k: [] for k in self.ks}
        self._ap = []

    def update(self, ranked_labels, query_labels, num_relevant=None):
        """Adds a batch (arguments as in `recall_at_k` / `average_precision`)."""
        for k, hit in recall_at_k(ranked_labels, query_labels, self.ks).items():
            self._hits[k].append(hit)
        self._ap.append(average_precision(ranked_labels, query_labels, num_relevant))

    @property
    def num_queries(self) -> int:
        return int(sum(len(ap) for ap in self._ap))

    def result(self) -> dict:
        """``{'recall@1': %, ..., 'mAP': %, 'queries': Q, 'queries_without_match': n}``."""
        if not self._ap:
            raise ValueError("No queries: call update() first.")
        ap = np.concatenate(self._ap)
        defined = ~np.isnan(ap)
        out = {f"recall@{k}": 100.0 * float(np.mean(np.concatenate(self._hits[k]))) for k in self.ks}
        out["mAP"] = 100.0 * float(np.mean(ap[defined])) if defined.any() else float("nan")
        out["queries"] = int(ap.size)
        out["queries_without_match"] = int(np.sum(~defined))
        return out
