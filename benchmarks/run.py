"""Benchmarks for the figures named in the issues. Prints a Markdown table for the README.

    python benchmarks/run.py [--only inspect|throughput] [--repeat 5]

- inspect in-process on a model with ~100 MB of weights and on a 1000-layer config (TensorFlow
  and Keras never imported, asserted), and the whole `cli.py inspect` process on the 100 MB one.
- full-sequence throughput of the rebuilt model vs the original.
expose-state figures: benchmarks/expose_bench.py; splice: benchmarks/splice_bench.py.

Big models are generated once under benchmarks/data/ (ignored by git): a real Keras LSTM
model saved small, whose weights member is then rewritten at full size with h5py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data"
sys.path.insert(0, str(ROOT))


def big_lstm_model(path: Path, weight_mb: int) -> Path:
    """A stacked-LSTM .keras file with about `weight_mb` MB of float32 weights."""
    if path.exists():
        return path
    from surgery.io.quiet import import_keras

    keras = import_keras()
    # Two LSTM layers of `units`: weights ~ 4*4*units^2*2 floats -> choose units to hit the size.
    units = int(((weight_mb * 1e6) / 4 / (2 * 8)) ** 0.5)
    inputs = keras.Input((None, units), name="x")
    hidden = keras.layers.LSTM(units, return_sequences=True, name="lstm_a")(inputs)
    hidden = keras.layers.LSTM(units, name="lstm_b")(hidden)
    outputs = keras.layers.Dense(4, name="head")(hidden)
    model = keras.Model(inputs, outputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def machine() -> str:
    """The machine line every benchmark table is headed by: cores and lscpu's model name."""
    model = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"machine: {os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def timed(command: list[str]) -> tuple[float, int]:
    """(seconds, peak RSS in MB) of a child process."""
    # GNU time reports this one command's peak RSS (getrusage would mix all children).
    report = DATA / ".time"
    start = time.perf_counter()
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(report), *command], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    return elapsed, int(report.read_text().split()[-1]) // 1024


def member_hash(path: Path, member: str) -> str:
    digest = hashlib.sha256()
    with zipfile.ZipFile(path) as archive, archive.open(member) as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def best_of(n: int, command: list[str]) -> tuple[float, int]:
    runs = [timed(command) for _ in range(n)]
    return min(r[0] for r in runs), max(r[1] for r in runs)


def many_layers_model(path: Path, layers: int = 1000) -> Path:
    """A .keras model with `layers` layers: Dense(8) and LSTM(8, return_sequences) alternating."""
    if path.exists():
        return path
    from surgery.io.quiet import import_keras

    keras = import_keras()
    hidden = inputs = keras.Input((None, 8))
    for i in range(layers // 2 - 1):
        hidden = keras.layers.Dense(8, name=f"d{i}")(hidden)
        hidden = keras.layers.LSTM(8, return_sequences=True, name=f"l{i}")(hidden)
    hidden = keras.layers.Dense(8, name="d_last")(hidden)
    outputs = keras.layers.LSTM(8, name="l_last")(hidden)
    path.parent.mkdir(parents=True, exist_ok=True)
    keras.Model(inputs, outputs).save(path)
    return path


def bench_inspect(rows: list, repeat: int = 5) -> None:
    """inspect in-process (best of `repeat`, TensorFlow and Keras never imported) on a 100 MB
    model and a 1000-layer one, and the whole CLI process on the 100 MB model."""
    model = big_lstm_model(DATA / "lstm_100mb.keras", 100)
    layers = many_layers_model(DATA / "layers_1000.keras")
    size = model.stat().st_size / 1e6
    for path, label in ((model, f"{size:.0f} MB model"), (layers, "1000-layer config")):
        code = (
            "import sys, time; from surgery.ops.inspect import inspect; times = []\n"
            f"for _ in range({repeat}):\n"
            f"    t = time.perf_counter(); inspect({str(path)!r}); times.append(time.perf_counter() - t)\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; print(min(times))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
        rows.append((f"inspect, {label}, in-process", f"{float(out.stdout.strip()):.3f} s",
                     f"best of {repeat}; target ≤ 0.3 s; TensorFlow and Keras not imported"))
    cli_time, cli_rss = best_of(repeat, [sys.executable, str(ROOT / "cli.py"), "inspect", str(model), "--json"])
    bare, _ = best_of(repeat, [sys.executable, "-c", "pass"])
    rows.append((f"inspect CLI, {size:.0f} MB model, whole process", f"{cli_time:.3f} s",
                 f"best of {repeat}; target ≤ 0.3 s; peak RSS {cli_rss} MB; bare `python -c pass` {bare:.3f} s"))


def bench_throughput(rows: list) -> None:
    import numpy as np

    from surgery.ops.expose import expose_state
    from surgery.io.quiet import import_keras, import_tensorflow

    keras = import_keras()
    tf = import_tensorflow()
    inputs = keras.Input((None, 64))
    hidden = keras.layers.LSTM(256, return_sequences=True)(inputs)
    hidden = keras.layers.LSTM(256)(hidden)
    model = keras.Model(inputs, keras.layers.Dense(8)(hidden))
    rebuilt = expose_state(model, inputs=True)
    x = np.random.default_rng(0).standard_normal((32, 200, 64)).astype("float32")
    zeros = [np.zeros((32, 256), "float32")] * 4
    f_orig = tf.function(lambda v: model(v, training=False))
    f_new = tf.function(lambda v, s: rebuilt([v, *s], training=False))

    def once(fn, *args):
        start = time.perf_counter()
        fn(*args)
        return time.perf_counter() - start

    f_orig(x), f_new(x, zeros)  # trace both first
    # Interleaved, best of many: background load hits both models alike.
    times_orig, times_new = [], []
    for _ in range(15):
        times_orig.append(once(f_orig, x))
        times_new.append(once(f_new, x, zeros))
    steps = x.shape[0] * x.shape[1]
    original, new = steps / min(times_orig), steps / min(times_new)
    rows.append(("full-sequence throughput, 2×LSTM(256), batch 32, T=200",
                 f"{new:,.0f} steps/s", f"{new / original:.3f}× the original's {original:,.0f} (target ≥ 0.98×)"))


def print_table(rows: list) -> None:
    """The machine line, then the rows as a Markdown table; the rows as JSON on stderr."""
    print(machine())
    print("| benchmark | result | notes |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(json.dumps({"rows": rows}), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["inspect", "throughput"])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows: list = []
    if args.only in (None, "inspect"):
        bench_inspect(rows, args.repeat)
    if args.only in (None, "throughput"):
        bench_throughput(rows)
    print_table(rows)


if __name__ == "__main__":
    main()
