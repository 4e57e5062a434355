"""Where an evaluation episode's time goes, stage by stage, on a trained run.

    python benchmarks/eval_breakdown.py --model_dir=runs/quickstart \
        [--gin_file=gin_configs/quickstart.gin] [--gin_bindings=...] [--label=after] \
        [--repeats=10] [--sfc_repeats=3] [--data_episodes=60] [--episode_batch=8] \
        [--intra_op_threads=0] [--inter_op_threads=0]

In ONE process, on the run's best weights (as `tools/eval.py` picks them),
for 1-shot and 5-shot: per-episode time of each stage as its own compiled
`tf.function` on the same episode tensors (the first episode of the test
pipeline), median over ``--repeats`` after one warm-up call: data pipeline
(producing episodes alone), encoder forward, a dense float32 matmul of
as many FLOPs as the encoder's (TF's profiler counts them: what that
arithmetic costs at this machine's GEMM speed), weights + similarity, solver
forward (with its interior-point iteration count), head (weights +
similarity + solver + logits), SFC (5-shot), the whole episode, an empty
compiled function (per-call dispatch), and the overhead = whole episode -
(encoder + head [+ SFC]). With ``--episode_batch E`` it also tries ONE call
on E stacked episodes (a leading episode dimension); a model that does not
accept it reports n/a.

Only public entry points are used (`make_model`,
`tf_deepemd.data.make_episode_dataset`, `tf_deepemd.solve_emd`, the model's
call and its ``encoder``); a stage the installed version cannot isolate is
reported as "n/a" with the reason, so the script measures old and new code
alike. Prints a table and merges the rows under ``--label`` into ``--output``
(benchmarks/results/eval_throughput.json, beside eval_throughput.py's
rates). Which code is measured: as for eval_throughput.py.
"""

from __future__ import annotations

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from eval_throughput import run_parser, solver_scope, start_run, store  # noqa: E402 - after the path of this folder


