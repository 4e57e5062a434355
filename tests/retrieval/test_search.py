"""Gallery search against brute force: HiGHS DeepEMD scores of every pair, NumPy cosine."""

import numpy as np
import pytest

from tests.reference import deepemd_logits
from tf_deepemd.retrieval import (
    GalleryIndex,
    GallerySearch,
    evaluate_leave_one_out,
    load_index,
)

GALLERY, NODES, CHANNELS, CLASSES = 12, 4, 8, 3
TIE = 1e-4  # reference score gaps below this may be ordered either way


def make_gallery(rng, size=GALLERY):
    """ReLU node sets (like a backbone's) whose classes share a prototype, so ranking matters."""
    labels = np.arange(size) % CLASSES
    prototypes = rng.normal(size=(CLASSES, NODES, CHANNELS))
    nodes = np.maximum(prototypes[labels] + 1.2 * rng.normal(size=(size, NODES, CHANNELS)), 0.0)
    return nodes.astype(np.float32), labels


def reference_scores(nodes, node_weights):
    """[G, G] DeepEMD scores (temperature 1) of every (query, gallery) pair, one HiGHS LP each."""
    return deepemd_logits(nodes, nodes, node_weights=node_weights, temperature=1.0)["logits"]


def reference_cosine(nodes):
    mean = nodes.astype(np.float64).mean(1)
    unit = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    return unit @ unit.T


def assert_valid_ranking(positions, reference, label):
    """``positions`` sorts ``reference`` descending (exactly, up to near-ties)."""
    ranked = reference[positions]
    assert np.all(np.diff(ranked) <= TIE), f"{label}: not sorted by the reference: {ranked}"


def test_full_shortlist_equals_exhaustive_emd_ranking(rng):
    nodes, labels = make_gallery(rng)
    index = GalleryIndex.from_nodes(nodes, labels)
    for node_weights in ("cross_reference", "uniform"):
        reference = reference_scores(nodes, node_weights)
        search = GallerySearch(index, shortlist_size=GALLERY - 1, node_weights=node_weights, query_batch_size=5)
        result = search.search_gallery()
        for query in range(GALLERY):
            positions = result.positions[query]
            assert sorted(positions) == sorted(set(range(GALLERY)) - {query})  # all others, once
            assert_valid_ranking(positions, reference[query], f"{node_weights} query {query}")
            np.testing.assert_allclose(result.scores[query], reference[query, positions], atol=2e-5)
        np.testing.assert_array_equal(result.labels, labels[result.positions])
        np.testing.assert_array_equal(result.ids, index.ids[result.positions])


def test_shortlist_then_rerank_matches_brute_force(rng):
    nodes, labels = make_gallery(rng)
    index = GalleryIndex.from_nodes(nodes, labels, ids=[f"img{i:02d}" for i in range(GALLERY)])
    reference = reference_scores(nodes, "cross_reference")
    cosine = reference_cosine(nodes)
    queries = nodes[[3, 7]] * 1.5  # new queries (scaling changes nothing but the input values)
    k = 5
    result = GallerySearch(index, shortlist_size=k).search(queries)
    global_only = GallerySearch(index, shortlist_size=k, rerank=False).search(queries)
    for row, query in enumerate([3, 7]):
        expected_shortlist = np.argsort(-cosine[query], kind="stable")[:k]
        assert set(result.positions[row]) == set(expected_shortlist)
        assert_valid_ranking(result.positions[row], reference[query], f"query {query}")
        assert_valid_ranking(global_only.positions[row], cosine[query], f"cosine query {query}")
        np.testing.assert_allclose(global_only.scores[row], cosine[query, global_only.positions[row]], atol=1e-5)
        assert list(result.ids[row]) == [f"img{p:02d}" for p in result.positions[row]]
    # A shortlist of the whole gallery: every image, in exhaustive DeepEMD order.
    exhaustive = GallerySearch(index, shortlist_size=GALLERY).search(queries)
    for row, query in enumerate([3, 7]):
        assert sorted(exhaustive.positions[row]) == list(range(GALLERY))
        assert_valid_ranking(exhaustive.positions[row], reference[query], f"exhaustive query {query}")


