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

from absl import flags
import tool_entry
from tool_entry import FLAGS, define_run_flags, run, start

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
flags.adopt_module_key_flags(tool_entry)  # --help lists the shared flags too


def main(argv):
    launch = start(argv, log_level="warning")
    from tf_deepemd.visualization.figures import require_matplotlib
    from tf_deepemd.visualization.from_run import visualize_run

    try:
        require_matplotlib()  # before any model work
    except ImportError as error:
        launch.exit_with_one_line(error)
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
    run(main)
