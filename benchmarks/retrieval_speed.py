"""Retrieval speed: queries/s against a 10,000-image gallery with a shortlist of 100.

    python benchmarks/retrieval_speed.py [--gallery 10000] [--shortlist 100] [--queries 256]
        [--query_batch_sizes 8 32] [--backbone resnet12_small] [--image_size 32]
        [--intra_op_threads 2] [--inter_op_threads 2] [--solver_tolerances default 1e-4]
        [--index runs/x/gallery.npz]

Random images and an untrained FCN encoder (speed does not depend on the
weights, except the solver's iteration count: ``--index`` times the
shortlist and re-ranking on a real saved gallery index instead, with its
own images as queries). The gallery is embedded once (reported as images/s,
a one-time cost); then for each query batch size, every batch of queries
is timed stage by stage, each stage forced to finish before the next:

* embedding: the query images through the encoder;
* shortlist: cosine with the 10,000 global features, top 100;
* re-ranking: the 100 candidates' node sets gathered and matched with
  DeepEMD, ONE batched solver call of ``batch x 100`` problems, for
  ``uniform`` and ``cross_reference`` node weights and each solver
  tolerance (the solver's default 1e-7, and 1e-4, enough for a ranking).

queries/s = queries / (embedding + shortlist + re-ranking) time, after one
warm-up batch (tracing). Prints a table and writes
benchmarks/results/retrieval_speed.json.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "retrieval_speed.json")


def timed(fn, *args):
    """``(result as NumPy, seconds)`` of fn(*args), waiting for the result."""
    import tensorflow as tf

    start = time.perf_counter()
    result = tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gallery", type=int, default=10000)
    parser.add_argument("--shortlist", type=int, default=100)
    parser.add_argument("--queries", type=int, default=256, help="timed queries per batch size")
    parser.add_argument("--query_batch_sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--backbone", default="resnet12_small")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--embed_batch_size", type=int, default=256)
    parser.add_argument("--intra_op_threads", type=int, default=2)
    parser.add_argument("--inter_op_threads", type=int, default=2)
    parser.add_argument("--index", default=None, help="time on this saved gallery index (.npz)")
    parser.add_argument("--solver_tolerances", nargs="+", default=["default", "1e-4"],
                        help="EMD solver tolerances to time ('default': the solver's, 1e-7 in float32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    sys.path.insert(0, os.path.dirname(HERE))
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    import keras

    from tf_deepemd.models import make_encoder
    from tf_deepemd.retrieval import GalleryIndex, global_features, load_index, rerank, shortlist

    rng = np.random.default_rng(args.seed)
    keras.utils.set_random_seed(args.seed)
    report = {
        "command": "benchmarks/retrieval_speed.py " + " ".join(sys.argv[1:]),
        "cpu_count": os.cpu_count(),
        "threads": {"intra_op": args.intra_op_threads, "inter_op": args.inter_op_threads},
        "tensorflow": tf.__version__,
        "shortlist": args.shortlist,
        # Other processes share the cores: the load says how much.
        "load_average_1min_start": round(os.getloadavg()[0], 2),
    }

    encoder = None
    if args.index:
        index = load_index(args.index)
        report.update(gallery=index.size, source=f"index {args.index}", backbone=None)
        print(f"gallery: {index.size} images from {args.index}", flush=True)
    else:
        encoder = make_encoder("fcn", args.backbone)
        encoder.build((None, args.image_size, args.image_size, 3))
        encode = tf.function(lambda images: encoder(images, training=False))
        encode(tf.zeros([args.embed_batch_size, args.image_size, args.image_size, 3]))  # trace
        parts, start = [], time.perf_counter()
        for begin in range(0, args.gallery, args.embed_batch_size):
            count = min(args.embed_batch_size, args.gallery - begin)
            images = rng.normal(size=(count, args.image_size, args.image_size, 3)).astype(np.float32)
            parts.append(encode(tf.constant(images)).numpy())
        seconds = time.perf_counter() - start  # includes generating the random images
        index = GalleryIndex.from_nodes(np.concatenate(parts), np.zeros(args.gallery, np.int64))
        report.update(
            gallery=args.gallery, source="random images, untrained encoder", backbone=args.backbone,
            image_size=args.image_size, gallery_embedding_seconds=round(seconds, 2),
            gallery_embedding_images_per_second=round(args.gallery / seconds, 1),
        )
        print(f"gallery: {args.gallery} random {args.image_size}px images embedded by an untrained "
              f"{args.backbone} in {seconds:.1f} s ({args.gallery / seconds:.0f} images/s)", flush=True)
    report.update(nodes=index.num_nodes, channels=index.channels)
    if not 1 <= args.shortlist <= index.size:
        parser.error(f"--shortlist must be in [1, {index.size}]")

    gallery_nodes = tf.constant(index.nodes)
    gallery_global = tf.constant(index.global_features)
    tolerances = [None if t == "default" else float(t) for t in args.solver_tolerances]
    variants = [(weights, tolerance) for tolerance in tolerances for weights in ("uniform", "cross_reference")]

    def variant_name(weights, tolerance):
        return f"{weights}@{'default' if tolerance is None else f'{tolerance:g}'}"

    rows = []
    for batch_size in args.query_batch_sizes:
        num_batches = max(1, args.queries // batch_size)
        totals = {"embedding": 0.0, "shortlist": 0.0, **{variant_name(*v): 0.0 for v in variants}}
        for batch_number in range(num_batches + 1):  # batch 0: warm-up (tracing), not counted
            if encoder is not None:
                images = tf.constant(rng.normal(size=(batch_size, args.image_size, args.image_size, 3)), tf.float32)
                query_nodes, embed_seconds = timed(encode, images)
            else:
                query_nodes, embed_seconds = index.nodes[rng.choice(index.size, batch_size)], 0.0
            start = time.perf_counter()
            candidates, _ = shortlist(global_features(query_nodes), gallery_global, args.shortlist)
            candidates = candidates.numpy()
            shortlist_seconds = time.perf_counter() - start
            rerank_seconds = {}
            for weights, tolerance in variants:
                _, rerank_seconds[variant_name(weights, tolerance)] = timed(
                    lambda: rerank(query_nodes, gallery_nodes, candidates, weights, tolerance=tolerance)
                )
            if batch_number == 0:
                continue
            totals["embedding"] += embed_seconds
            totals["shortlist"] += shortlist_seconds
            for name, seconds in rerank_seconds.items():
                totals[name] += seconds
        queries = num_batches * batch_size
        base = totals["embedding"] + totals["shortlist"]
        for weights, tolerance in variants:
            name = variant_name(weights, tolerance)
            rows.append({
                "query_batch_size": batch_size,
                "queries": queries,
                "node_weights": weights,
                "solver_tolerance": tolerance,
                "embedding_ms_per_query": round(1000 * totals["embedding"] / queries, 3),
                "shortlist_ms_per_query": round(1000 * totals["shortlist"] / queries, 3),
                "rerank_ms_per_query": round(1000 * totals[name] / queries, 3),
                "queries_per_second": round(queries / (base + totals[name]), 1),
                "queries_per_second_global_only": round(queries / base, 1),
            })
            print(f"batch {batch_size} {name}: {rows[-1]}", flush=True)
    report["rows"] = rows
    report["load_average_1min_end"] = round(os.getloadavg()[0], 2)

    print(f"\ngallery {report['gallery']}, shortlist {args.shortlist}, {index.num_nodes} nodes x "
          f"{index.channels} channels, {args.intra_op_threads} intra-op threads; ms per query")
    print(f"{'batch':>5} {'node weights':>16} {'solver tol':>10} {'embed':>7} {'shortlist':>9} {'re-rank':>8} "
          f"{'queries/s':>9} {'(global only)':>13}")
    for row in rows:
        tolerance = "default" if row["solver_tolerance"] is None else f"{row['solver_tolerance']:g}"
        print(
            f"{row['query_batch_size']:>5} {row['node_weights']:>16} {tolerance:>10} "
            f"{row['embedding_ms_per_query']:>7.2f} {row['shortlist_ms_per_query']:>9.2f} "
            f"{row['rerank_ms_per_query']:>8.2f} {row['queries_per_second']:>9.1f} "
            f"{row['queries_per_second_global_only']:>13.0f}"
        )
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as stream:
        json.dump(report, stream, indent=1)
        stream.write("\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
