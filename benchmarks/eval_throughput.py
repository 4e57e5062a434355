"""Evaluation throughput of a trained run: episodes/s of `tools/eval.py`'s test stage.

    python benchmarks/eval_throughput.py --model_dir=runs/quickstart \
        [--gin_file=gin_configs/quickstart.gin] [--gin_bindings=...] [--label=after] \
        [--episodes_1shot=300] [--episodes_5shot=40] [--baseline_episodes_5shot=40] \
        [--episodes_per_call=1,auto] [--reruns=3] [--parts=1shot,5shot] \
        [--implementation=auto|tf_ops] [--intra_op_threads=0] [--inter_op_threads=0]

In ONE process, on the run's best weights (as `tools/eval.py` picks them):

* ``1shot``: `run_experiment` with ``stages=('test',)``, exactly what
  ``tools/eval.py --episodes=N`` runs: 5-way 1-shot accuracy, 95 % CI and
  the steady-state episodes/s the run reports (first call excluded), plus
  the wall time of the whole call (model build, weights, tracing included).
  Once per ``--episodes_per_call`` setting (gin ``run_test.episodes_per_call``;
  ``auto``: the evaluator's choice), the settings interleaved ``--reruns`` times so that the
  machine's load hits them alike; prints each rate, the median, min and max
  over the reruns, and the ratio of each setting's median to the first's.
* ``5shot``: the same with ``shot=5`` (SFC prototypes for the DeepEMD head);
  ``--baseline_episodes_5shot`` episodes for ``episodes_per_call=1`` (slow).

Where an episode's time goes: benchmarks/eval_breakdown.py (it shares this
script's run configuration helpers and results file).

The run is read and evaluated through the library, as the tools do (their
gin parsing, `run_settings`, `run_experiment`). TensorFlow's default thread pools
unless the flags say otherwise. Prints a table and merges the results under
``--label`` into ``--output`` (default benchmarks/results/eval_throughput.json).

Which code is measured is whatever ``import tf_deepemd`` finds first (e.g.
``PYTHONPATH=/path/to/other/checkout``); its path and commit are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
# Appended, not prepended: an explicit PYTHONPATH (another checkout) wins.
sys.path.append(os.path.dirname(HERE))
RESULTS = os.path.join(HERE, "results", "eval_throughput.json")
PARTS = ("1shot", "5shot")


def run_parser(description):
    """Arguments shared with eval_breakdown.py: the run, threads, results file."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model_dir", required=True, help="folder of a trained run")
    parser.add_argument("--gin_file", action="append", default=None,
                        help="gin config(s) of the run (default gin_configs/quickstart.gin)")
    parser.add_argument("--gin_bindings", action="append", default=[])
    parser.add_argument("--implementation", choices=["auto", "tf_ops"], default="auto",
                        help="the EMD solver: 'auto' (the compiled kernel on CPU) or the "
                             "stock-op solver for every call (tf_deepemd.stock_ops_only)")
    parser.add_argument("--intra_op_threads", type=int, default=0, help="0: TF's default")
    parser.add_argument("--inter_op_threads", type=int, default=0, help="0: TF's default")
    parser.add_argument("--label", default="before",
                        help="key of this run in the JSON file (e.g. before, after)")
    parser.add_argument("--output", default=RESULTS)
    return parser


def parse_args(argv=None):
    parser = run_parser(__doc__.split("\n")[0])
    parser.add_argument("--episodes_1shot", type=int, default=300)
    parser.add_argument("--episodes_5shot", type=int, default=40)
    parser.add_argument("--baseline_episodes_5shot", type=int, default=None,
                        help="5-shot episodes with episodes_per_call=1 (default --episodes_5shot)")
    parser.add_argument("--episodes_per_call", default="1,auto",
                        help="comma-separated settings compared: ints or 'auto'")
    parser.add_argument("--reruns", type=int, default=3,
                        help="evaluations of each setting (rates: median, min, max)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated subset of {PARTS}")
    args = parser.parse_args(argv)
    parts = tuple(p for p in args.parts.split(",") if p)
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        parser.error(f"--parts must be a non-empty subset of {PARTS}, got {args.parts!r}")
    args.parts = parts
    args.episodes_per_call = [p.strip() for p in args.episodes_per_call.split(",") if p.strip()]
    if not args.episodes_per_call or any(
            p != "auto" and not (p.isdigit() and int(p) > 0) for p in args.episodes_per_call):
        parser.error("--episodes_per_call: comma-separated positive ints or 'auto'")
    if args.reruns < 1:
        parser.error("--reruns must be >= 1")
    if not os.path.isdir(args.model_dir):
        parser.error(f"--model_dir: no such folder {args.model_dir!r}")
    return args


