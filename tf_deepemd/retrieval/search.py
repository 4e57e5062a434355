"""Searching a `GalleryIndex`: a global-feature shortlist re-ranked by DeepEMD.

For a batch of B queries:

1. `shortlist`: cosine of the query's global feature with every gallery
   image's (one ``[B, G]`` matrix product), the K best kept (the query
   itself left out in leave-one-out evaluation);
2. `rerank`: the K candidates' node sets are gathered (``[B, K, M, C]``)
   and matched against the query's node set with `deepemd_match`: ALL
   ``B * K`` EMD problems go to ONE batched solver call; candidates are
   sorted by the DeepEMD score.

The DeepEMD score is the logit at temperature 1, ``sum(S * flow) / N``:
the flow-weighted mean cosine of the matched nodes, in [-1, 1] like the
shortlist's cosine (a temperature only rescales it, the order is the
same). The node weights are ``'cross_reference'`` (each node weighted by
its agreement with the other image's mean node) or ``'uniform'``.

`GallerySearch` holds the settings (shortlist size, re-ranking on/off, node
weights, batch size), checks queries and runs the two steps batch by batch.
"""

from __future__ import annotations

import collections
import functools
from typing import Optional

import numpy as np
import tensorflow as tf

from tf_deepemd.ops.checks import check_choice
from tf_deepemd.ops.matching import NODE_WEIGHTS, deepemd_match
from tf_deepemd.retrieval.index import GalleryIndex, embed_images, global_features

__all__ = ["GallerySearch", "SearchResult", "rerank", "shortlist"]

SearchResult = collections.namedtuple("SearchResult", ["ids", "labels", "positions", "scores"])
SearchResult.__doc__ = """Ranked results of `GallerySearch.search` (Q queries, L results each).

Fields, best first along axis 1:
  ids: ``[Q, L]`` gallery ids (the index's id dtype).
  labels: int64 ``[Q, L]`` gallery labels.
  positions: int64 ``[Q, L]`` rows of the index.
  scores: float32 ``[Q, L]``: DeepEMD scores of the re-ranked shortlist,
    cosine of the global features otherwise (and for the tail of a full
    ranking).
"""


@tf.function(reduce_retracing=True)
def _shortlist(query_global, gallery_global, exclude, k):
    similarity = tf.matmul(query_global, gallery_global, transpose_b=True)  # [B, G]
    positions = tf.range(tf.shape(gallery_global)[0], dtype=exclude.dtype)
    # -inf, never -1: the excluded image must rank below every real one.
    similarity = tf.where(
        positions[None, :] == exclude[:, None], tf.constant(-np.inf, similarity.dtype), similarity
    )
    scores, candidates = tf.math.top_k(similarity, k=k, sorted=True)  # ties: lower row first
    return candidates, scores


def shortlist(query_global, gallery_global, k: int, exclude=None):
    """The ``k`` gallery rows of highest global-feature cosine, per query.

    Args:
      query_global: float32 ``[B, C]`` unit-norm global features.
      gallery_global: float32 ``[G, C]`` unit-norm global features.
      k: shortlist size, ``1 <= k <= G`` (``<= G - 1`` when excluding).
      exclude: int ``[B]`` row to leave out for each query (-1: none).

    Returns:
      ``(candidates int32 [B, k], cosine float32 [B, k])``, best first.
    """
    query_global = tf.convert_to_tensor(query_global, tf.float32)
    if exclude is None:
        exclude = tf.fill(tf.shape(query_global)[:1], -1)
    return _shortlist(query_global, gallery_global, tf.cast(exclude, tf.int32), int(k))


