"""extract-states throughput, memory and Beam overhead.

    python benchmarks/extract_states.py            # 10k sequences (+ RSS at 10k and 100k)
    python benchmarks/extract_states.py --million  # RSS also at 1M sequences (slow)

(1) final states vs plain `model.predict` on the exposed model, same data and batch size;
(2) --trajectory vs `predict` of the same model with return_sequences=True;
(3) peak RSS of the command at N and 100N sequences (a child process each);
(4) the Beam DirectRunner against the local command on the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
T, F, UNITS, BATCH = 50, 16, 64, 256


def build(directory: Path, keras) -> Path:
    inputs = keras.Input((T, F))
    hidden = keras.layers.LSTM(UNITS, name="lstm")(inputs)
    path = directory / "bench.keras"
    keras.Model(inputs, keras.layers.Dense(4)(hidden)).save(path)
    return path


def best(fn, repeats=3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def write_data(path: Path, rows: int) -> None:
    """A .npy of `rows` sequences written in pieces (the writer holds no more than the reader)."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (rows, T, F)}
    rng = np.random.default_rng(0)
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        for begin in range(0, rows, 10_000):
            handle.write(rng.standard_normal((min(10_000, rows - begin), T, F)).astype("float32").tobytes())


def peak_rss(model: Path, data: Path, out: Path) -> float:
    code = ("import resource, sys; sys.path.insert(0, %r); from surgery.ops.extract import extract_states; "
            "extract_states(%r, %r, %r, batch_size=%d); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)" % (str(ROOT), str(model), str(data),
                                                                        str(out), BATCH))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(run.stdout.split()[-1]) / 1024  # MiB


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--million", action="store_true", help="also measure peak RSS at 1M sequences")
    parser.add_argument("--no-beam", action="store_true")
    args = parser.parse_args()
    from surgery.io.quiet import import_keras

    keras = import_keras()
    from surgery.ops.expose import expose_state
    from surgery.ops.extract import extract_states
    from surgery.io.loading import load_model

    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = build(tmp, keras)
        model = load_model(path)
        x = np.random.default_rng(0).standard_normal((args.rows, T, F)).astype("float32")
        exposed = expose_state(model)
        exposed.predict(x[:BATCH], batch_size=BATCH, verbose=0)
        predict_s = best(lambda: exposed.predict(x, batch_size=BATCH, verbose=0))
        extract_states(model, x[:BATCH])
        final_s = best(lambda: extract_states(model, x, batch_size=BATCH))
        sequences = keras.Model(model.inputs, keras.layers.LSTM(UNITS, return_sequences=True)(model.inputs[0]))
        sequences.predict(x[:BATCH], batch_size=BATCH, verbose=0)
        seq_s = best(lambda: sequences.predict(x, batch_size=BATCH, verbose=0))
        extract_states(model, x[:BATCH], trajectory=True)
        traj_s = best(lambda: extract_states(model, x, batch_size=BATCH, trajectory=True))
        report["final_vs_predict_exposed"] = {"extract_seq_per_s": args.rows / final_s,
                                              "predict_seq_per_s": args.rows / predict_s,
                                              "ratio": predict_s / final_s}
        report["trajectory_vs_predict_return_sequences"] = {"extract_seq_per_s": args.rows / traj_s,
                                                            "predict_seq_per_s": args.rows / seq_s,
                                                            "ratio": seq_s / traj_s}
        sizes = [args.rows, args.rows * 10] + ([1_000_000] if args.million else [])
        rss = {}
        for rows in sizes:
            data = tmp / f"x{rows}.npy"
            write_data(data, rows)
            rss[rows] = peak_rss(path, data, tmp / f"s{rows}.npz")
            data.unlink()
        report["peak_rss_mib"] = rss
        if not args.no_beam:
            data = tmp / "x.npy"
            np.save(data, x)
            local_s = best(lambda: extract_states(path, data, tmp / "l.npz", force=True, batch_size=BATCH), 1)
            beam_s = best(lambda: extract_states(path, data, tmp / "b.npz", force=True, batch_size=BATCH,
                                                 runner="beam"), 1)
            report["beam_direct_runner"] = {"local_s": local_s, "beam_s": beam_s, "overhead": beam_s / local_s}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
