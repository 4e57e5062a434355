"""Evaluates a trained run on test episodes (SFC for shot > 1), as configured by gin.

    python tools/eval.py --gin_file=gin_configs/mini_5shot.gin --model_dir=runs/mini_1shot
    python tools/eval.py --gin_file=gin_configs/quickstart.gin --episodes=1000

Loads the best weights of the latest finished stage in the model dir (or
``run_experiment.test_weights``), runs the test stage only and writes
``<model_dir>/eval_<split>_<way>way_<shot>shot.json`` with the same fields
as ``results.json`` (``dataset, split, method, way, shot, episodes,
accuracy, ci95, episodes_per_second``); prints the accuracy and the
episodes per second. A configuration error is printed as one line (exit 2).
"""

import os

from absl import flags
import tool_entry
from tool_entry import FLAGS, define_run_flags, define_thread_flags, run, start

define_run_flags()
flags.DEFINE_integer("episodes", None, "test episodes (default: run_experiment.test_episodes).")
flags.DEFINE_string("output", None, "results file name inside model_dir (default "
                    "eval_<split>_<way>way_<shot>shot.json).")
define_thread_flags()
flags.adopt_module_key_flags(tool_entry)  # --help lists the shared flags too


def main(argv):
    launch = start(argv, log_level="info")
    from tf_deepemd.training.experiment import run_experiment
    from tf_deepemd.training.run_settings import run_settings

    overrides = {"stages": ("test",)}
    if FLAGS.model_dir:
        overrides["model_dir"] = FLAGS.model_dir
    if FLAGS.episodes is not None:
        overrides["test_episodes"] = FLAGS.episodes
    if FLAGS.output:
        overrides["results_file"] = FLAGS.output
    else:
        run = run_settings()
        overrides["results_file"] = f"eval_{run.test_split}_{run.way}way_{run.shot}shot.json"
    results = launch.run_or_exit(run_experiment, **overrides)
    print(
        f"{results['dataset']} {results['split']} {results['method']} {results['way']}-way "
        f"{results['shot']}-shot: {results['accuracy']:.2f} +- {results['ci95']:.2f} % over "
        f"{results['episodes']} episodes, {results['episodes_per_second']:.2f} episodes/s; "
        f"written to {os.path.join(results['model_dir'], overrides['results_file'])}",
        flush=True,
    )


if __name__ == "__main__":
    run(main, on_interrupt=(
        "run the same command again to resume the test after its last saved episode."
    ))
