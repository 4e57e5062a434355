#!/usr/bin/env bash
# Meta-training through the solver's KKT gradient (make_model.gradient_mode
# 'kkt', the paper's differentiable EMD) against the official code's
# constant-flow path ('stop_flow', what its default OpenCV solver gives), on
# CIFAR-FS at CPU scale (gin_configs/cifar_fs_cpu.gin): one shared
# pre-training, then the same meta-training budget for both modes from the
# same pre-trained weights and seed; 5-way 1-shot on 5,000 test episodes and
# 5-way 5-shot (SFC) on 600, with 95 % CIs and the meta-training seconds per
# episode (median over epochs of log.csv's train_seconds, validation excluded).
#
#   DATA_DIR=/path/to/cifar100 bash benchmarks/gradient_mode_ablation.sh
#   DATA_DIR=... RUNS=/somewhere PYTHON=python3 bash benchmarks/gradient_mode_ablation.sh
#
# DATA_DIR holds cifar-100-python.tar.gz (or the extracted folder). Every
# step resumes where it stopped, so after a kill the same command continues.
# At the end it prints the table and writes
# benchmarks/results/cifar_fs_cpu/gradient_mode_ablation.json.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATA_DIR:?set DATA_DIR to the folder holding cifar-100-python.tar.gz}"
RUNS="${RUNS:-runs/gradient_mode_ablation}"
CONFIG=gin_configs/cifar_fs_cpu.gin
PYTHON="${PYTHON:-python}"
MODES=(stop_flow kkt)
DATA_BINDING="--gin_bindings=run_experiment.data_dir='$DATA_DIR'"
PRETRAINED="$RUNS/pretrain/pretrain/best.weights.h5"
mkdir -p "$RUNS"

if [ ! -f "$RUNS/pretrain/results.json" ]; then
  echo "== shared pre-training" >&2
  "$PYTHON" tools/train.py --gin_file="$CONFIG" --model_dir="$RUNS/pretrain" "$DATA_BINDING" \
    --gin_bindings="run_experiment.stages=('pretrain',)"
fi

for mode in "${MODES[@]}"; do
  if [ ! -f "$RUNS/$mode/results.json" ]; then
    echo "== $mode: meta-training + 1-shot test" >&2
    "$PYTHON" tools/train.py --gin_file="$CONFIG" --model_dir="$RUNS/$mode" "$DATA_BINDING" \
      --gin_bindings="make_model.gradient_mode='$mode'" \
      --gin_bindings="run_experiment.stages=('meta_train', 'test')" \
      --gin_bindings="run_experiment.init_weights='$PRETRAINED'"
  fi
done

for mode in "${MODES[@]}"; do
  if [ ! -f "$RUNS/$mode/eval_test_5way_5shot.json" ]; then
    echo "== $mode: 5-shot test (SFC)" >&2
    "$PYTHON" tools/eval.py --gin_file="$CONFIG" --model_dir="$RUNS/$mode" --episodes=600 \
      "$DATA_BINDING" --gin_bindings="make_model.gradient_mode='$mode'" \
      --gin_bindings="run_experiment.shot=5"
  fi
done

"$PYTHON" - "$RUNS" benchmarks/results/cifar_fs_cpu/gradient_mode_ablation.json "${MODES[@]}" <<'PY'
import csv, json, os, re, statistics, sys
runs, output, modes = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = {}
print("| meta-training gradient | 5-way 1-shot (%) | 5-way 5-shot, SFC (%) | meta-training s/episode |")
print("|---|---|---|---|")
for mode in modes:
    one = json.load(open(os.path.join(runs, mode, "results.json")))
    five = json.load(open(os.path.join(runs, mode, "eval_test_5way_5shot.json")))
    config = open(os.path.join(runs, mode, "operative_config.gin")).read()
    per_epoch = int(re.search(r"meta_train\.episodes_per_epoch = (\d+)", config).group(1))
    with open(os.path.join(runs, mode, "meta_train", "log.csv")) as stream:
        seconds = [float(row["train_seconds"]) for row in csv.DictReader(stream)]
    per_episode = statistics.median(seconds) / per_epoch
    rows[mode] = {
        "one_shot": {k: one[k] for k in ("accuracy", "ci95", "episodes")},
        "five_shot": {k: five[k] for k in ("accuracy", "ci95", "episodes")},
        "meta_train_seconds_per_episode": per_episode,
        "meta_train_best_val_accuracy": one["stages"]["meta_train"]["best_val_accuracy"],
    }
    print(f"| {mode} | {one['accuracy']:.2f} ± {one['ci95']:.2f} | {five['accuracy']:.2f} ± "
          f"{five['ci95']:.2f} | {per_episode:.3f} |")
with open(output, "w") as stream:
    json.dump(rows, stream, indent=1, sort_keys=True)
PY
