#!/usr/bin/env bash
# Builds the compiled EMD kernel with AddressSanitizer and
# UndefinedBehaviorSanitizer and runs the kernel's tests and a fuzz loop of
# random, degenerate and invalid inputs with it; then the 100,000-call
# memory loop on the regular build. Prints the sanitizer reports (there must
# be none) and the memory figures.
#
#   bash benchmarks/kernel_sanitizers.sh [fuzz iterations, default 3000]
set -euo pipefail
cd "$(dirname "$0")/.."
iterations="${1:-3000}"
build="$(mktemp -d)"
log="$build/sanitizers.log"
read -r -a compile_flags < <(python -c "import tensorflow as tf; print(' '.join(tf.sysconfig.get_compile_flags()))" 2>/dev/null)
read -r -a link_flags < <(python -c "import tensorflow as tf; print(' '.join(tf.sysconfig.get_link_flags()))" 2>/dev/null)
# The solvers build with both sanitizers. The TensorFlow glue (emd_ops.cc,
# with compact_problem.h) builds with AddressSanitizer only: GCC 12 rejects
# the absl headers TensorFlow ships under UndefinedBehaviorSanitizer (a
# constexpr comparison of function pointers).
common=(-fPIC -O1 -g -fno-omit-frame-pointer -Wno-deprecated-declarations -Wno-interference-size
        "${compile_flags[@]}")
for source in tf_deepemd/ops/emd/kernel/*.cc; do
  sanitizers=(-fsanitize=address,undefined -fno-sanitize-recover=undefined)
  [ "$(basename "$source")" = emd_ops.cc ] && sanitizers=(-fsanitize=address)
  g++ -c "${common[@]}" "${sanitizers[@]}" "$source" -o "$build/$(basename "$source").o"
done
g++ -shared -fsanitize=address,undefined "$build"/*.o -o "$build/_emd_ops_asan.so" \
  "${link_flags[@]}"
export TF_DEEPEMD_KERNEL_LIBRARY="$build/_emd_ops_asan.so"
export LD_PRELOAD="$(g++ -print-file-name=libasan.so):$(g++ -print-file-name=libubsan.so)"
# TensorFlow itself is not instrumented; leaks at exit are its own.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=2
status=0
python -m pytest -q -p no:cacheprovider tests/ops/test_emd_kernel.py tests/ops/test_emd.py \
  tests/ops/test_emd_gradients.py -k "kernel or not tf_ops" >"$log" 2>&1 || status=$?
python benchmarks/kernel_fuzz.py fuzz --iterations "$iterations" >>"$log" 2>&1 || status=$?
unset LD_PRELOAD TF_DEEPEMD_KERNEL_LIBRARY
reports=$(grep -c -E "ERROR: AddressSanitizer|runtime error:" "$log" || true)
grep -E "passed|failed|fuzz_calls" "$log" || true
echo "sanitizer reports: $reports (log: $log)"
python benchmarks/kernel_fuzz.py memory 2>/dev/null | tail -1
[ "$status" -eq 0 ] && [ "$reports" -eq 0 ]