@functools.lru_cache(maxsize=None)
def _rerank_function(node_weights, tolerance, max_iterations, query_nodes, gallery_nodes, channels):
    """The compiled re-ranking step for one setting and node-set shape.

    Any number of queries and candidates shares ONE trace (the solver's
    graph takes seconds to trace): only the batch sizes vary between calls.
    """

    @tf.function(
        input_signature=(
            tf.TensorSpec([None, query_nodes, channels], tf.float32),
            tf.TensorSpec([None, gallery_nodes, channels], tf.float32),
            tf.TensorSpec([None, None], tf.int32),
        )
    )
    def rerank_step(query, gallery, candidates):
        candidate_nodes = tf.gather(gallery, candidates)  # [B, K, M, C]
        # query [B, 1, N, C] vs candidates [B, K, M, C]: one solver call, B*K problems.
        match = deepemd_match(
            query[:, None],
            candidate_nodes,
            node_weights=node_weights,
            temperature=1.0,
            gradient_mode="stop_flow",
            tolerance=tolerance,
            max_iterations=max_iterations,
        )
        scores = match.logits[:, 0, :]  # [B, K]
        # Stable: equal scores keep their shortlist (cosine) order.
        order = tf.argsort(scores, axis=-1, direction="DESCENDING", stable=True)
        return tf.gather(candidates, order, batch_dims=1), tf.gather(scores, order, batch_dims=1)

    return rerank_step


def rerank(
    query_nodes,
    gallery_nodes,
    candidates,
    node_weights: str = "cross_reference",
    *,
    tolerance: Optional[float] = None,
    max_iterations: int = 100,
):
    """Sorts each query's candidates by their DeepEMD score.

    Args:
      query_nodes: float32 ``[B, N, C]``.
      gallery_nodes: float32 ``[G, M, C]``.
      candidates: int ``[B, K]`` gallery rows (e.g. from `shortlist`).
      node_weights: ``'cross_reference'`` or ``'uniform'``.
      tolerance, max_iterations: EMD solver settings (`tf_deepemd.emd`).

    Returns:
      ``(candidates int32 [B, K], scores float32 [B, K])``, best first;
      scores are DeepEMD logits at temperature 1, in [-1, 1].
    """
    check_choice("node_weights", node_weights, NODE_WEIGHTS)
    query_nodes = tf.convert_to_tensor(query_nodes, tf.float32)
    gallery_nodes = tf.convert_to_tensor(gallery_nodes, tf.float32)
    step = _rerank_function(
        node_weights,
        None if tolerance is None else float(tolerance),
        int(max_iterations),
        int(query_nodes.shape[1]),
        int(gallery_nodes.shape[1]),
        int(gallery_nodes.shape[2]),
    )
    return step(query_nodes, gallery_nodes, tf.cast(candidates, tf.int32))


