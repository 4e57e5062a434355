"""Trains and tests a few-shot model as configured by gin.

    python tools/train.py --gin_file=gin_configs/quickstart.gin
    python tools/train.py --gin_file=gin_configs/mini_1shot.gin \
        --gin_bindings="run_experiment.data_dir='/data'" --model_dir=runs/mini_1shot

Runs the configured stages (pre-training, meta-training, test) and writes
into the model dir: ``results.json`` (test accuracy and 95 % CI in %),
``config.gin`` and ``operative_config.gin``, and per stage ``log.csv``,
``tensorboard/`` event files, ``best.weights.h5`` and the resume
checkpoints. Interrupt it and run the same command again: finished stages
are skipped, the interrupted one continues after its last full epoch (the
test after its last saved episode) and ends as an uninterrupted run would;
other settings under an existing model dir are refused, naming them.
A configuration error is printed as one line (exit code 2); any other
error with its traceback.
"""

import os

from absl import flags
import tool_entry
from tool_entry import FLAGS, define_run_flags, define_thread_flags, run, start

define_run_flags()
define_thread_flags()
flags.DEFINE_integer("cpu_devices", 1, "split the CPU into this many logical devices "
                     "(to use run_experiment.strategy='mirrored' without GPUs).")
flags.DEFINE_integer("keras_verbose", -1, "Keras fit verbosity; -1: bars on a terminal, else 2.")
flags.adopt_module_key_flags(tool_entry)  # --help lists the shared flags too


def main(argv):
    launch = start(argv, log_level="info", cpu_devices=FLAGS.cpu_devices)
    from tf_deepemd.training.experiment import run_experiment
    from tf_deepemd.visualization.figures import require_matplotlib
    from tf_deepemd.visualization.training_curves import AccuracyPlot

    try:
        require_matplotlib()
        no_plots = None
    except ImportError as error:  # said once, at the end
        no_plots = error
    overrides = {
        "verbose": launch.keras_verbosity(FLAGS.keras_verbose),
        # accuracy.png next to each stage's log.csv, redrawn every epoch.
        "stage_callbacks": lambda files: [] if no_plots else [AccuracyPlot(files.log_csv)],
    }
    if FLAGS.model_dir:
        overrides["model_dir"] = FLAGS.model_dir
    results = launch.run_or_exit(run_experiment, **overrides)
    if "accuracy" in results:
        print(
            f"{results['dataset']} {results['split']} {results['method']} {results['way']}-way "
            f"{results['shot']}-shot: {results['accuracy']:.2f} +- {results['ci95']:.2f} % "
            f"({results['episodes']} episodes); results in {results['model_dir']}/results.json",
            flush=True,
        )
    if no_plots:
        print(f"No accuracy.png: {no_plots} Then tools/visualize.py --figures=accuracy draws it from the "
              "logs.", flush=True)
    else:
        plots = [os.path.join(results["model_dir"], stage, "accuracy.png") for stage in results["stages"]]
        plots = [path for path in plots if os.path.isfile(path)]
        if plots:
            print(f"accuracy per epoch: {', '.join(plots)}", flush=True)


if __name__ == "__main__":
    run(main, on_interrupt=(
        "run the same command again to resume: finished stages are skipped and the "
        "interrupted one continues after its last finished epoch (the test after its last saved episode)."
    ))
