"""How every command runs: in a supervised child process under resource limits (as a program),
with a progress display, and every way it can end mapped to one line and the documented exit code.

Exit codes: 0 ok, 1 verification failed, 2 usage error or unreadable input,
3 unsafe content refused, 4 model not supported, 5 internal error (please report).
"""

from __future__ import annotations

import functools
import json
import sys

import click

from surgery.errors import SurgeryError
from surgery.progress import Progress, resolve_mode as resolve_progress

EXIT_INTERNAL = 5
SANDBOX_ENV = "LSTM_SURGERY_SANDBOX"  # "0": run commands in-process, without limits
LIMIT_OPTIONS = ("timeout", "max_memory", "max_open_files")

# Set by the program entry point (cli.entry); `main` called in-process (tests, click's
# CliRunner) runs each command in-process.
_supervised = False


def set_supervised(supervised: bool) -> None:
    """Run commands in a supervised child process (True) or in this process (False)."""
    global _supervised
    _supervised = supervised


def emit_json(payload) -> None:
    click.echo(json.dumps(payload, indent=2, default=str))


def exit_with(code: int) -> None:
    if code:
        sys.exit(code)


def handle_errors(command):
    """Turn library exceptions into a one-line message and the documented exit code; as a
    program, run the command in a supervised child process under the resource limits."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from surgery.io import sandbox

        as_json = kwargs.get("as_json", False)
        limit_options = {name: kwargs.pop(name, None) for name in LIMIT_OPTIONS}
        progress_flag = kwargs.pop("progress", None)

        def work():
            try:
                # Made in the worker (the forked child), whose stderr is the terminal's or the pipe's.
                with Progress(resolve_progress(progress_flag, as_json)) as progress:
                    return command(*args, progress=progress, **kwargs)
            except BaseException as error:  # noqa: BLE001 - every end maps to one line
                _fail_for(error, as_json)

        try:
            limits = sandbox.resolve_limits(**limit_options)
            if _supervised and sandbox.supported():
                code = sandbox.run_supervised(work, limits)
                if code:
                    sys.exit(code)
                return None
            return work()
        except SystemExit:
            raise
        except BaseException as error:  # noqa: BLE001
            _fail_for(error, as_json)

    return wrapper


def _fail_for(error: BaseException, as_json: bool):
    from surgery.io.sandbox import Terminated

    if isinstance(error, SystemExit):
        raise error
    if isinstance(error, Terminated) and error.quiet:
        sys.exit(128 + error.signum)
    _fail(*describe_error(error), as_json)


def describe_error(error: BaseException) -> tuple[str, int, str]:
    """(one-line message, exit code, kind) for any error a command may end with."""
    from surgery.io.sandbox import Terminated

    if isinstance(error, SurgeryError):
        return str(error), error.exit_code, type(error).__name__
    if isinstance(error, KeyboardInterrupt):
        return "interrupted", 130, "KeyboardInterrupt"
    if isinstance(error, Terminated):
        return f"terminated by {error}", 128 + error.signum, "Terminated"
    if isinstance(error, ImportError) and "failed to map segment" in str(error):
        return (f"not enough memory under the limit to load TensorFlow ({error}); raise --max-memory",
                2, "ResourceLimitError")
    if isinstance(error, MemoryError):
        return "ran out of memory (raise the limit with --max-memory if the machine has more)", 2, "ResourceLimitError"
    # Never a traceback on the user's terminal: a bug in the tool, said as such.
    message = " ".join(f"{type(error).__name__}: {error}".split())[:500]
    return f"internal error: {message}; this is a bug in lstm-surgery, please report it", EXIT_INTERNAL, "InternalError"


def _fail(message: str, code: int, kind: str, as_json: bool):
    if as_json:
        emit_json({"ok": False, "error": message, "error_type": kind, "exit_code": code})
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
