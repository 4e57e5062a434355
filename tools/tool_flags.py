"""absl flags shared by the command-line tools (kept free of TensorFlow
imports so that `--help` stays fast)."""

from absl import flags


def define_run_flags(*, weights_verb=None):
    """`--gin_file`, `--gin_bindings` and `--model_dir`, plus `--weights` when
    the tool can use another weights file ("export", "evaluate", ...)."""
    flags.DEFINE_multi_string("gin_file", [], "gin config file(s) of the run, parsed in order.")
    flags.DEFINE_multi_string("gin_bindings", [], "gin bindings, applied after the files.")
    flags.DEFINE_string(
        "model_dir", None, "the run's folder; overrides run_experiment.model_dir."
    )
    if weights_verb:
        flags.DEFINE_string(
            "weights", None, f"{weights_verb} this .weights.h5 instead of the run's best weights."
        )


def define_thread_flags():
    """`--intra_op_threads` and `--inter_op_threads` (0: TensorFlow's choice)."""
    flags.DEFINE_integer(
        "intra_op_threads", 0,
        "TensorFlow intra-op threads (0: TF's choice; 1 is fastest when the EMD solver dominates).",
    )
    flags.DEFINE_integer("inter_op_threads", 0, "TensorFlow inter-op threads (0: TF's choice).")
