"""Image retrieval with DeepEMD: a global-feature shortlist re-ranked by EMD.

One concept per module:

* `index`: `GalleryIndex` (node sets, global features, labels, ids; saved
  as ``.npz``), `build_index`, `embed_images`, `load_index`;
* `search`: `GallerySearch` (cosine shortlist of K candidates, re-ranked by
  the DeepEMD score in one batched solver call per query batch), and its
  two steps `shortlist` / `rerank`;
* `metrics`: Recall@K and mAP of the deep-metric-learning protocol;
* `evaluate`: leave-one-out evaluation of global features vs EMD
  re-ranking with uniform / cross-reference weights (`RetrievalSettings`,
  gin ``retrieval.*``);
* `galleries`: which images form a gallery (a dataset split, CUB's DML
  split) and embedding a whole split;
* `from_run`: `retrieve_run`, the top level of ``tools/retrieve.py``.

`GallerySearch` has a runnable example; docs/retrieval_and_figures.md
the commands and figures.
"""

from tf_deepemd.retrieval.evaluate import (
    METHODS,
    RetrievalSettings,
    evaluate_leave_one_out,
    format_table,
)
from tf_deepemd.retrieval.galleries import index_split, load_gallery_split
from tf_deepemd.retrieval.index import (
    GalleryIndex,
    build_index,
    embed_images,
    global_features,
    load_index,
)
from tf_deepemd.retrieval.metrics import RetrievalMetrics, average_precision, recall_at_k
from tf_deepemd.retrieval.search import GallerySearch, SearchResult, rerank, shortlist

__all__ = [
    "METHODS",
    "GalleryIndex",
    "GallerySearch",
    "RetrievalMetrics",
    "RetrievalSettings",
    "SearchResult",
    "average_precision",
    "build_index",
    "embed_images",
    "evaluate_leave_one_out",
    "format_table",
    "global_features",
    "index_split",
    "load_gallery_split",
    "load_index",
    "recall_at_k",
    "rerank",
    "shortlist",
]
