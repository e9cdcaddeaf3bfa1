"""Streaming latency: one step of a 256-unit LSTM at batch 1, per backend, against a TFLite
step written by hand; the op counts of both TFLite graphs; and the cost of a T-step stream
against re-running the whole prefix at every step.

    python benchmarks/stream_latency.py [--quick] [--json]

Model: Input((None, 32)) -> LSTM(256, return_sequences=True) -> Dense(8), seeded weights.

What it does:
- Converts the step model at a fixed batch of 1 exactly as `stream --tflite --batch-size 1`
  does (`surgery.io.tflite.convert`), and a *hand-built* step: the same LSTM step and Dense
  head written directly in TensorFlow (z = x.W + h.U + b, Keras gate order i, f, c, o) with
  the step model's signature (x (1, 1, 32), h, c (1, 256) in; y (1, 1, 8), h, c out) at a
  fixed batch of 1, converted with builtin ops. Both op counts are read from the converted
  flatbuffers (every subgraph).
- Checks every backend over 200 steps against the full-sequence model (|err| <= 1e-5).
- Times one step per call, the backends interleaved: each repeat runs N steps of every backend
  in turn; per backend the median and the best (min) of the repeats' means are printed. The
  backends: Keras eager (the step model called directly), a traced tf.function, a NumPy
  float32 step, the hand-built TFLite step driven the way its user would (public interpreter
  API, tensor indices resolved once: set_tensor x, h, c; invoke; get_tensor y, h, c; no
  checks), and StreamSession.step (what `auto` picks: the TFLite/LiteRT interpreter, one
  thread, like the hand-built one). The ratio StreamSession / hand-built uses the best of
  the repeats.
- T-step totals for StreamSession against re-running the prefix with a traced tf.function.
The machine line heads the output.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import machine  # noqa: E402
from surgery.io.quiet import import_keras  # noqa: E402

FEATURES, UNITS, HEAD = 32, 256, 8


def build_model(keras):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((None, FEATURES)), keras.layers.LSTM(UNITS, return_sequences=True),
                             keras.layers.Dense(HEAD)])


def hand_built_tflite(model) -> bytes:
    """The LSTM step + Dense head of `model` written by hand in TensorFlow at batch 1, with the
    step model's signature, converted to TFLite with builtin ops (the flatbuffer's bytes)."""
    from surgery.io.quiet import import_tensorflow, quiet

    tf = import_tensorflow()
    kernel, recurrent, bias = [np.asarray(w, np.float32) for w in model.layers[0].get_weights()]
    head_w, head_b = [np.asarray(w, np.float32) for w in model.layers[1].get_weights()]
    features, units = kernel.shape[0], recurrent.shape[0]
    head = head_w.shape[1]
    specs = [tf.TensorSpec([1, 1, features], tf.float32, name="x"),
             tf.TensorSpec([1, units], tf.float32, name="h_in"), tf.TensorSpec([1, units], tf.float32, name="c_in")]

    def serving_default(x, h, c):
        z = tf.matmul(tf.reshape(x, [1, features]), kernel) + tf.matmul(h, recurrent) + bias
        i, f, g, o = tf.split(z, 4, axis=1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(c)
        return {"y": tf.reshape(tf.matmul(h, head_w) + head_b, [1, 1, head]), "h": h, "c": c}

    module = tf.Module()  # with a trackable, the converter writes the signature (named after the function)
    module.serve = tf.function(serving_default, input_signature=specs)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with quiet():
        return converter.convert()


def hand_built_step(content: bytes):
    """step(x) -> y over the hand-built graph, state kept in Python: the loop a user writes."""
    from surgery.io import tflite

    interpreter = tflite.load_interpreter(content, num_threads=1)
    runner = interpreter.get_signature_runner("serving_default")
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    x_in, h_in, c_in = (inputs[n]["index"] for n in ("x", "h_in", "c_in"))
    y_out, h_out, c_out = (outputs[n]["index"] for n in ("y", "h", "c"))
    state = [np.zeros((1, UNITS), np.float32), np.zeros((1, UNITS), np.float32)]

    def step(x):
        interpreter.set_tensor(x_in, x.reshape(1, 1, -1))
        interpreter.set_tensor(h_in, state[0])
        interpreter.set_tensor(c_in, state[1])
        interpreter.invoke()
        state[0] = interpreter.get_tensor(h_out)
        state[1] = interpreter.get_tensor(c_out)
        return interpreter.get_tensor(y_out)[:, 0]

    def reset():
        state[:] = [np.zeros((1, UNITS), np.float32), np.zeros((1, UNITS), np.float32)]

    return step, reset


def timed_interleaved(calls: dict, repeats: int) -> dict:
    """{name: (median, min) seconds per call}: each repeat runs every call's n steps in turn."""
    for call, n in calls.values():
        for _ in range(min(n, 50)):
            call()
    runs = {name: [] for name in calls}
    for _ in range(repeats):
        for name, (call, n) in calls.items():
            start = time.perf_counter()
            for _ in range(n):
                call()
            runs[name].append((time.perf_counter() - start) / n)
    return {name: (statistics.median(values), min(values)) for name, values in runs.items()}


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
    from surgery.io import tflite
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

    step_model, plan = stream.build_step_model(model, steps=1, batch_size=1)
    exported = tflite.convert(step_model, plan)  # what `stream --tflite --batch-size 1` writes
    hand_content = hand_built_tflite(model)
    hand_report = tflite.op_report(hand_content)
    hand, hand_reset = hand_built_step(hand_content)
    zeros = [np.zeros((1, UNITS), np.float32)] * 2
    x1 = x_seq[:, :1]
    results = {"machine": machine(), "model": f"Input((None, {FEATURES})) -> LSTM({UNITS}) -> Dense({HEAD})",
               "batch": 1, "per_step_us": {},
               "tflite_ops": {"exported (--batch-size 1)": exported.report.summary(),
                              "hand-built": hand_report.summary()},
               "tflite_op_count": {"exported (--batch-size 1)": sum(exported.report.ops.values()),
                                   "hand-built": sum(hand_report.ops.values())}}

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

    def via_hand_200():
        hand_reset()
        return np.stack([hand(x_seq[:, t]) for t in range(200)], axis=1)

    session_name = f"StreamSession.step ({session.backend})"
    errors = {
        "tf.function": check("tf.function", stream_with(via_compiled)),
        "numpy": check("numpy", stream_with(via_numpy)),
        "hand-built TFLite": check("hand-built TFLite", via_hand_200),
        session_name: check("session", via_session_200),
    }
    h0, c0 = zeros
    x_step = x_seq[:, 0]
    measured = timed_interleaved({
        "Keras eager (step model)": (keras_step, 20 if args.quick else 50),
        "tf.function (step model)": (lambda: compiled([x1, h0, c0]), 500),
        "NumPy float32 step": (lambda: np_step(x_step, h0, c0), 3000),
        "hand-built TFLite step": (lambda: hand(x_step), 5000),
        session_name: (lambda: session.step(x_step), 5000),
    }, repeats)
    for name, (median, best) in measured.items():
        results["per_step_us"][name] = {"median": median * 1e6, "min": best * 1e6}
    results["session_vs_hand_built"] = measured[session_name][1] / measured["hand-built TFLite step"][1]
    results["max_abs_err_vs_full_sequence_200_steps"] = errors
    if session.tflite_report is not None:
        results["tflite_ops"]["StreamSession"] = session.tflite_report.summary()

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
    print(results["machine"])
    print(f"model: {results['model']}, batch 1")
    print("\nTFLite step graphs (op counts from the converted flatbuffers):")
    for name, summary in results["tflite_ops"].items():
        print(f"- {name}: {summary}")
    print(f"\nper-step latency, backends interleaved, {repeats} repeats (median; best in brackets):")
    print("| backend | us per step |\n|---|---|")
    for name, value in results["per_step_us"].items():
        print(f"| {name} | {value['median']:.1f} ({value['min']:.1f}) |")
    print(f"\nStreamSession / hand-built TFLite step (best of the repeats): {results['session_vs_hand_built']:.2f}x")
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
