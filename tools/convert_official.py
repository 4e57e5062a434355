"""Converts an official DeepEMD checkpoint (PyTorch ``max_acc.pth``) into the run's Keras weights.

    python tools/convert_official.py --checkpoint=max_acc.pth \
        --gin_file=gin_configs/mini_1shot.gin --output=official.weights.h5
    python tools/eval.py --gin_file=gin_configs/mini_1shot.gin \
        --gin_bindings="run_experiment.test_weights='official.weights.h5'"

Builds the run's episode model from the same gin files as training (its
backbone must be ``resnet12``), loads the checkpoint into it with
`tf_deepemd.load_official_checkpoint` (no PyTorch needed, nothing in the
file is executed; every tensor is checked by name and shape) and writes the
model's weights to ``--output`` (default ``<model_dir>/official.weights.h5``),
which ``tools/eval.py`` tests through ``run_experiment.test_weights``.
A configuration error or a checkpoint that does not fit is printed as one
line (exit 2).
"""

import os

from absl import flags
import tool_entry
from tool_entry import FLAGS, define_run_flags, run, start

define_run_flags()
flags.DEFINE_string("checkpoint", None, "the official checkpoint (.pth) to convert.")
flags.DEFINE_string("output", None, "the .weights.h5 file to write (default: "
                    "<model_dir>/official.weights.h5).")
flags.mark_flag_as_required("checkpoint")
flags.adopt_module_key_flags(tool_entry)  # --help lists the shared flags too


def convert(checkpoint, model_dir, output):
    """``(weights path, number of tensors loaded)``; the run's model gets ``checkpoint``."""
    from tf_deepemd import run_folder
    from tf_deepemd.official import load_official_checkpoint
    from tf_deepemd.training.model_config import configured_model
    from tf_deepemd.training.run_settings import run_settings

    run = run_settings(model_dir)
    if not output and not run.model_dir:
        raise ValueError("No --output and no model_dir (--model_dir or run_experiment.model_dir).")
    output = output or os.path.join(run.model_dir, "official.weights.h5")
    if not output.endswith(".weights.h5"):
        raise ValueError(f"--output must end with .weights.h5 (Keras' weights format), got {output!r}.")
    model = run_folder.new_episode_model(configured_model, run.image_size, run.seed)
    loaded = load_official_checkpoint(model, checkpoint)
    run_folder.save_weights_atomically(model, output)
    return output, len(loaded)


def main(argv):
    launch = start(argv, log_level="info")
    output, num_tensors = launch.configure_or_exit(
        convert, FLAGS.checkpoint, FLAGS.model_dir, FLAGS.output
    )
    print(f"loaded {num_tensors} tensors of {FLAGS.checkpoint}; wrote {output}", flush=True)


if __name__ == "__main__":
    run(main)
