"""Run one command in a supervised child process with limits on time, memory and files.

A hostile model file can drive a loader into a runaway allocation (libhdf5 on a corrupt
object header, a Keras config that makes it build a huge tensor) or into a loop. The CLI
therefore forks before anything reads the user's files: the child does the work under
RLIMIT_AS (address space) and RLIMIT_NOFILE, the parent enforces a wall-time limit. On
any end of the child — exit, crash, memory exhaustion, timeout, a SIGTERM/SIGHUP/SIGINT
sent to the parent — the parent removes the child's temporaries (listed by
`saving.cleanup_logged_temps` in a per-run log) and its private copies, and reports one
line. The parent never imports TensorFlow: forking a process that runs TensorFlow's
threads is unsafe, forking before is not.

Defaults (overridable by option or environment, documented in the README):
  wall time      LSTM_SURGERY_TIMEOUT          3600 s
  address space  LSTM_SURGERY_MAX_MEMORY       the machine's physical memory
  open files     LSTM_SURGERY_MAX_OPEN_FILES   4096
A value of 0 disables that limit. Where an NVIDIA driver is present the CUDA runtime
reserves far more address space than it uses, so RLIMIT_DATA (memory actually written)
takes the place of RLIMIT_AS.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import select
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

from surgery.errors import ResourceLimitError, UsageError
from surgery.io import run_env

TIMEOUT_ENV = "LSTM_SURGERY_TIMEOUT"
MAX_MEMORY_ENV = "LSTM_SURGERY_MAX_MEMORY"
MAX_OPEN_FILES_ENV = "LSTM_SURGERY_MAX_OPEN_FILES"
DEFAULT_TIMEOUT_S = 3600.0
DEFAULT_MAX_OPEN_FILES = 4096
# After a forwarded SIGTERM the child gets this long to clean up before SIGKILL.
TERMINATION_GRACE_S = 10.0
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
# What the parent sends when a limit is reached: the child cleans up as on SIGTERM but says
# nothing (the parent reports the limit).
STOP_SIGNAL = signal.SIGUSR2

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True)
class Limits:
    timeout_s: float | None  # None: no wall-time limit
    max_memory: int | None  # bytes; None: no memory limit
    max_open_files: int | None

    def describe(self) -> str:
        memory = "none" if self.max_memory is None else format_size(self.max_memory)
        timeout = "none" if self.timeout_s is None else f"{self.timeout_s:g} s"
        return f"wall time {timeout}, memory {memory}, open files {self.max_open_files or 'none'}"


class Terminated(BaseException):
    """Raised in the working process on SIGTERM/SIGHUP, so cleanup runs as for Ctrl-C.
    `quiet`: the supervisor stopped the work and reports why itself."""

    def __init__(self, signum: int, quiet: bool = False):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.quiet = quiet


def parse_size(text: str | int | None, what: str = "--max-memory") -> int | None:
    """'8G', '512M', '1073741824' -> bytes; '0' -> None (no limit)."""
    if text is None:
        return None
    match = _SIZE.match(str(text))
    if not match:
        raise UsageError(f"{what}: cannot read {str(text)!r} as a size (e.g. 8G, 512M, 0 for none)")
    value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    return value or None


def format_size(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size >= _UNITS[unit.lower()] and size % _UNITS[unit.lower()] == 0:
            return f"{size // _UNITS[unit.lower()]}{unit}"
    return f"{size}B"


def resolve_limits(timeout: float | None = None, max_memory: str | None = None,
                   max_open_files: int | None = None) -> Limits:
    """Options win over the environment, which wins over the defaults; 0 means none."""
    if timeout is None:
        timeout = _env_number(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
    if timeout < 0:
        raise UsageError(f"--timeout must be >= 0 seconds, got {timeout!r}")
    memory = parse_size(max_memory if max_memory is not None
                        else os.environ.get(MAX_MEMORY_ENV, str(physical_memory() or 0)),
                        "--max-memory" if max_memory is not None else MAX_MEMORY_ENV)
    if max_open_files is None:
        max_open_files = int(_env_number(MAX_OPEN_FILES_ENV, DEFAULT_MAX_OPEN_FILES))
    if max_open_files < 0:
        raise UsageError(f"--max-open-files must be >= 0, got {max_open_files!r}")
    return Limits(timeout or None, memory, max_open_files or None)


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None or text.strip() == "":
        return default
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{name}={text!r} is not a number") from None


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def supported() -> bool:
    """Forking supervision needs POSIX fork and waitpid; elsewhere commands run in-process."""
    return hasattr(os, "fork") and hasattr(os, "waitpid")


# ----------------------------------------------------------------------------------------
# The parent


def run_supervised(work: Callable[[], int], limits: Limits) -> int:
    """Run `work()` in a child under `limits`; return its exit code, or raise
    ResourceLimitError / Terminated-derived exit codes for abnormal ends."""
    run_dir = tempfile.mkdtemp(prefix="lstm-surgery-run-")
    temp_log = os.path.join(run_dir, "temporaries.log")
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid == 0:  # the child never returns from here
        _child(work, limits, run_dir, temp_log)
    received: list[int] = []

    def forward(signum, _frame):
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        status, timed_out = _wait(pid, limits.timeout_s, received)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if os.path.exists(temp_log):  # only a writing command logs temporaries
            from surgery.io import saving

            saving.cleanup_logged_temps(temp_log)
        shutil.rmtree(run_dir, ignore_errors=True)
    return _outcome(status, timed_out, received, limits)


def _wait(pid: int, timeout_s: float | None, received: list[int]) -> tuple[int, bool]:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    kill_at = None
    pidfd = _pidfd(pid)
    try:
        while True:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return 0, False
            if done:
                return status, False
            now = time.monotonic()
            if received and kill_at is None:
                kill_at = now + TERMINATION_GRACE_S
            if kill_at is not None and now >= kill_at:
                _kill_group(pid, signal.SIGKILL)
            if deadline is not None and now >= deadline:
                _kill_group(pid, STOP_SIGNAL)
                _, status = _reap_within(pid, TERMINATION_GRACE_S)
                return status, True
            _sleep_until_exit(pidfd, 0.05 if pidfd is None else 0.5)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _reap_within(pid: int, grace: float) -> tuple[int, int]:
    end = time.monotonic() + grace
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return done, status
        time.sleep(0.05)
    _kill_group(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _sleep_until_exit(pidfd: int | None, seconds: float) -> None:
    if pidfd is None:
        time.sleep(seconds)
        return
    with contextlib.suppress(InterruptedError, OSError):
        select.select([pidfd], [], [], seconds)


def _kill_group(pid: int, signum: int) -> None:
    """The child leads its own process group: this also reaches any helper it started."""
    for kill in (lambda: os.killpg(pid, signum), lambda: os.kill(pid, signum)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill()


def _outcome(status: int, timed_out: bool, received: list[int], limits: Limits) -> int:
    if timed_out:
        raise ResourceLimitError(
            f"stopped after {limits.timeout_s:g} s: the wall-time limit for one command "
            f"(raise it with --timeout or {TIMEOUT_ENV}; 0 for none)"
        )
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else signal.SIGKILL
    if received:
        first = received[0]
        raise Terminated(first)
    name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
    memory = "none" if limits.max_memory is None else format_size(limits.max_memory)
    raise ResourceLimitError(
        f"the worker process died with {name} (out of memory, or a crash in a native "
        f"library on this input); memory limit {memory} "
        f"(--max-memory or {MAX_MEMORY_ENV})"
    )


# ----------------------------------------------------------------------------------------
# The child


def _child(work: Callable[[], int], limits: Limits, run_dir: str, temp_log: str) -> None:
    code = 5
    try:
        _die_with_parent()
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        os.environ[run_env.TEMP_LOG_ENV] = temp_log
        os.environ[run_env.RUN_DIR_ENV] = run_dir
        install_termination_handlers()
        apply_limits(limits)
        code = work() or 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException as error:  # never let the child unwind into the parent's code
        with contextlib.suppress(Exception):
            print(f"error: internal error in the worker: {type(error).__name__}: {error}; "
                  "please report", file=sys.stderr)
        code = 5
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 5)


def _die_with_parent() -> None:
    """If the parent is killed (even with SIGKILL) the child must not run on unsupervised."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(137)


def install_termination_handlers() -> None:
    """SIGTERM and SIGHUP end the work like Ctrl-C: exceptions unwind, temporaries go."""

    def terminate(signum, _frame):
        for other in (*FORWARDED_SIGNALS, STOP_SIGNAL):  # cleanup must not be interrupted again
            signal.signal(other, signal.SIG_IGN)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum, quiet=signum == STOP_SIGNAL)

    for signum in (*FORWARDED_SIGNALS, STOP_SIGNAL):
        signal.signal(signum, terminate)


def apply_limits(limits: Limits) -> None:
    import resource

    if limits.max_open_files is not None:
        _lower(resource, resource.RLIMIT_NOFILE, limits.max_open_files)
    if limits.max_memory is not None:
        kind = resource.RLIMIT_DATA if _cuda_driver_present() else resource.RLIMIT_AS
        _lower(resource, kind, limits.max_memory)


def _lower(resource, kind: int, value: int) -> None:
    soft, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    if soft == resource.RLIM_INFINITY or value < soft:
        resource.setrlimit(kind, (value, hard))


def _cuda_driver_present() -> bool:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidiactl")
