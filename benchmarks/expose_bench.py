"""expose-state benchmarks, each figure a ratio measured in one run with the runs interleaved.

    python benchmarks/expose_bench.py [--sizes 64,256] [--big] [--repeat 2] [--skip-verified]
                                      [--baseline CHECKOUT]

For each model size (MB of float32 LSTM weights; --big adds 1024):
- verified: `cli.py expose-state MODEL -o OUT --force` (the default: written file verified
  against the original) against the naive route (benchmarks/naive_expose.py: plain Keras
  load, rebuild, set_weights, save, no verification). Each repeat runs the tool, then the
  naive route; the figure is best tool time / best naive time, and peak RSS of each as a
  multiple of the model file's size, bytes over bytes (GNU time's maximum resident set of
  the largest process). Beside it the floor for any run that loads the model into Keras:
  the bare `import tensorflow, keras` peak RSS plus the file's size. One more run splits the
  peak into anonymous memory (the process' own: Python, tensors, the weights) and the
  shared libraries' file-backed pages (benchmarks/memory_split.py).
- copy: `cli.py expose-state MODEL -o OUT --no-verify` against `cp MODEL COPY && sync`
  (benchmarks/disk_pace.py: each run from a fresh state, outputs removed and the disk synced
  first, untimed), interleaved the same way; with --baseline, the same command from another
  checkout (an older commit: "before") runs in the same rounds. Both write the whole file and
  wait for it to reach the disk (the tool fsyncs before its rename). Wall and CPU seconds
  (user + system) of each, peak RSS of the tool; the written weights member is checked
  byte-identical to the source's.
- the whole-process runs include the CLI's supervising fork (surgery.io.sandbox) and Python
  start-up; the bare `import tensorflow, keras` time is printed beside them.

Models are generated once under benchmarks/data/ (ignored by git) by run.big_lstm_model.
Prints a Markdown table; the machine (cores, lscpu model name) heads it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data"
sys.path.insert(0, str(ROOT / "benchmarks"))

from disk_pace import cp_and_sync, fresh, interleaved as interleaved_fresh  # noqa: E402
from memory_split import measure as memory_split  # noqa: E402
from run import big_lstm_model, machine, member_hash, timed  # noqa: E402

CLI = [sys.executable, str(ROOT / "cli.py")]


def interleaved(repeat: int, commands: dict) -> dict:
    """{name: (best seconds, max peak RSS MB)}, running each command once per round in turn."""
    runs: dict = {name: [] for name in commands}
    for _ in range(repeat):
        for name, command in commands.items():
            runs[name].append(timed(command))
    return {name: (min(r[0] for r in rs), max(r[1] for r in rs)) for name, rs in runs.items()}


def rss_ratio(rss_mib: int, size_bytes: int) -> float:
    """Peak RSS (MiB, as `timed` gives it) over a file's size in bytes."""
    return rss_mib * 2**20 / size_bytes


def bench_size(size_mb: int, repeat: int, verified: bool, rows: list, import_rss: int,
               baseline: Path | None = None) -> None:
    model = big_lstm_model(DATA / f"lstm_{size_mb}mb.keras", size_mb)
    size = model.stat().st_size
    mb = size / 1e6
    out, naive_out, copy = DATA / "bench_exposed.keras", DATA / "bench_naive.keras", DATA / "bench_copy.keras"
    if verified:
        got = interleaved(repeat, {
            "tool": [*CLI, "expose-state", str(model), "-o", str(out), "--force"],
            "naive": [sys.executable, str(ROOT / "benchmarks" / "naive_expose.py"), str(model), str(naive_out)],
        })
        (tool, tool_rss), (naive, naive_rss) = got["tool"], got["naive"]
        floor = rss_ratio(import_rss, size) + 1
        split = memory_split([*CLI, "expose-state", str(model), "-o", str(out), "--force"])
        rows.append((f"verified expose-state, {mb:.0f} MB", f"{tool:.2f} s vs naive {naive:.2f} s",
                     f"**{tool / naive:.2f}×** the naive route; peak RSS {tool_rss} MiB = "
                     f"**{rss_ratio(tool_rss, size):.2f}×** the model file (naive {naive_rss} MiB = "
                     f"{rss_ratio(naive_rss, size):.2f}×; floor, bare imports + the file: {floor:.2f}×); "
                     f"of it anonymous memory at most {split.peak_anon_mib} MiB = "
                     f"{rss_ratio(split.peak_anon_mib, size):.2f}× (beside {split.file_at_peak_mib} MiB of "
                     f"shared-library pages; benchmarks/memory_split.py, one more run); best of {repeat}, interleaved"))
    rows.append(bench_copy(model, repeat, baseline))
    for path in (out, naive_out, copy):
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".manifest.json").unlink(missing_ok=True)


def bench_copy(model: Path, repeat: int, baseline: Path | None) -> tuple:
    """expose-state --no-verify against `cp && sync` of the same file (and the baseline checkout)."""
    mb = model.stat().st_size / 1e6
    tag = os.getpid()  # other runs of this benchmark may share benchmarks/data
    out, copy, before_out = (DATA / f"{name}_{tag}.keras" for name in ("bench_exposed", "bench_copy", "bench_before"))
    commands = {"cp": cp_and_sync(model, copy),
                "tool": ([*CLI, "expose-state", str(model), "-o", str(out), "--no-verify"], [out])}
    if baseline is not None:
        commands["before"] = ([sys.executable, str(baseline / "cli.py"), "expose-state", str(model), "-o",
                               str(before_out), "--no-verify"], [before_out])
    got = interleaved_fresh(repeat, commands)
    same = member_hash(model, "model.weights.h5") == member_hash(out, "model.weights.h5")
    fresh([out, copy, before_out])
    tool, cp = got["tool"], got["cp"]
    before = (f"; before ({baseline.name}): {got['before'].seconds:.2f} s = {got['before'].seconds / cp.seconds:.2f}×, "
              f"CPU {got['before'].cpu_seconds:.2f} s" if baseline is not None else "")
    return (f"expose-state --no-verify, {mb:.0f} MB", f"{tool.seconds:.2f} s vs `cp && sync` {cp.seconds:.2f} s",
            f"**{tool.seconds / cp.seconds:.2f}×** `cp && sync`; CPU {tool.cpu_seconds:.2f} s vs {cp.cpu_seconds:.2f} s; "
            f"peak RSS {tool.rss_mb} MB; weights member identical: {same}{before}; best of {repeat}, interleaved")


def bare_imports(repeat: int) -> tuple[float, int]:
    """(best seconds, peak RSS MiB) of `import tensorflow, keras` alone."""
    runs = [timed([sys.executable, "-c", "import tensorflow, keras"]) for _ in range(repeat)]
    return min(r[0] for r in runs), min(r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="64,256", help="model sizes in MB, comma-separated")
    parser.add_argument("--big", action="store_true", help="also the 1 GB model (minutes for the naive route)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-verified", action="store_true", help="only the --no-verify copy figures")
    parser.add_argument("--baseline", type=Path, help="a checkout of an older commit, run beside this one (copy figures)")
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",") if s] + ([1024] if args.big else [])
    rows: list = []
    import_seconds, import_rss = bare_imports(args.repeat)
    for size in sizes:
        bench_size(size, args.repeat, not args.skip_verified, rows, import_rss, args.baseline)
    rows.append(("bare `import tensorflow, keras`", f"{import_seconds:.2f} s, peak RSS {import_rss} MiB", "for scale"))
    print(machine())
    print("| benchmark | result | ratio and notes |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