def start_run(args):
    """Thread settings, logging and the run's gin config; the result's header."""
    import tensorflow as tf

    if args.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)
    gin_files = parse_run_config(args.gin_file or ["gin_configs/quickstart.gin"], args.gin_bindings)
    result = {
        "command": " ".join(["python " + os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "code": code_version(),
        "model_dir": os.path.abspath(args.model_dir),
        "gin_files": gin_files,
        "gin_bindings": args.gin_bindings,
        "threads": {"intra_op": args.intra_op_threads, "inter_op": args.inter_op_threads},
        "implementation": args.implementation,
        "cpu_count": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "tensorflow": tf.__version__,
        "host": platform.node(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(f"measuring {result['code']['package']} (commit {result['code']['commit']})", flush=True)
    return result


def store(args, result, key):
    """Writes ``result`` as ``[args.label][key]`` of ``args.output``, keeping the rest."""
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    stored = {}
    if os.path.isfile(args.output):
        with open(args.output) as stream:
            stored = json.load(stream)
    stored.setdefault(args.label, {})[key] = result
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as stream:
        json.dump(stored, stream, indent=1, sort_keys=True)
        stream.write("\n")
    print(f"written to {args.output} under {args.label!r}, {key!r}", flush=True)


# --------------------------------------------------------------------------
# The run's configuration, through the tools' own gin parsing.
# --------------------------------------------------------------------------

def package_repo():
    import tf_deepemd

    return os.path.dirname(os.path.dirname(os.path.abspath(tf_deepemd.__file__)))


def code_version():
    import tf_deepemd

    repo = package_repo()
    try:
        commit = subprocess.run(
            ["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(subprocess.run(
            ["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {"package": os.path.abspath(tf_deepemd.__file__), "commit": commit,
            "uncommitted_changes": dirty}


def parse_run_config(gin_files, gin_bindings):
    from tf_deepemd.training.gin_config import parse_config

    config_dir = os.path.join(package_repo(), "gin_configs")
    resolved = []
    for name in gin_files:
        if not os.path.isfile(name) and os.path.isfile(os.path.join(package_repo(), name)):
            name = os.path.join(package_repo(), name)
        resolved.append(name)
    parse_config(resolved, gin_bindings, [config_dir])
    return resolved


# --------------------------------------------------------------------------
# (a), (b): the test stage of tools/eval.py.
# --------------------------------------------------------------------------

def bind_episodes_per_call(setting):
    """Binds gin ``run_test.episodes_per_call`` (``'auto'``: None, the evaluator's choice)."""
    import gin

    with gin.unlock_config():
        gin.bind_parameter("run_test.episodes_per_call", None if setting == "auto" else int(setting))


def evaluate(model_dir, shot, episodes, setting, rerun=0):
    from tf_deepemd.training import final_evaluation
    from tf_deepemd.training.experiment import run_experiment

    bind_episodes_per_call(setting)
    results_file = f"eval_throughput_{shot}shot_{setting}_{rerun}.json"
    # A finished test is not rerun: start each measurement from scratch.
    progress = final_evaluation.progress_path(model_dir, results_file)
    if os.path.isfile(progress):
        os.remove(progress)
    start = time.perf_counter()
    results = run_experiment(
        model_dir=model_dir,
        stages=("test",),
        shot=shot,
        test_episodes=episodes,
        results_file=results_file,
    )
    wall = time.perf_counter() - start
    print(f"  [{shot}-shot] episodes_per_call={setting} rerun {rerun}: "
          f"{results['episodes_per_second']:.3f} episodes/s, accuracy {results['accuracy']:.2f} %, "
          f"wall {wall:.1f} s", flush=True)
    return {
        "shot": shot,
        "episodes_per_call": setting,
        "episodes": results["episodes"],
        "accuracy": round(results["accuracy"], 2),
        "ci95": round(results["ci95"], 2),
        "episodes_per_second": results["episodes_per_second"],
        "loop_seconds": results.get("seconds"),
        "wall_seconds": round(wall, 2),
        "method": results.get("method"),
    }


def compare(args, shot):
    """Each ``--episodes_per_call`` setting evaluated ``--reruns`` times, interleaved."""
    import statistics

    runs = {setting: [] for setting in args.episodes_per_call}
    for rerun in range(args.reruns):
        for setting in args.episodes_per_call:
            episodes = args.episodes_1shot if shot == 1 else args.episodes_5shot
            if shot > 1 and setting == "1" and args.baseline_episodes_5shot:
                episodes = args.baseline_episodes_5shot
            runs[setting].append(evaluate(args.model_dir, shot, episodes, setting, rerun))
    summary = {}
    for setting, entries in runs.items():
        rates = [entry["episodes_per_second"] for entry in entries]
        summary[setting] = {"runs": entries, "median": statistics.median(rates),
                            "min": min(rates), "max": max(rates)}
    base = summary[args.episodes_per_call[0]]["median"]
    for entry in summary.values():
        entry["ratio_to_first"] = entry["median"] / base
    return summary


def format_table(result):
    lines = []
    for key in ("eval_1shot", "eval_5shot"):
        for setting, summary in (result.get(key) or {}).items():
            first = summary["runs"][0]
            lines.append(
                f"{key} episodes_per_call={setting}: {summary['median']:.3f} episodes/s "
                f"(median of {len(summary['runs'])}, min {summary['min']:.3f}, max "
                f"{summary['max']:.3f}; x{summary['ratio_to_first']:.2f} the first setting), "
                f"accuracy {first['accuracy']:.2f} +- {first['ci95']:.2f} % over "
                f"{first['episodes']} episodes"
            )
    return "\n".join(lines)


def solver_scope(args):
    """Where the measurements run: `tf_deepemd.stock_ops_only()` for
    ``--implementation=tf_ops``."""
    import contextlib

    import tf_deepemd

    return tf_deepemd.stock_ops_only() if args.implementation == "tf_ops" else contextlib.nullcontext()


def main(argv=None):
    args = parse_args(argv)
    result = start_run(args)
    with solver_scope(args):
        for part in args.parts:
            result[f"eval_{part}"] = compare(args, int(part[0]))
    print(format_table(result), flush=True)
    store(args, result, "rates")


if __name__ == "__main__":
    main()
