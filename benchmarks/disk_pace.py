"""Timing helpers for the benchmarks that hold a command writing a file against `cp && sync` of
the same bytes (benchmarks/expose_bench.py, benchmarks/splice_bench.py).

Each run starts from the same state: its outputs (and their manifests) removed and the disk
synced first, untimed, so that no run pays for replacing an earlier run's file or for writing
back what another left dirty. The runs of one round are interleaved and the best of the rounds
kept: background load hits every command alike. Besides wall time, the CPU seconds (user +
system, of the process and the children it waited for) are recorded: on a shared machine
they are the steadier figure, and they show where a ratio comes from.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu_seconds: float
    rss_mb: int


def fresh(paths) -> None:
    """Remove earlier outputs and their manifests, then flush the disk: untimed."""
    for path in paths:
        path = Path(path)
        for target in (path, path.with_name(path.name + ".manifest.json")):
            target.unlink(missing_ok=True)
    subprocess.run(["sync"], check=True)


def measure(command: list[str], outputs=(), report: Path | None = None) -> Run:
    """One run of `command` from a fresh state: wall seconds, CPU seconds, peak RSS (GNU time)."""
    fresh(outputs)
    report = report or Path(f"/tmp/lstm-surgery-bench-{os.getpid()}.time")
    start = time.perf_counter()
    subprocess.run(["/usr/bin/time", "-f", "%U %S %M", "-o", str(report), *command], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    user, system, rss_kb = report.read_text().split()[-3:]
    return Run(seconds, float(user) + float(system), int(rss_kb) // 1024)


@dataclass(frozen=True)
class Best:
    seconds: float      # best wall time of the rounds
    cpu_seconds: float  # best CPU time of the rounds
    rss_mb: int         # largest peak RSS of the rounds
    rounds: int


def interleaved(rounds: int, commands: dict) -> dict:
    """{name: Best}: each round runs every command once, in turn. `commands`: {name: (argv,
    outputs to remove before each run)}. The last round's outputs are left for checks."""
    runs: dict = {name: [] for name in commands}
    for _ in range(rounds):
        for name, (command, outputs) in commands.items():
            runs[name].append(measure(command, outputs))
    return {name: Best(min(r.seconds for r in rs), min(r.cpu_seconds for r in rs), max(r.rss_mb for r in rs),
                       len(rs)) for name, rs in runs.items()}


def cp_and_sync(source: Path, copy: Path) -> tuple[list[str], list[Path]]:
    """The anchor: copy the file and wait until it is on the disk."""
    return ["sh", "-c", f"cp '{source}' '{copy}' && sync"], [copy]
