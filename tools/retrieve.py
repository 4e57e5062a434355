"""Evaluates image retrieval with a trained run: global features vs DeepEMD re-ranking.

    python tools/retrieve.py --gin_file=gin_configs/retrieval_cifar100.gin --model_dir=runs/cifar_fs_cpu
    python tools/retrieve.py --gin_file=gin_configs/quickstart.gin --model_dir=runs/quickstart \
        --shortlist=50 --max_queries=500

The deep-metric-learning protocol on classes unseen in training: the
gallery is ``retrieval.split`` of the run's dataset (default ``'test'``;
``'dml_test'`` = CUB classes 101-200), embedded once by the run's encoder
(the weights ``tools/eval.py`` would test); every gallery image is then a
query in turn, left out of its own ranking. Methods: the cosine of global
features, and its top-K shortlist re-ranked by the DeepEMD score with
uniform or with cross-reference node weights. Writes Recall@{1,2,4,8} and
mAP (%) and the queries/s of each method to ``--output`` (default
``<model_dir>/retrieval_<dataset>_<split>.json``) and prints a table.
Flags override the gin settings ``retrieval.*``. A configuration error is
printed as one line (exit 2).
"""

from absl import flags
import tool_entry
from tool_entry import FLAGS, define_run_flags, define_thread_flags, run, set_log_level, start

define_run_flags(weights_verb="evaluate")
flags.DEFINE_string("split", None, "gallery split (retrieval.split; default 'test').")
flags.DEFINE_integer("shortlist", None, "K, candidates re-ranked per query (retrieval.shortlist_size; default 100).")
flags.DEFINE_list("methods", None, "any of global,uniform,cross_reference (retrieval.methods; default all).")
flags.DEFINE_list("recall_ks", None, "Recall@K cut-offs (retrieval.recall_ks; default 1,2,4,8).")
flags.DEFINE_integer("max_queries", None, "evaluate this many random queries (retrieval.max_queries; default all).")
flags.DEFINE_integer("query_batch_size", None, "queries per re-ranking step (retrieval.query_batch_size).")
flags.DEFINE_float("solver_tolerance", None, "EMD solver tolerance of the re-ranking (retrieval.solver_tolerance; "
                   "default: the model's, 1e-7; 1e-4 is about 2x faster).")
flags.DEFINE_string("index_file", None, "gallery index .npz: loaded if it exists (same weights/data), else written.")
flags.DEFINE_string("output", None, "results JSON (default <model_dir>/retrieval_<dataset>_<split>.json).")
define_thread_flags()
flags.adopt_module_key_flags(tool_entry)  # --help lists the shared flags too


def settings_from_flags():
    """gin's `RetrievalSettings` with the given flags applied."""
    import dataclasses

    from tf_deepemd.retrieval.evaluate import RetrievalSettings

    overrides = {
        "split": FLAGS.split,
        "shortlist_size": FLAGS.shortlist,
        "methods": tuple(FLAGS.methods) if FLAGS.methods else None,
        "recall_ks": tuple(int(k) for k in FLAGS.recall_ks) if FLAGS.recall_ks else None,
        "max_queries": FLAGS.max_queries,
        "query_batch_size": FLAGS.query_batch_size,
        "solver_tolerance": FLAGS.solver_tolerance,
    }
    settings = dataclasses.replace(
        RetrievalSettings(), **{key: value for key, value in overrides.items() if value is not None}
    )
    settings.check()
    return settings


def main(argv):
    launch = start(argv, log_level="warning", configurables=["tf_deepemd.retrieval.evaluate"])
    from tf_deepemd.retrieval.evaluate import format_table
    from tf_deepemd.retrieval.from_run import retrieve_run

    settings = launch.configure_or_exit(settings_from_flags)
    set_log_level("info")
    results, output = launch.run_or_exit(
        retrieve_run, FLAGS.model_dir, weights=FLAGS.weights, index_file=FLAGS.index_file,
        output=FLAGS.output, settings=settings,
    )
    source = results["weights"] or "an UNTRAINED model (see the warning above)"
    print(
        f"{results['dataset']} {results['split']}: gallery of {results['gallery_size']} images "
        f"({results['num_classes']} classes), {results['queries']} leave-one-out queries, "
        f"{results['num_nodes']} nodes per image; weights: {source}",
        flush=True,
    )
    if "embed_images_per_second" in results:
        print(f"gallery embedded at {results['embed_images_per_second']:.1f} images/s", flush=True)
    print(format_table(results), flush=True)
    print(f"results written to {output}", flush=True)


if __name__ == "__main__":
    run(main)