class GallerySearch:
    """Ranked gallery results for query node sets (or images).

    Args:
      index: the `GalleryIndex` (at least one image).
      shortlist_size: K, candidates per query taken by global-feature cosine
        (and re-ranked); ``1 <= K <= index.size`` (``<= size - 1`` for
        leave-one-out queries). K = gallery size re-ranks the whole gallery,
        i.e. an exhaustive DeepEMD ranking.
      rerank: re-rank the shortlist by DeepEMD (False: global features only).
      node_weights: ``'cross_reference'`` or ``'uniform'`` EMD marginals.
      query_batch_size: queries per step (one solver call of
        ``query_batch_size * K`` problems each).
      solver_tolerance, solver_max_iterations: EMD solver settings.

    Raises:
      ValueError: naming the argument (empty gallery, K out of range, ...).

    Example: a gallery of 12 images indexed once, then 2 queries, each
    answered by its 4 best candidates re-ranked by DeepEMD (an untrained
    encoder here: the ranking is meaningless, the shapes are not).

    >>> import numpy as np
    >>> import tf_deepemd
    >>> from tf_deepemd.retrieval import GallerySearch, build_index
    >>> encoder = tf_deepemd.make_model("conv4").encoder
    >>> images = np.random.default_rng(0).uniform(size=(12, 32, 32, 3)).astype("float32")
    >>> index = build_index(encoder, images, labels=np.arange(12) % 3)
    >>> search = GallerySearch(index, shortlist_size=4)
    >>> result = search.search_images(encoder, images[:2])
    >>> result.ids.shape, result.scores.shape
    ((2, 4), (2, 4))

    ``index.save("gallery.npz")`` and `load_index` keep an index between
    processes.
    """

    def __init__(
        self,
        index: GalleryIndex,
        shortlist_size: int = 100,
        rerank: bool = True,
        node_weights: str = "cross_reference",
        query_batch_size: int = 32,
        solver_tolerance: Optional[float] = None,
        solver_max_iterations: int = 100,
    ):
        if not isinstance(index, GalleryIndex):
            raise ValueError(f"`index` must be a GalleryIndex, got {type(index).__name__}.")
        if index.size < 1:
            raise ValueError("`index` is empty: the gallery needs at least one image.")
        if int(shortlist_size) != shortlist_size or not 1 <= int(shortlist_size) <= index.size:
            raise ValueError(
                f"`shortlist_size` must be an integer in [1, {index.size}] (the gallery size), got "
                f"{shortlist_size}."
            )
        check_choice("node_weights", node_weights, NODE_WEIGHTS)
        if int(query_batch_size) < 1:
            raise ValueError(f"`query_batch_size` must be >= 1, got {query_batch_size}.")
        if solver_tolerance is not None and not float(solver_tolerance) > 0:
            raise ValueError(f"`solver_tolerance` must be > 0 or None, got {solver_tolerance}.")
        if int(solver_max_iterations) < 1:
            raise ValueError(f"`solver_max_iterations` must be >= 1, got {solver_max_iterations}.")
        self.index = index
        self.shortlist_size = int(shortlist_size)
        self.rerank = bool(rerank)
        self.node_weights = node_weights
        self.query_batch_size = int(query_batch_size)
        self.solver_tolerance = None if solver_tolerance is None else float(solver_tolerance)
        self.solver_max_iterations = int(solver_max_iterations)
        # Tensors once: passed to the compiled steps as arguments, never
        # captured (a captured 100 MB constant would be copied into the graph).
        self._gallery_nodes = tf.constant(index.nodes)
        self._gallery_global = tf.constant(index.global_features)

    def check_queries(self, query_nodes, exclude=None, name="query_nodes"):
        """``(float32 [Q, N, C], int32 [Q] exclude)`` or ValueError naming the argument."""
        query_nodes = np.asarray(query_nodes)
        expected = (self.index.num_nodes, self.index.channels)
        if query_nodes.ndim != 3 or query_nodes.shape[1:] != expected:
            raise ValueError(
                f"`{name}` must have shape [queries, {expected[0]}, {expected[1]}] (the gallery's "
                f"nodes and channels: embed queries with the gallery's encoder and image size), got "
                f"{query_nodes.shape}."
            )
        if not np.issubdtype(query_nodes.dtype, np.floating):
            raise ValueError(f"`{name}` must be a float array, got {query_nodes.dtype}.")
        if query_nodes.shape[0] == 0:
            raise ValueError(f"`{name}` is empty: pass at least one query.")
        if not np.all(np.isfinite(query_nodes)):
            raise ValueError(f"`{name}` contains NaN or infinite values.")
        num_queries = query_nodes.shape[0]
        if exclude is None:
            exclude = np.full(num_queries, -1, np.int32)
        else:
            exclude = np.asarray(exclude)
            if exclude.shape != (num_queries,) or not np.issubdtype(exclude.dtype, np.integer):
                raise ValueError(
                    f"`exclude` must be {num_queries} integers (a gallery row per query, -1 for "
                    f"none), got {exclude.dtype} {exclude.shape}."
                )
            if exclude.size and (exclude.min() < -1 or exclude.max() >= self.index.size):
                raise ValueError(f"`exclude` rows must lie in [-1, {self.index.size}), got {exclude}.")
            if np.any(exclude >= 0) and self.shortlist_size > self.index.size - 1:
                raise ValueError(
                    f"`shortlist_size` {self.shortlist_size} is larger than the {self.index.size - 1} "
                    "candidates a query has when it is left out of the gallery (leave-one-out)."
                )
        return query_nodes.astype(np.float32, copy=False), exclude.astype(np.int32)

    def search(self, query_nodes, exclude=None, full_ranking: bool = False) -> SearchResult:
        """Ranks the gallery for each query.

        Args:
          query_nodes: float ``[Q, N, C]`` node sets (the gallery's N and C).
          exclude: optional int ``[Q]`` gallery row to leave out per query
            (-1: none); leave-one-out evaluation passes each query's own row.
          full_ranking: also return the rest of the gallery, after the
            (re-ranked) shortlist, in global-feature order (for mAP).

        Returns:
          `SearchResult` with L = K results per query (all non-excluded
          rows with ``full_ranking``).
        """
        query_nodes, exclude = self.check_queries(query_nodes, exclude)
        excluded = exclude >= 0
        if full_ranking and excluded.any() and not excluded.all():
            raise ValueError(
                "`exclude` must leave out a row for every query or for none with `full_ranking` "
                "(the rankings would have different lengths)."
            )
        length = self.index.size - int(excluded.any()) if full_ranking else self.shortlist_size
        parts = []
        for start in range(0, len(query_nodes), self.query_batch_size):
            batch = slice(start, start + self.query_batch_size)
            parts.append(self._search_batch(query_nodes[batch], exclude[batch], length))
        positions = np.concatenate([p for p, _ in parts])
        scores = np.concatenate([s for _, s in parts])
        return SearchResult(
            ids=self.index.ids[positions],
            labels=self.index.labels[positions],
            positions=positions,
            scores=scores,
        )

    def search_gallery(self, rows=None, full_ranking: bool = False) -> SearchResult:
        """Leave-one-out: gallery images as queries, each left out of its own results.

        Args:
          rows: int ``[Q]`` gallery rows to use as queries (default: all).
          full_ranking: as in `search`.
        """
        rows = np.arange(self.index.size) if rows is None else np.asarray(rows)
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(f"`rows` must be a 1-D integer array, got {rows.dtype} {rows.shape}.")
        if rows.size and (rows.min() < 0 or rows.max() >= self.index.size):
            raise ValueError(f"`rows` must lie in [0, {self.index.size}).")
        return self.search(self.index.nodes[rows], exclude=rows, full_ranking=full_ranking)

    def search_images(self, encoder, query_images, batch_size: int = 64, **kwargs) -> SearchResult:
        """Embeds preprocessed query images with ``encoder``, then `search`.

        Raises ValueError naming ``query_images`` when their size differs
        from the gallery's (``index.metadata['image_size']``, if recorded).
        """
        shape = np.shape(query_images)
        if len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"`query_images` must have shape [queries, height, width, 3], got {shape}.")
        if shape[0] == 0:
            raise ValueError("`query_images` is empty: pass at least one query.")
        size = self.index.metadata.get("image_size")
        if size is not None and list(shape[1:3]) != list(size):
            raise ValueError(
                f"`query_images` are {shape[1]}x{shape[2]} but the gallery was embedded at "
                f"{size[0]}x{size[1]}: preprocess queries to the gallery's image size."
            )
        nodes = embed_images(encoder, query_images, batch_size)
        # Checked again on nodes: an index without an image size is still protected.
        self.check_queries(nodes, name="query_images")
        return self.search(nodes, **kwargs)

    def _search_batch(self, query_nodes, exclude, length):
        """``(positions int64 [B, length], scores float32 [B, length])``."""
        k = self.shortlist_size
        candidates, scores = shortlist(
            global_features(query_nodes), self._gallery_global, max(k, length), exclude
        )
        if self.rerank:
            head, head_scores = rerank(
                query_nodes,
                self._gallery_nodes,
                candidates[:, :k],
                self.node_weights,
                tolerance=self.solver_tolerance,
                max_iterations=self.solver_max_iterations,
            )
            candidates = tf.concat([head, candidates[:, k:]], axis=1)
            scores = tf.concat([head_scores, scores[:, k:]], axis=1)
        return candidates[:, :length].numpy().astype(np.int64), scores[:, :length].numpy()
