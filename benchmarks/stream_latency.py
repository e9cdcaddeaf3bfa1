"""Streaming latency: one step of a 256-unit LSTM at batch 1, per backend, and the cost of a
T-step stream against re-running the whole prefix at every step.

    python benchmarks/stream_latency.py [--quick] [--json]

Model: Input((None, 32)) -> LSTM(256, return_sequences=True) -> Dense(8), seeded weights.
Per-step latency is the median over repeats of the mean of N steps (min in brackets), for:
Keras eager (the step model called directly), a traced tf.function, a NumPy float32 step
(written out here for comparison), and StreamSession (what `auto` picks: the TFLite/LiteRT
interpreter). Every backend's output is checked against the full-sequence model first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from surgery.io.quiet import import_keras

FEATURES, UNITS, HEAD = 32, 256, 8


def build_model(keras):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((None, FEATURES)), keras.layers.LSTM(UNITS, return_sequences=True),
                             keras.layers.Dense(HEAD)])


def timed(step, n: int, repeats: int) -> tuple[float, float]:
    """(median, min) seconds per call over `repeats` runs of n calls."""
    for _ in range(min(n, 50)):
        step()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            step()
        runs.append((time.perf_counter() - start) / n)
    return statistics.median(runs), min(runs)


def numpy_step(model):
    """A float32 NumPy LSTM step + Dense head (Keras gate order i, f, c, o)."""
    kernel, recurrent, bias = [np.asarray(w, np.float32) for w in model.layers[0].get_weights()]
    head_w, head_b = [np.asarray(w, np.float32) for w in model.layers[1].get_weights()]
    units = recurrent.shape[0]

    def sigmoid(v):
        return 1.0 / (1.0 + np.exp(-v))

    def step(x, h, c):
        z = x @ kernel + h @ recurrent + bias
        i, f = sigmoid(z[:, :units]), sigmoid(z[:, units:2 * units])
        g, o = np.tanh(z[:, 2 * units:3 * units]), sigmoid(z[:, 3 * units:])
        c = f * c + i * g
        h = o * np.tanh(c)
        return h @ head_w + head_b, h, c

    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, naive baseline up to T=500 only")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    keras = import_keras()
    from surgery import StreamSession
    from surgery.ops import stream
    from surgery.io.quiet import import_tensorflow, quiet

    tf = import_tensorflow()
    repeats = 3 if args.quick else 7
    model = build_model(keras)
    rng = np.random.default_rng(0)
    x_seq = rng.standard_normal((1, 2000, FEATURES)).astype(np.float32)

    # Reference: the full-sequence model, traced once for any length.
    full = tf.function(lambda v: model(v, training=False),
                       input_signature=[tf.TensorSpec([None, None, FEATURES], tf.float32)])
    with quiet():
        reference = np.asarray(full(x_seq[:, :200]))

    step_model, _plan = stream.build_step_model(model, steps=1, batch_size=1)
    zeros = [np.zeros((1, UNITS), np.float32)] * 2
    x1 = x_seq[:, :1]
    results = {"model": f"Input((None, {FEATURES})) -> LSTM({UNITS}) -> Dense({HEAD})", "batch": 1, "per_step_us": {}}

    # Each backend: check 200 steps against the full sequence, then time one step.
    def check(name, run_200):
        got = run_200()
        err = float(np.max(np.abs(got - reference)))
        if err > 1e-5:
            raise SystemExit(f"{name}: differs from the full-sequence model by {err:.3g}")
        return err

    def keras_step():
        with quiet():
            return step_model([x1, *zeros], training=False)

    compiled = stream.compiled_call(step_model)
    np_step = numpy_step(model)
    session = StreamSession(model)  # auto: the fastest backend that works here

    def stream_with(fn):
        def run():
            h, c = zeros
            out = []
            for t in range(200):
                y, h, c = fn(x_seq[:, t:t + 1], h, c)
                out.append(np.asarray(y).reshape(1, 1, HEAD))
            return np.concatenate(out, axis=1)
        return run

    def via_compiled(x, h, c):
        return compiled([x, h, c])

    def via_numpy(x, h, c):
        return np_step(x[:, 0], h, c)

    def via_session_200():
        session.reset()
        return np.stack([session.step(x_seq[:, t]) for t in range(200)], axis=1)

    errors = {
        "tf.function": check("tf.function", stream_with(via_compiled)),
        "numpy": check("numpy", stream_with(via_numpy)),
        f"StreamSession ({session.backend})": check("session", via_session_200),
    }
    h0, c0 = zeros
    x_step = x_seq[:, 0]
    measured = {
        "Keras eager (step model)": timed(keras_step, 50, repeats),
        "tf.function (step model)": timed(lambda: compiled([x1, h0, c0]), 500, repeats),
        "NumPy float32 step": timed(lambda: np_step(x_step, h0, c0), 3000, repeats),
        f"StreamSession.step ({session.backend})": timed(lambda: session.step(x_step), 5000, repeats),
    }
    for name, (median, best) in measured.items():
        results["per_step_us"][name] = {"median": median * 1e6, "min": best * 1e6}
    results["max_abs_err_vs_full_sequence_200_steps"] = errors
    if session.tflite_report is not None:
        results["tflite_ops"] = session.tflite_report.summary()

    # T-step totals: streaming (constant work per step) vs re-running the prefix each step.
    lengths = [250, 500, 1000, 2000]
    naive_lengths = [250, 500] if args.quick else [250, 500, 1000]
    totals = {}
    for length in lengths:
        session.reset()
        start = time.perf_counter()
        for t in range(length):
            session.step(x_seq[:, t])
        totals.setdefault(length, {})["stream_s"] = time.perf_counter() - start
    for length in naive_lengths:
        with quiet():
            full(x_seq[:, :2])  # traced already; warm
            start = time.perf_counter()
            for t in range(1, length + 1):
                last = full(x_seq[:, :t])[:, -1]
            totals[length]["naive_s"] = time.perf_counter() - start
        session.reset()
        for t in range(length):
            y = session.step(x_seq[:, t])
        err = float(np.max(np.abs(np.asarray(last) - y)))
        if err > 1e-5:
            raise SystemExit(f"naive and streamed outputs differ at T={length} by {err:.3g}")
    results["totals"] = {str(k): v for k, v in totals.items()}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"model: {results['model']}, batch 1")
    if "tflite_ops" in results:
        print(f"TFLite step model: {results['tflite_ops']}")
    print("\nper-step latency (median of repeats; min in brackets):")
    print("| backend | us per step |\n|---|---|")
    for name, value in results["per_step_us"].items():
        print(f"| {name} | {value['median']:.1f} ({value['min']:.1f}) |")
    print("\nmax |err| vs the full-sequence model over 200 steps: "
          + ", ".join(f"{k} {v:.2g}" for k, v in errors.items()))
    print("\nT-step totals: streaming vs re-running the whole prefix every step (naive, traced tf.function):")
    print("| T | streaming total | per step | naive total | naive / streaming |\n|---|---|---|---|---|")
    for length in lengths:
        row = totals[length]
        naive = row.get("naive_s")
        print(f"| {length} | {row['stream_s'] * 1e3:.1f} ms | {row['stream_s'] / length * 1e6:.1f} us | "
              + (f"{naive:.2f} s | {naive / row['stream_s']:.0f}x |" if naive else "- | - |"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
