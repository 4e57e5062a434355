"""Exports a trained run for TensorFlow Serving, as configured by gin.

    python tools/export.py --gin_file=gin_configs/quickstart.gin \
        --model_dir=runs/quickstart --export_dir=exports/deepemd --warmup

Rebuilds the run's model from the same gin files as training, loads the
weights ``tools/eval.py`` would test (best weights of the latest finished
stage in ``--model_dir``) and writes ``<export_dir>/<version>/`` in TF
Serving's layout (version default: one more than the highest present, or
1). Signatures: ``serving_default`` (a whole few-shot episode of raw uint8
pixels -> logits, probabilities, classes), ``embed`` and ``emd``; see
docs/export_and_serving.md. Without trained weights in the
model dir it exports an untrained model for a demo, with a warning.
A configuration error is printed as one line (exit 2).
"""

from absl import flags
import tool_entry
from tool_entry import FLAGS, define_run_flags, run, start

define_run_flags(weights_verb="export")
flags.DEFINE_string("export_dir", None, "TF Serving's model base folder; <export_dir>/<version>/ is written.")
flags.DEFINE_integer("version", None, "version number (default: next after the existing ones, or 1).")
flags.DEFINE_bool("warmup", False, "write assets.extra/tf_serving_warmup_requests (5-way 1- and 5-shot).")
flags.DEFINE_list("normalization", None, "6 floats mean_r,mean_g,mean_b,std_r,std_g,std_b in [0, 1] "
                  "units (default: the run dataset's evaluation normalisation).")
flags.DEFINE_string("model_name", "deepemd", "the served model's name (MODEL_NAME), used in warmup requests.")
flags.mark_flag_as_required("export_dir")
flags.adopt_module_key_flags(tool_entry)  # --help lists the shared flags too


def parse_normalization(values):
    if values is None:
        return None
    if len(values) != 6:
        raise ValueError(f"--normalization needs 6 comma-separated floats, got {len(values)}.")
    numbers = [float(value) for value in values]
    return tuple(numbers[:3]), tuple(numbers[3:])


def main(argv):
    # WARNING: keeps the untrained-model warning visible among TF's INFO lines.
    launch = start(argv, log_level="warning")
    from tf_deepemd.export.from_run import export_run

    normalization = launch.configure_or_exit(parse_normalization, FLAGS.normalization)
    result, weights = launch.run_or_exit(
        export_run,
        FLAGS.export_dir,
        FLAGS.model_dir,
        version=FLAGS.version,
        warmup=FLAGS.warmup,
        weights=FLAGS.weights,
        normalization=normalization,
        model_name=FLAGS.model_name,
    )
    source = weights or "UNTRAINED weights (see the warning above)"
    print(f"exported version {result.version} to {result.path} from {source}", flush=True)
    if result.warmup_file:
        print(f"warmup requests: {result.warmup_file}", flush=True)


if __name__ == "__main__":
    run(main)