def test_leave_one_out_metrics_match_brute_force(rng):
    nodes, labels = make_gallery(rng)
    index = GalleryIndex.from_nodes(nodes, labels)
    k = 4
    results = evaluate_leave_one_out(index, shortlist_size=k, ks=(1, 2, 4), query_batch_size=5)
    assert results["gallery_size"] == results["queries"] == GALLERY
    cosine = reference_cosine(nodes)
    rankings = {}
    for method in ("global", "uniform", "cross_reference"):
        emd = None if method == "global" else reference_scores(nodes, method)
        rankings[method] = []
        for query in range(GALLERY):
            order = [p for p in np.argsort(-cosine[query], kind="stable") if p != query]
            if emd is not None:  # re-rank the top k, keep the cosine tail
                order = sorted(order[:k], key=lambda p: -emd[query, p]) + order[k:]
            rankings[method].append(order)
    for method, orders in rankings.items():
        row = results["methods"][method]
        relevant = [[labels[p] == labels[q] for p in order] for q, order in enumerate(orders)]
        for cut in (1, 2, 4):
            expected = 100 * np.mean([any(r[:cut]) for r in relevant])
            assert row[f"recall@{cut}"] == pytest.approx(expected), (method, cut)
        aps = []
        for r in relevant:
            hits = np.cumsum(r)
            aps.append(sum(hits[i] / (i + 1) for i in range(len(r)) if r[i]) / hits[-1])
        assert row["mAP"] == pytest.approx(100 * np.mean(aps)), method
        assert row["queries_per_second"] > 0


def test_results_do_not_depend_on_query_batching(rng):
    nodes, labels = make_gallery(rng)
    index = GalleryIndex.from_nodes(nodes, labels)
    one = GallerySearch(index, shortlist_size=6, query_batch_size=1).search_gallery(full_ranking=True)
    many = GallerySearch(index, shortlist_size=6, query_batch_size=7).search_gallery(full_ranking=True)
    np.testing.assert_array_equal(one.positions, many.positions)
    np.testing.assert_allclose(one.scores, many.scores, atol=1e-6)
    assert one.positions.shape == (GALLERY, GALLERY - 1)


def test_index_save_load_round_trip(tmp_path, rng):
    nodes, labels = make_gallery(rng)
    index = GalleryIndex.from_nodes(nodes, labels, ids=[f"a/{i}.jpg" for i in range(GALLERY)],
                                    metadata={"image_size": [16, 16], "weights": None})
    path = index.save(str(tmp_path / "gallery.npz"))
    loaded = load_index(path)
    for name in ("nodes", "global_features", "labels", "ids"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(index, name))
    assert loaded.metadata == {"image_size": [16, 16], "weights": None}
    first = GallerySearch(index, shortlist_size=3).search(nodes[:2])
    second = GallerySearch(loaded, shortlist_size=3).search(nodes[:2])
    np.testing.assert_array_equal(first.ids, second.ids)


def test_bad_input_names_the_argument(rng):
    nodes, labels = make_gallery(rng)
    with pytest.raises(ValueError, match="`nodes` is empty"):
        GalleryIndex.from_nodes(np.zeros((0, NODES, CHANNELS), np.float32), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="`labels`"):
        GalleryIndex.from_nodes(nodes, labels[:-1])
    with pytest.raises(ValueError, match="`ids`"):
        GalleryIndex.from_nodes(nodes, labels, ids=np.zeros(GALLERY, np.int64))
    index = GalleryIndex.from_nodes(nodes, labels)
    with pytest.raises(ValueError, match="`shortlist_size`"):
        GallerySearch(index, shortlist_size=GALLERY + 1)
    with pytest.raises(ValueError, match="`shortlist_size`"):  # leave-one-out has G - 1 candidates
        GallerySearch(index, shortlist_size=GALLERY).search_gallery()
    with pytest.raises(ValueError, match="`shortlist_size`"):
        evaluate_leave_one_out(index, shortlist_size=GALLERY)
    with pytest.raises(ValueError, match="`node_weights`"):
        GallerySearch(index, node_weights="mean", shortlist_size=3)
    search = GallerySearch(index, shortlist_size=3)
    with pytest.raises(ValueError, match="`query_nodes`"):  # wrong number of nodes
        search.search(np.ones((2, NODES + 1, CHANNELS), np.float32))
    with pytest.raises(ValueError, match="`query_nodes`"):  # wrong channels
        search.search(np.ones((2, NODES, CHANNELS - 1), np.float32))
    with pytest.raises(ValueError, match="`query_nodes`"):
        search.search(np.ones((0, NODES, CHANNELS), np.float32))
    with pytest.raises(ValueError, match="`exclude`"):
        search.search(nodes[:2], exclude=[0, GALLERY])
    with pytest.raises(ValueError, match="`exclude`"):
        search.search(nodes[:2], exclude=[0, -1], full_ranking=True)
    sized = GalleryIndex.from_nodes(nodes, labels, metadata={"image_size": [16, 16]})
    with pytest.raises(ValueError, match="`query_images`"):
        GallerySearch(sized, shortlist_size=3).search_images(None, np.zeros((1, 20, 20, 3), np.float32))
