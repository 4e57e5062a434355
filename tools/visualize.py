"""Draws PNG figures of a run: a DeepEMD matching, an episode, the training curves.

    python tools/visualize.py --gin_file=gin_configs/quickstart.gin --model_dir=runs/quickstart \
        --output_dir=docs

Writes into ``--output_dir``:

* ``matching.png``: a query and a support image of the same class (or
  ``--support_index``) with heatmaps of their DeepEMD node weights, lines
  for the ``--num_flows`` strongest flows between matched regions, and the
  flow matrix;
* ``episode.png``: a test episode (the run's way/shot/query unless given):
  support images per class and the queries with predicted and true
  classes, green when correct, red when wrong;
* ``accuracy.png``: accuracy (and loss) per epoch of each training stage,
  from ``<model_dir>/<stage>/log.csv``.

The model and data are those of the gin files, as ``tools/eval.py``; the
weights are the run's best (an untrained model is drawn, with a warning and
a note in the titles, when the model dir has none). Needs matplotlib
(``pip install -e '.[plots]'``). A configuration error is printed as one
line (exit 2).
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from tool_flags import define_run_flags  # noqa: E402

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "gin_configs")

define_run_flags(weights_verb="draw with")
flags.DEFINE_string("output_dir", None, "folder of the PNG files.")
flags.DEFINE_list("figures", None, "any of matching,episode,accuracy (default: all; accuracy only if "
                  "the run has a training log).")
flags.DEFINE_string("split", None, "episode split (default run_experiment.test_split).")
flags.DEFINE_integer("way", None, "episode way (default run_experiment.way).")
flags.DEFINE_integer("shot", None, "episode shot (default run_experiment.shot).")
flags.DEFINE_integer("query", 3, "queries per class in episode.png.")
flags.DEFINE_integer("seed", 0, "which episode.")
flags.DEFINE_integer("query_index", 0, "the episode query shown in matching.png.")
flags.DEFINE_integer("support_index", None, "its support image (default: first of its true class).")
flags.DEFINE_enum("node_weights", None, ["cross_reference", "uniform"], "matching weights (default: the model's).")
flags.DEFINE_integer("num_flows", 10, "flow lines drawn in matching.png.")
flags.DEFINE_list("csv", None, "training logs for accuracy.png (default <model_dir>/<stage>/log.csv).")
flags.mark_flag_as_required("output_dir")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from tf_deepemd.training import launch

    launch.configure_runtime()
    from tf_deepemd.training.gin_config import parse_config
    from tf_deepemd.visualization.figures import require_matplotlib
    from tf_deepemd.visualization.from_run import visualize_run

    logging.set_verbosity(logging.WARNING)
    launch.run_or_exit(parse_config, FLAGS.gin_file, FLAGS.gin_bindings, [CONFIG_DIR])
    try:
        require_matplotlib()  # before any model work
    except ImportError as error:
        print(f"error: {launch.one_line(error)}", file=sys.stderr, flush=True)
        sys.exit(2)
    written = launch.run_or_exit(
        visualize_run,
        FLAGS.output_dir,
        FLAGS.model_dir,
        figures=FLAGS.figures,
        weights=FLAGS.weights,
        split=FLAGS.split,
        way=FLAGS.way,
        shot=FLAGS.shot,
        query=FLAGS.query,
        seed=FLAGS.seed,
        query_index=FLAGS.query_index,
        support_index=FLAGS.support_index,
        node_weights=FLAGS.node_weights,
        num_flows=FLAGS.num_flows,
        csv_paths=FLAGS.csv,
    )
    for name, path in written.items():
        print(f"{name}: {path}", flush=True)


if __name__ == "__main__":
    app.run(main)
