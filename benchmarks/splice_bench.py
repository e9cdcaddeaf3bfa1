"""Benchmark of `splice --mode weights` between two big LSTM models. Prints a Markdown table.

    python benchmarks/splice_bench.py [--size-mb 1024] [--repeat 3]

Figure from the issue: a weights splice between two models with 1 GB of LSTM weights each
takes at most 2x the time of copying the file, with peak RSS at most 300 MB.

- A and B: two independently initialised stacked-LSTM .keras models of about --size-mb MB
  each (same architecture, different weights), built once under benchmarks/data/ (ignored
  by git) with the helper that benchmarks/run.py uses.
- `cp B`: best of --repeat (warm page cache, like every run below).
- `splice A B --mode weights --no-verify`: best of --repeat; peak RSS of the process (GNU
  time). It hashes both inputs (sha256, for the manifest) and checks B's weights-member CRC
  on a second thread while the main thread streams the new zip.
- Where the time goes, measured in-process: the streamed write alone, and the input hashing
  alone.
- The written file is then checked statically (every weight of B not mapped hashes the same,
  every mapped weight equals A's byte for byte): `check_written`, as `--verify` runs it.
- Full default splice (static + numerical verification in Keras) on a ~100 MB pair, for scale.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def model_pair(size_mb: int) -> tuple[Path, Path]:
    from run import big_lstm_model  # the same generator as the other benchmarks

    return (big_lstm_model(DATA / f"splice_a_{size_mb}mb.keras", size_mb),
            big_lstm_model(DATA / f"splice_b_{size_mb}mb.keras", size_mb))


def timed(command: list[str]) -> tuple[float, int]:
    """(seconds, peak RSS in MB) of one child process."""
    report = DATA / ".splice_time"
    start = time.perf_counter()
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(report), *command], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    return elapsed, int(report.read_text().split()[-1]) // 1024


def best_of(n: int, command: list[str]) -> tuple[float, int]:
    runs = [timed(command) for _ in range(n)]
    return min(r[0] for r in runs), max(r[1] for r in runs)


def in_process(a: Path, b: Path, out: Path) -> dict:
    from surgery.ops.splice import weights as sw, weights_check
    from surgery.io.formats import read_artifact

    a_art, b_art = read_artifact(a), read_artifact(b)
    start = time.perf_counter()
    plan = sw.plan_weights(a_art, b_art, [])
    planned = time.perf_counter() - start
    start = time.perf_counter()
    sw.write_weights(plan, out)
    written = time.perf_counter() - start
    start = time.perf_counter()
    crc_range = weights_check.weights_member_range(str(b))
    weights_check.hash_file(str(b), crc_range[:2] if crc_range else None)
    weights_check.hash_file(str(a))
    hashed = time.perf_counter() - start
    start = time.perf_counter()
    integrity = weights_check.check_written(plan, out)
    checked = time.perf_counter() - start
    return {"plan": planned, "write": written, "hash": hashed, "check": checked,
            "replaced": len(integrity["replaced"]), "unchanged": len(integrity["unchanged_sha256"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    a, b = model_pair(args.size_mb)
    size = b.stat().st_size / 1e6
    out = DATA / "spliced.keras"
    copy = DATA / "splice_copy.keras"
    cli = [sys.executable, str(ROOT / "cli.py")]
    rows = []

    cp_time, _ = best_of(args.repeat, ["cp", str(b), str(copy)])
    copy.unlink(missing_ok=True)
    ours, rss = best_of(args.repeat, [*cli, "splice", str(a), str(b), "--mode", "weights", "-o", str(out),
                                      "--no-verify", "--force"])
    startup, _ = best_of(args.repeat, [sys.executable, "-c", "import cli, surgery.ops.splice.weights"])
    parts = in_process(a, b, DATA / "spliced_inproc.keras")
    (DATA / "spliced_inproc.keras").unlink(missing_ok=True)
    rows.append((f"cp of B ({size:.0f} MB)", f"{cp_time:.2f} s", f"best of {args.repeat}, warm cache"))
    rows.append((f"splice --mode weights --no-verify, 2 × {size:.0f} MB",
                 f"{ours:.2f} s", (f"{ours / cp_time:.2f}× cp (target ≤ 2×); peak RSS {rss} MB (target ≤ 300); "
                                   f"Python start-up and imports {startup:.2f} s of it")))
    rows.append(("  of which: streamed write of the new zip", f"{parts['write']:.2f} s",
                 f"{parts['write'] / cp_time:.2f}× cp; plan (static, no TensorFlow) {parts['plan'] * 1000:.0f} ms"))
    rows.append(("  of which: sha256 of A and B + B's CRC (second thread)", f"{parts['hash']:.2f} s",
                 "for the manifest; runs alongside the write"))
    rows.append(("static check of the written file (part of --verify)", f"{parts['check']:.2f} s",
                 f"{parts['replaced']} weights equal A's byte for byte, {parts['unchanged']} others sha256-identical"))

    small_a, small_b = model_pair(100)
    small_out = DATA / "spliced_100mb.keras"
    full, full_rss = timed([*cli, "splice", str(small_a), str(small_b), "--mode", "weights", "-o", str(small_out),
                            "--force"])
    rows.append((f"splice --mode weights (verified in Keras), 2 × {small_b.stat().st_size / 1e6:.0f} MB", f"{full:.2f} s",
                 f"peak RSS {full_rss} MB: loads B, the result and a reference model in Keras"))
    for path in (out, small_out):
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".manifest.json").unlink(missing_ok=True)

    cpu = platform.processor() or platform.machine()
    print(f"machine: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}; "
          f"disk free {shutil.disk_usage(DATA).free / 1e9:.0f} GB")
    print("| benchmark | result | notes |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
