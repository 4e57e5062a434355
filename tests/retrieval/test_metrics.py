"""Recall@K and mAP against hand-computed values and a plain-loop reference."""

import numpy as np
import pytest

from tf_deepemd.retrieval.metrics import RetrievalMetrics, average_precision, recall_at_k


def loop_recall(ranked, query_label, k):
    return any(label == query_label for label in ranked[:k])


def loop_average_precision(ranked, query_label, num_relevant):
    """AP as the textbook sum over the relevant ranks."""
    if num_relevant == 0:
        return float("nan")
    found, total = 0, 0.0
    for rank, label in enumerate(ranked, start=1):
        if label == query_label:
            found += 1
            total += found / rank
    return total / num_relevant


def test_hand_computed_example():
    ranked = np.array([[1, 0, 1, 1], [0, 2, 2, 1], [2, 2, 0, 0]])
    queries = np.array([1, 1, 1])
    hits = recall_at_k(ranked, queries, ks=(1, 2, 4))
    assert hits[1].tolist() == [True, False, False]
    assert hits[4].tolist() == [True, True, False]
    ap = average_precision(ranked, queries)
    # Query 0: relevant at ranks 1, 3, 4 -> (1 + 2/3 + 3/4) / 3; query 1: rank 4 -> 1/4.
    np.testing.assert_allclose(ap[:2], [(1 + 2 / 3 + 3 / 4) / 3, 1 / 4])
    assert np.isnan(ap[2])  # no relevant image: undefined, left out of mAP
    metrics = RetrievalMetrics(ks=(1, 4))
    metrics.update(ranked, queries)
    result = metrics.result()
    assert result["recall@1"] == pytest.approx(100 / 3)
    assert result["recall@4"] == pytest.approx(200 / 3)
    assert result["mAP"] == pytest.approx(100 * ((1 + 2 / 3 + 3 / 4) / 3 + 1 / 4) / 2)
    assert (result["queries"], result["queries_without_match"]) == (3, 1)


def test_against_loop_reference_in_batches(rng):
    num_queries, length, classes = 40, 30, 4
    ranked = rng.integers(0, classes, size=(num_queries, length))
    queries = rng.integers(0, classes, size=num_queries)
    # Truncated rankings: more relevant images exist than are ranked.
    extra = rng.integers(0, 3, size=num_queries)
    num_relevant = (ranked == queries[:, None]).sum(1) + extra
    metrics = RetrievalMetrics(ks=(1, 2, 4, 8))
    for start in range(0, num_queries, 7):  # uneven batches
        part = slice(start, start + 7)
        metrics.update(ranked[part], queries[part], num_relevant[part])
    result = metrics.result()
    for k in (1, 2, 4, 8):
        expected = np.mean([loop_recall(r, q, k) for r, q in zip(ranked, queries)])
        assert result[f"recall@{k}"] == pytest.approx(100 * expected)
    expected_ap = [loop_average_precision(r, q, n) for r, q, n in zip(ranked, queries, num_relevant)]
    assert result["mAP"] == pytest.approx(100 * np.nanmean(expected_ap))
    np.testing.assert_allclose(average_precision(ranked, queries, num_relevant), expected_ap)


def test_bad_arguments_name_the_argument():
    ranked = np.zeros((3, 4), np.int64)
    with pytest.raises(ValueError, match="`ks`"):
        recall_at_k(ranked, np.zeros(3), ks=(1, 8))
    with pytest.raises(ValueError, match="`ks`"):
        RetrievalMetrics(ks=(0,))
    with pytest.raises(ValueError, match="`query_labels`"):
        recall_at_k(ranked, np.zeros(2))
    with pytest.raises(ValueError, match="`ranked_labels`"):
        average_precision(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="`num_relevant`"):
        average_precision(ranked, np.zeros(3), num_relevant=np.zeros(3))
