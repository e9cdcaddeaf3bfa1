"""`splice --mode weights --no-verify` against `cp && sync` of the same bytes. Prints a Markdown
table headed by the machine line.

    python benchmarks/splice_bench.py [--size-mb 1024] [--repeat 3] [--baseline CHECKOUT] [--skip-verified]

Goal (issue 11): at most 1.3x `cp B && sync` (the output has B's size), peak RSS under 300 MB.

- A: a stacked-LSTM .keras model of about --size-mb MB (benchmarks/data/splice_a_<size>mb.keras);
  B: the expose benchmark's model of the same size and architecture (lstm_<size>mb.keras),
  initialised independently. Both are built once by run.big_lstm_model (ignored by git). All
  of A's recurrent weights replace B's: the output is mostly A's bytes in B's layout.
- Rounds, interleaved (benchmarks/disk_pace.py: each run from a fresh state, outputs removed
  and the disk synced first, untimed): `cp B COPY && sync`; `cli.py splice A B --mode weights
  -o OUT --no-verify`; with --baseline, the same command from another checkout (an older
  commit: "before"). Best wall and CPU seconds (user + system) of each; peak RSS. (CPU
  seconds count the children a process waited for: worker processes left to exit on their
  own, as the old splice's hashing workers were, are missed.)
- Where the time goes, in-process: the one read of each input (SourceDigests: SHA-256 of A
  and B for the manifest, their members' CRC-32 checked, the CRC-32s the new member's is
  combined from) alone; the write alone once those are done, fsync included (kernel copies
  of B's and A's ranges, CRC-32 combined, nothing read again); and the floor the manifest
  sets: hashlib's SHA-256 of A and of B read one after the other.
- The written file is checked statically (`check_written`, as --verify runs it: every weight
  of B not mapped hashes the same, every mapped one equals A's byte for byte); with
  --baseline, its bytes are compared with the baseline's output.
- Unless --skip-verified: the full default splice (static + numerical verification in
  Keras) on a ~100 MB pair, for scale.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from disk_pace import cp_and_sync, fresh, interleaved, measure  # noqa: E402
from run import big_lstm_model, machine  # noqa: E402


def model_pair(size_mb: int) -> tuple[Path, Path]:
    """(A, B): B is the expose benchmark's model; A another of the same architecture."""
    return (big_lstm_model(DATA / f"splice_a_{size_mb}mb.keras", size_mb),
            big_lstm_model(DATA / f"lstm_{size_mb}mb.keras", size_mb))


def in_process(a: Path, b: Path, out: Path) -> dict:
    from surgery.io.formats import read_artifact
    from surgery.io.saving import fsync
    from surgery.ops.splice import weights as sw, weights_check

    a_art, b_art = read_artifact(str(a)), read_artifact(str(b))
    start = time.perf_counter()
    plan = sw.plan_weights(a_art, b_art, [])
    planned = time.perf_counter() - start
    start = time.perf_counter()
    digests = weights_check.start_hashing(a_art, b_art, plan)
    digests.wait()
    digested = time.perf_counter() - start
    fresh([out])
    start = time.perf_counter()
    sw.write_weights(plan, out, digests=digests)
    fsync(out)
    written = time.perf_counter() - start
    start = time.perf_counter()
    for path in (a, b):
        digest = hashlib.sha256()
        with open(path, "rb", buffering=0) as handle:
            while chunk := handle.read(8 << 20):
                digest.update(chunk)
    hashed = time.perf_counter() - start
    start = time.perf_counter()
    integrity = weights_check.check_written(plan, out)
    checked = time.perf_counter() - start
    return {"plan": planned, "digests": digested, "write": written, "sha256": hashed, "check": checked,
            "replaced": len(integrity["replaced"]), "unchanged": len(integrity["unchanged_sha256"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="a checkout of an older commit, run beside this one")
    parser.add_argument("--skip-verified", action="store_true", help="leave out the verified 100 MB splice")
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    a, b = model_pair(args.size_mb)
    size = b.stat().st_size / 1e6
    tag = os.getpid()  # other runs of this benchmark may share benchmarks/data
    out, copy, before_out = (DATA / f"{name}_{tag}.keras" for name in ("spliced", "splice_copy", "spliced_before"))
    splice = ["splice", str(a), str(b), "--mode", "weights", "--no-verify", "-o"]
    commands = {"cp": cp_and_sync(b, copy),
                "tool": ([sys.executable, str(ROOT / "cli.py"), *splice, str(out)], [out])}
    if args.baseline is not None:
        commands["before"] = ([sys.executable, str(args.baseline / "cli.py"), *splice, str(before_out)], [before_out])
    got = interleaved(args.repeat, commands)
    same = filecmp.cmp(out, before_out, shallow=False) if args.baseline is not None else None
    fresh([out, copy, before_out])
    tool, cp = got["tool"], got["cp"]
    rows = [(f"`cp B && sync` ({size:.0f} MB)", f"{cp.seconds:.2f} s", f"CPU {cp.cpu_seconds:.2f} s"),
            (f"splice --mode weights --no-verify, 2 × {size:.0f} MB", f"{tool.seconds:.2f} s",
             f"**{tool.seconds / cp.seconds:.2f}×** `cp B && sync` (goal ≤ 1.3×); CPU {tool.cpu_seconds:.2f} s; "
             f"peak RSS {tool.rss_mb} MB (goal < 300)")]
    if args.baseline is not None:
        before = got["before"]
        rows.append((f"  before ({args.baseline.name})", f"{before.seconds:.2f} s",
                     f"{before.seconds / cp.seconds:.2f}× `cp B && sync`; CPU {before.cpu_seconds:.2f} s; peak RSS "
                     f"{before.rss_mb} MB; outputs byte-identical: {same}"))
    rows.append((f"  best of {args.repeat} rounds, interleaved", "", ""))

    parts = in_process(a, b, DATA / f"spliced_inproc_{tag}.keras")
    fresh([DATA / f"spliced_inproc_{tag}.keras"])
    rows.append(("  in-process: one read of A and B (SHA-256, CRC-32s)", f"{parts['digests']:.2f} s",
                 "on a background thread, beside the write"))
    rows.append(("  in-process: the write alone, reads done, flushed to disk", f"{parts['write']:.2f} s",
                 f"kernel copies, CRC-32 combined; plan (static, no TensorFlow) {parts['plan'] * 1000:.0f} ms"))
    rows.append(("  in-process: hashlib SHA-256 of A, then B", f"{parts['sha256']:.2f} s",
                 f"the floor the manifest's two SHA-256 set: {parts['sha256'] / cp.seconds:.2f}× `cp B && sync`"))
    rows.append(("static check of the written file (part of --verify)", f"{parts['check']:.2f} s",
                 f"{parts['replaced']} weights equal A's byte for byte, {parts['unchanged']} others sha256-identical"))

    if not args.skip_verified:
        small_a, small_b = model_pair(100)
        small_out = DATA / f"spliced_100mb_{tag}.keras"
        full = measure([sys.executable, str(ROOT / "cli.py"), "splice", str(small_a), str(small_b), "--mode",
                        "weights", "-o", str(small_out)], [small_out])
        fresh([small_out])
        rows.append((f"splice --mode weights (verified in Keras), 2 × {small_b.stat().st_size / 1e6:.0f} MB",
                     f"{full.seconds:.2f} s",
                     f"peak RSS {full.rss_mb} MB: loads B, the result and a reference model in Keras"))

    print(machine())
    print("| benchmark | result | notes |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
