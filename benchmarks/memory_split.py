"""What a process' peak resident set is made of: anonymous memory (its own heap: Python
objects, tensors, the model's weights) and file-backed pages (shared libraries' code and
read-only data mapped from disk: clean, shared with every other process using the library,
and the first memory the kernel takes back under pressure).

    python benchmarks/memory_split.py -- COMMAND ...

Polls /proc/<pid>/status of the command and of every process it started (the CLI's worker
is a forked child) every 10 ms and prints, for the largest process, the peak of VmRSS
(VmHWM, exact) and the peak of RssAnon (sampled: a peak shorter than the polling interval
can be missed). Linux only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class MemorySplit:
    peak_rss_mib: int     # VmHWM of the largest process (exact, kept by the kernel)
    peak_anon_mib: int    # largest RssAnon seen in any one process (sampled)
    file_at_peak_mib: int  # RssFile of that process when its RssAnon peaked


def _status(pid: int) -> dict[str, int]:
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "RssAnon", "RssFile"):
                    fields[key] = int(value.split()[0]) // 1024
    except (OSError, ValueError):
        pass
    return fields


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


def measure(command: list[str], interval: float = 0.01) -> MemorySplit:
    """Run `command` (output discarded) and split its peak memory (see the module doc)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hwm: dict[int, int] = {}
    anon, file_at = 0, 0
    while process.poll() is None:
        for pid in _descendants(process.pid):
            fields = _status(pid)
            if "VmHWM" in fields:
                hwm[pid] = max(hwm.get(pid, 0), fields["VmHWM"])
            if fields.get("RssAnon", 0) > anon:
                anon, file_at = fields["RssAnon"], fields.get("RssFile", 0)
        time.sleep(interval)
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, command)
    return MemorySplit(max(hwm.values(), default=0), anon, file_at)


if __name__ == "__main__":
    split = measure(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:])
    print(f"peak RSS {split.peak_rss_mib} MiB; peak anonymous {split.peak_anon_mib} MiB "
          f"(file-backed pages beside it {split.file_at_peak_mib} MiB)")
