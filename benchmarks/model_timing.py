"""Where the time of a DeepEMD episode goes: backbone, weights + similarity, solver.

    python benchmarks/model_timing.py [--configs resnet12@84 resnet12_small@32 conv4@32]
                                      [--repeats 3] [--threads 0]

For one 5-way 1-shot 15-query episode (80 images, 75 x 5 = 375 EMD
problems), with the FCN encoder, each stage runs as its own compiled
`tf.function`, forward (inference: batch norm in inference mode, no tape)
and forward+backward (training mode, gradients of a random linear function
of the stage's output w.r.t. its inputs and, for the backbone, its weights):

* backbone: images [80, S, S, 3] -> nodes [80, N, C] (the encoder);
* weights + similarity: nodes -> cross-reference marginals [75, 5, N] x 2
  and the centred cosine map [75, 5, N, N];
* solver: EMD flows of the 375 problems and the logits (gradient_mode 'kkt';
  the 'stop_flow' backward is also reported);
* total: the whole episode in one function (images -> logits -> loss), for
  both gradient modes.

Times are the median of `--repeats` runs after one warm-up (the warm-up
includes tracing). Prints a table and writes
benchmarks/results/model_timing.json.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "model_timing.json")
WAY, SHOT, QUERY = 5, 1, 15


def parse_config(text):
    name, _, size = text.partition("@")
    return name, int(size)


def median_time(fn, args, repeats):
    """Median wall time of fn(*args) over `repeats` runs after one warm-up (seconds)."""
    import numpy as np
    import tensorflow as tf

    def run():
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), fn(*args))  # wait for the result
        return time.perf_counter() - start

    warmup = run()
    return float(np.median([run() for _ in range(repeats)])), warmup


def time_config(backbone_name, image_size, repeats, seed):
    import numpy as np
    import tensorflow as tf

    from tf_deepemd.models import make_encoder
    from tf_deepemd.ops import matching

    rng = np.random.default_rng(seed)
    encoder = make_encoder("fcn", backbone_name)
    num_images = WAY * (SHOT + QUERY)
    images = tf.constant(rng.normal(size=(num_images, image_size, image_size, 3)), tf.float32)
    labels = tf.constant(np.repeat(np.arange(WAY), QUERY), tf.int32)
    encoder(images[:2])  # build
    nodes = encoder(images)
    num_nodes, channels = nodes.shape[1:]
    support_nodes, query_nodes = nodes[:WAY], nodes[WAY:]
    source, target = matching.matching_marginals(query_nodes, support_nodes)
    similarity = matching.matching_similarity(query_nodes, support_nodes)
    weights = encoder.trainable_weights

    def cotangent(shape):
        return tf.constant(rng.normal(size=shape), tf.float32)

    node_cotangent = cotangent(nodes.shape)
    sim_cotangent, source_cotangent, target_cotangent = (
        cotangent(similarity.shape), cotangent(source.shape), cotangent(target.shape)
    )
    logit_cotangent = cotangent((QUERY * WAY, WAY))

    # ----- forward stages -----
    @tf.function
    def backbone_forward(x):
        return encoder(x, training=False)

    @tf.function
    def weights_similarity_forward(n):
        q, s = n[WAY:], n[:WAY]
        return matching.matching_marginals(q, s), matching.matching_similarity(q, s)

    @tf.function
    def solver_forward(sim, src, tgt):
        return matching.flow_logits(sim, src, tgt)[0]

    @tf.function
    def total_forward(x):
        n = encoder(x, training=False)
        return matching.deepemd_match(n[WAY:], n[:WAY]).logits

    # ----- forward + backward stages -----
    @tf.function
    def backbone_backward(x):
        with tf.GradientTape() as tape:
            out = tf.reduce_sum(encoder(x, training=True) * node_cotangent)
        return tape.gradient(out, weights)

    @tf.function
    def weights_similarity_backward(n):
        with tf.GradientTape() as tape:
            tape.watch(n)
            q, s = n[WAY:], n[:WAY]
            (src, tgt), sim = matching.matching_marginals(q, s), matching.matching_similarity(q, s)
            out = (
                tf.reduce_sum(sim * sim_cotangent)
                + tf.reduce_sum(src * source_cotangent)
                + tf.reduce_sum(tgt * target_cotangent)
            )
        return tape.gradient(out, n)

    def solver_backward_fn(gradient_mode):
        @tf.function
        def solver_backward(sim, src, tgt):
            with tf.GradientTape() as tape:
                tape.watch([sim, src, tgt])
                logits, _ = matching.flow_logits(sim, src, tgt, gradient_mode=gradient_mode)
                out = tf.reduce_sum(logits * tf.reshape(logit_cotangent, logits.shape))
            return [g for g in tape.gradient(out, [sim, src, tgt]) if g is not None]

        return solver_backward

    def total_backward_fn(gradient_mode):
        @tf.function
        def total_backward(x):
            with tf.GradientTape() as tape:
                n = encoder(x, training=True)
                logits = matching.deepemd_match(n[WAY:], n[:WAY],
                                                gradient_mode=gradient_mode).logits
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
                )
            return tape.gradient(loss, weights)

        return total_backward

    stages = [
        ("backbone", "forward", backbone_forward, (images,)),
        ("weights+similarity", "forward", weights_similarity_forward, (nodes,)),
        ("solver", "forward", solver_forward, (similarity, source, target)),
        ("total", "forward", total_forward, (images,)),
        ("backbone", "forward+backward", backbone_backward, (images,)),
        ("weights+similarity", "forward+backward", weights_similarity_backward, (nodes,)),
        ("solver (kkt)", "forward+backward", solver_backward_fn("kkt"),
         (similarity, source, target)),
        ("solver (stop_flow)", "forward+backward", solver_backward_fn("stop_flow"),
         (similarity, source, target)),
        ("total (kkt)", "forward+backward", total_backward_fn("kkt"), (images,)),
        ("total (stop_flow)", "forward+backward", total_backward_fn("stop_flow"), (images,)),
    ]
    rows = []
    for stage, mode, fn, args in stages:
        seconds, warmup = median_time(fn, args, repeats)
        rows.append(dict(
            backbone=backbone_name, image_size=image_size, nodes=int(num_nodes),
            channels=int(channels), stage=stage, mode=mode, seconds=seconds,
            warmup_seconds=warmup,
        ))
        print(f"  {backbone_name}@{image_size} {mode:16s} {stage:20s} {seconds * 1e3:10.1f} ms",
              flush=True)
    return rows


def format_table(rows):
    lines = [
        f"{'backbone':>16} {'image':>5} {'N x C':>9} {'mode':>16} {'stage':>20} {'ms':>10} "
        f"{'% of total':>10}"
    ]
    totals = {
        (r["backbone"], r["image_size"], r["mode"]): r["seconds"]
        for r in rows if r["stage"] in ("total", "total (kkt)")
    }
    for r in rows:
        total = totals.get((r["backbone"], r["image_size"], r["mode"]))
        share = f"{100 * r['seconds'] / total:9.1f}%" if total else ""
        lines.append(
            f"{r['backbone']:>16} {r['image_size']:>5} {r['nodes']:>4}x{r['channels']:<4} "
            f"{r['mode']:>16} {r['stage']:>20} {r['seconds'] * 1e3:10.1f} {share:>10}"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=["resnet12@84", "resnet12_small@32",
                                                         "conv4@32"],
                        help="backbone@image_size pairs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op threads (0 = TensorFlow's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    sys.path.insert(0, os.path.dirname(HERE))
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)

    rows = []
    for text in args.configs:
        name, size = parse_config(text)
        print(f"{name} at {size}x{size}:", flush=True)
        rows.extend(time_config(name, size, args.repeats, args.seed))

    print()
    print(format_table(rows))
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as file:
        json.dump(
            {
                "command": " ".join(sys.argv),
                "episode": {"way": WAY, "shot": SHOT, "query": QUERY, "encoder": "fcn"},
                "cpu_count": os.cpu_count(),
                "tensorflow": tf.__version__,
                "repeats": args.repeats,
                "rows": rows,
            },
            file,
            indent=1,
        )
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
