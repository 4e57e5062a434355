"""Fuzz loop and memory loop of the compiled EMD kernel.

    python benchmarks/kernel_fuzz.py fuzz [--iterations 3000]
    python benchmarks/kernel_fuzz.py memory [--calls 100000]

`fuzz` calls the kernel's op and its gradient on random, degenerate and
invalid problems (ties, zero and tiny masses, N or M = 1, huge and tiny
scales, NaN/Inf, negative masses, mismatched shapes), with and without input
validation: every call must return or raise InvalidArgumentError. Run under
AddressSanitizer and UndefinedBehaviorSanitizer by
benchmarks/kernel_sanitizers.sh.

`memory` runs the op forward and backward in a loop and prints the resident
set every tenth of the calls: it must stay flat.
"""

import argparse
import json
import os
import resource
import time

import numpy as np
import tensorflow as tf

from tf_deepemd.ops.emd import kernel


def random_problem(rng):
    batch = int(rng.integers(1, 6))
    rows, cols = (int(k) for k in rng.integers(1, 12, size=2))
    kind = rng.integers(8)
    cost = rng.uniform(0, 1, (batch, rows, cols))
    source, target = rng.uniform(0, 1, (batch, rows)), rng.uniform(0, 1, (batch, cols))
    if kind == 0:  # ties
        cost = np.round(cost * 2) / 2
        source[:], target[:] = 1.0, 1.0
    elif kind == 1:  # zero and tiny masses
        source[rng.random(source.shape) < 0.4] = 0.0
        target[rng.random(target.shape) < 0.4] = 1e-300
    elif kind == 2:  # extreme scales
        cost *= 10.0 ** rng.uniform(-200, 200)
        source *= 10.0 ** rng.uniform(-150, 150)
    elif kind == 3:  # invalid values
        for array in (cost, source, target):
            mask = rng.random(array.shape) < 0.2
            array[mask] = rng.choice([np.nan, np.inf, -np.inf, -1.0], size=mask.sum())
    elif kind == 4:  # mismatched shapes
        target = rng.uniform(0, 1, (batch, cols + 1))
    elif kind == 5:  # equal totals
        target *= source.sum(-1, keepdims=True) / np.maximum(target.sum(-1, keepdims=True), 1e-300)
    l2 = float(rng.choice([0.0, 0.0, 1e-6, 1e-4, 0.05, 5.0, -1.0, np.nan]))
    dtype = rng.choice([np.float32, np.float64])
    return [x.astype(dtype) for x in (cost, source, target)], l2


def fuzz(iterations, seed):
    rng = np.random.default_rng(seed)
    outcomes = {"solved": 0, "InvalidArgumentError": 0}
    for _ in range(iterations):
        (cost, source, target), l2 = random_problem(rng)
        inputs = [tf.constant(x) for x in (cost, source, target)]
        try:
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                flow, *_ = kernel.transport_solve(*inputs, tf.constant(l2, tf.float64),
                                                  validate=bool(rng.integers(2)))
                value = tf.reduce_sum(flow * rng.normal(size=flow.shape).astype(cost.dtype))
            tape.gradient(value, inputs)
            outcomes["solved"] += 1
        except tf.errors.InvalidArgumentError:
            outcomes["InvalidArgumentError"] += 1
    with open("/proc/self/maps") as maps:
        mapped = maps.read()
    print(json.dumps({"fuzz_calls": iterations, **outcomes,
                      "kernel_library": os.environ.get(kernel.LIBRARY_ENVIRONMENT_VARIABLE,
                                                       "the built one"),
                      "sanitizer_runtimes_loaded": [name for name in ("libasan", "libubsan")
                                                    if name in mapped]}))


def memory(calls, seed):
    rng = np.random.default_rng(seed)
    cost = tf.constant(rng.uniform(0, 1, (50, 9, 9)))
    source = tf.constant(rng.uniform(0.5, 1.5, (50, 9)))
    target = tf.constant(rng.uniform(0.5, 1.5, (50, 9)))
    l2 = tf.constant(0.0, tf.float64)

    @tf.function
    def step(cost, source, target, l2):
        with tf.GradientTape() as tape:
            tape.watch([cost, source, target])
            flow, *_ = kernel.transport_solve(cost, source, target, l2)
            value = tf.reduce_sum(flow * flow)
        return tape.gradient(value, [cost, source, target])

    samples, start = [], time.perf_counter()
    for call in range(calls):
        step(cost, source, target, l2 if call % 2 else l2 + 0.01)
        if (call + 1) % max(calls // 10, 1) == 0:
            with open("/proc/self/status") as status:
                rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
            samples.append(rss / 1024)
    print(json.dumps({"calls": calls, "seconds": round(time.perf_counter() - start, 1),
                      "rss_mb_every_tenth": [round(x, 1) for x in samples],
                      "growth_after_first_tenth_mb": round(samples[-1] - samples[0], 1),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["fuzz", "memory"])
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not kernel.kernel_available():
        raise SystemExit(kernel.kernel_load_error())
    if args.mode == "fuzz":
        fuzz(args.iterations, args.seed)
    else:
        memory(args.calls, args.seed)


if __name__ == "__main__":
    main()