def parse_args(argv=None):
    parser = run_parser(__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed calls per stage (median)")
    parser.add_argument("--sfc_repeats", type=int, default=3,
                        help="timed calls of the 5-shot stages (SFC, whole 5-shot episode)")
    parser.add_argument("--data_episodes", type=int, default=60,
                        help="episodes timed for the data pipeline alone")
    parser.add_argument("--episode_batch", type=int, default=8,
                        help="episodes stacked for the batched call (0: skip)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.model_dir):
        parser.error(f"--model_dir: no such folder {args.model_dir!r}")
    return args



def block(value):
    import tensorflow as tf

    for tensor in tf.nest.flatten(value):
        if hasattr(tensor, "numpy"):
            tensor.numpy()
    return value


def call_seconds(fn, args):
    start = time.perf_counter()
    block(fn(*args))
    return time.perf_counter() - start


def error_reason(error):
    """One line of an exception, without Keras' call-context appendix."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).split("Arguments received by")[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1][:200] if lines else ''}"


class StageTimer:
    """Compiled stages of one episode, timed round-robin after one warm-up call each.

    Interleaving the repeats makes a change of the machine's load hit every
    stage alike, so that differences between stages (the overhead) stay
    meaningful on a shared machine. A stage whose warm-up fails is n/a.
    """

    def __init__(self, shot):
        self.shot = shot
        self.stages = []

    def add(self, name, fn, args, repeats, note="", divide_by=1):
        stage = {"name": name, "fn": fn, "args": args, "repeats": repeats, "note": note,
                 "divide_by": divide_by, "times": [], "warmup": None}
        try:
            stage["warmup"] = call_seconds(fn, args)
        except Exception as error:  # noqa: BLE001 - any failure means: not isolable here
            stage["fn"], stage["note"] = None, f"n/a: {error_reason(error)}"
        self.stages.append(stage)
        return stage["fn"] is not None

    def unavailable(self, name, reason):
        self.stages.append({"name": name, "fn": None, "times": [], "warmup": None,
                            "repeats": 0, "note": f"n/a: {reason}", "divide_by": 1})

    def run(self):
        rounds = max([stage["repeats"] for stage in self.stages] + [0])
        for round_index in range(rounds):
            for stage in self.stages:
                if stage["fn"] is not None and round_index < stage["repeats"]:
                    stage["times"].append(call_seconds(stage["fn"], stage["args"]))

    def seconds(self, name):
        import numpy as np

        for stage in self.stages:
            if stage["name"] == name and stage["times"]:
                return float(np.median(stage["times"])) / stage["divide_by"]
        return None

    def rows(self):
        return [
            stage_row(stage["name"], self.shot, self.seconds(stage["name"]), stage["warmup"],
                      stage["note"], len(stage["times"]))
            for stage in self.stages
        ]


def stage_row(stage, shot, seconds, warmup=None, note="", repeats=None):
    row = {
        "stage": stage,
        "shot": shot,
        "ms": None if seconds is None else round(1e3 * seconds, 3),
        "warmup_ms": None if warmup is None else round(1e3 * warmup, 1),
        "repeats": repeats,
        "note": note,
    }
    shown = "n/a" if seconds is None else f"{1e3 * seconds:10.2f} ms"
    print(f"  [{shot}-shot] {stage:36s} {shown:>14}  {note}", flush=True)
    return row


def graph_flops(graph):
    """Floating-point operations of a traced graph (TF's profiler; convolutions and matmuls)."""
    import tensorflow as tf

    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops


def episode_pipeline(shot, num_episodes):
    """The run's test episodes, as its test stage draws them."""
    from tf_deepemd.data import make_episode_dataset
    from tf_deepemd.training.data_source import TEST_EPISODES_SEED_OFFSET
    from tf_deepemd.training.run_settings import run_settings

    run = run_settings()
    return make_episode_dataset(
        run.dataset,
        run.test_split,
        data_dir=run.data_dir,
        way=run.way,
        shot=shot,
        query=run.query,
        image_size=run.image_size,
        seed=run.seed + TEST_EPISODES_SEED_OFFSET,
        num_episodes=num_episodes,
        **dict(run.dataset_options),
    )


def pipeline_row(shot, num_episodes):
    """Seconds per episode of iterating the pipeline alone (after 2 warm-up episodes)."""
    iterator = iter(episode_pipeline(shot, num_episodes + 2))
    for _ in range(2):
        next(iterator)
    start = time.perf_counter()
    count = sum(1 for _ in iterator)
    seconds = (time.perf_counter() - start) / max(count, 1)
    return stage_row("data pipeline (alone)", shot, seconds, note=f"{count} episodes iterated")


def head_settings(model):
    """Solver settings of the model's DeepEMD head, or {} when it has none."""
    head = getattr(model, "head", None)
    if head is None or not hasattr(head, "get_config"):
        return {}
    config = head.get_config()
    return {key: config[key] for key in ("tolerance", "max_iterations") if key in config}


def breakdown(model, shot, repeats, slow_repeats, episode_batch, details):
    """Rows of one shot's breakdown on the first test episode; fills ``details``."""
    import numpy as np
    import tensorflow as tf

    import tf_deepemd

    (support, support_labels, query), query_labels = next(iter(episode_pipeline(shot, 1)))
    from tf_deepemd.training.run_settings import run_settings

    way = run_settings().way
    episode = (support, support_labels, query)
    images = tf.concat([support, query], 0)
    num_support = int(support.shape[0])
    info = details.setdefault(f"{shot}shot", {})
    info.update(support_images=list(support.shape), query_images=list(query.shape))
    # The SFC dominates a k-shot episode: its stages get the fewer repeats.
    whole_repeats = slow_repeats if shot > 1 else repeats
    timer = StageTimer(shot)

    whole = tf.function(lambda inputs: model(inputs, training=False))
    if timer.add("whole episode (compiled)", whole, (episode,), whole_repeats,
                 "model(episode) in one tf.function"):
        predicted = np.argmax(whole(episode).numpy(), -1)
        info["accuracy_of_this_episode"] = float(np.mean(predicted == query_labels.numpy()))
    timer.add("empty tf.function call", tf.function(lambda inputs: tf.reduce_sum(inputs[1])),
              (episode,), repeats, "per-call dispatch of the same inputs")

    encode = tf.function(lambda x: model.encoder(x, training=False))
    timer.add("encoder forward", encode, (images,), repeats, f"{images.shape[0]} images")
    nodes = encode(images)
    # What the encoder's arithmetic costs at this machine's dense-GEMM speed,
    # which convolutions of these sizes do not beat in practice.
    encoder_flops = graph_flops(encode.get_concrete_function(images).graph)
    info["encoder_gflop"] = round(encoder_flops / 1e9, 3)
    size = round((encoder_flops / 2) ** (1 / 3))
    square = tf.random.normal([size, size])
    timer.add("dense matmul of the encoder's FLOPs", tf.function(tf.linalg.matmul),
              (square, square), repeats, f"{size}x{size} float32, {encoder_flops / 1e9:.1f} GFLOP")
    support_nodes, query_nodes = nodes[:num_support], nodes[num_support:]
    prototypes = tf.math.unsorted_segment_mean(support_nodes, support_labels, way)
    info["nodes"] = list(nodes.shape)

    head = getattr(model, "head", None)
    if head is not None:
        timer.add("head (weights+sim+solver+logits)", tf.function(lambda q, p: head(q, p)),
                  (query_nodes, prototypes), repeats,
                  f"{query_nodes.shape[0]} x {way} problems, class-mean prototypes")
    else:
        timer.unavailable("head (weights+sim+solver+logits)", "the model has no .head")

    try:
        from tf_deepemd.ops import matching

        def weights_similarity(q, p):
            return matching.matching_marginals(q, p), matching.matching_similarity(q, p)

        timer.add("weights + similarity", tf.function(weights_similarity),
                  (query_nodes, prototypes), repeats)
        (source, target), similarity = weights_similarity(query_nodes, prototypes)
        settings = head_settings(model)

        def solve(cost, a, b):
            result = tf_deepemd.solve_emd(cost, a, b, **settings)
            return result.flow, result.num_iterations

        solve_fn = tf.function(solve)
        cost = 1.0 - similarity
        problems = f"{int(np.prod(cost.shape[:-2]))} problems of {cost.shape[-2]}x{cost.shape[-1]}"
        if timer.add("solver forward", solve_fn, (cost, source, target), repeats, problems):
            info["solver_iterations"] = int(solve_fn(cost, source, target)[1])
    except (ImportError, AttributeError) as error:
        for name in ("weights + similarity", "solver forward"):
            timer.unavailable(name, error_reason(error))

    parts = ["encoder forward", "head (weights+sim+solver+logits)"]
    if shot > 1:
        # The prototype layer (`DeepEMD.prototypes`: SFC for k-shot), given the
        # head it fits for.
        fitter = getattr(model, "prototypes", None)
        parts.append("SFC (fit prototypes)")
        if fitter is not None:
            timer.add("SFC (fit prototypes)",
                      tf.function(lambda n, y: fitter(n, y, way=way, head=head)),
                      (support_nodes, support_labels), slow_repeats,
                      f"{num_support} support node sets, {type(fitter).__name__}")
        else:
            timer.unavailable(parts[-1], "the model has no .prototypes")

    if episode_batch > 1:
        stacked = tuple(tf.stack([t] * episode_batch) for t in episode)
        timer.add(f"whole, per episode of {episode_batch} per call",
                  tf.function(lambda inputs: model(inputs, training=False)), (stacked,),
                  whole_repeats, f"one call on {episode_batch} stacked episodes",
                  divide_by=episode_batch)

    timer.run()
    rows = timer.rows()
    for name in ("encoder forward", "dense matmul of the encoder's FLOPs"):
        seconds = timer.seconds(name)
        if seconds is not None:
            info[f"{name}, GFLOP/s"] = round(encoder_flops / 1e9 / seconds, 1)
    whole_s = timer.seconds("whole episode (compiled)")
    part_s = [timer.seconds(name) for name in parts]
    if whole_s is not None and all(s is not None for s in part_s):
        rows.append(stage_row("overhead: whole - sum of parts", shot, whole_s - sum(part_s),
                              note=" + ".join(parts)))
    else:
        rows.append(stage_row("overhead: whole - sum of parts", shot, None,
                              note="n/a: a part is not isolable"))
    return rows


def run_breakdown(args, details):
    from tf_deepemd import run_folder
    from tf_deepemd.training.run_settings import restore_run_model, run_settings

    weights = run_folder.trained_weights(args.model_dir)
    if weights is None:
        raise SystemExit(f"error: {args.model_dir} has no finished training stage")
    model, weights = restore_run_model(run_settings(args.model_dir), weights)
    details["weights"] = weights
    rows = []
    for shot in (1, 5):
        rows.append(pipeline_row(shot, args.data_episodes))
        rows.extend(breakdown(model, shot, args.repeats, args.sfc_repeats, args.episode_batch,
                              details))
    return rows


def format_table(rows):
    lines = [f"{'stage (per episode)':40s} {'1-shot ms':>12} {'5-shot ms':>12}"]
    for stage in dict.fromkeys(row["stage"] for row in rows):
        cells = []
        for shot in (1, 5):
            match = [r for r in rows if r["stage"] == stage and r["shot"] == shot]
            if not match:
                cells.append("")
            elif match[0]["ms"] is None:
                cells.append("n/a")
            else:
                cells.append(f"{match[0]['ms']:.2f}")
        lines.append(f"{stage:40s} {cells[0]:>12} {cells[1]:>12}")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    result = start_run(args)
    details = {}
    with solver_scope(args):
        result["rows"] = run_breakdown(args, details)
    result["details"] = details
    print(format_table(result["rows"]), flush=True)
    store(args, result, "breakdown")


if __name__ == "__main__":
    main()
