"""The `lstm-surgery` command line: the click group, its commands, the program entry point.

Each command lives in surgery/commands/<command>.py over the shared option groups
(surgery/commands/options.py); surgery/commands/runner.py maps every way a command ends to
one line and an exit code: 0 ok, 1 verification failed, 2 usage error or unreadable input,
3 unsafe content refused, 4 model not supported, 5 internal error (please report).

Run as a program (`lstm-surgery ...`, `python cli.py ...`), each command works in a
supervised child process with limits on wall time, memory and open files
(surgery/io/sandbox.py); `main` called in-process (tests, click's CliRunner) runs in-process.
Importing this module loads neither NumPy nor TensorFlow: the commands import what they use.
"""

from __future__ import annotations

import os

import click

from surgery.commands import (convert, diff, expose_state, extract_states, inspect, splice, split_seq2seq, stream,
                              verify)
from surgery.commands.epilogs import EPILOGS
from surgery.commands.options import limit_options, load_options, write_options  # noqa: F401 - re-exported
from surgery.commands.runner import (EXIT_INTERNAL, SANDBOX_ENV, describe_error,  # noqa: F401 - re-exported
                                     emit_json, handle_errors, set_supervised)

COMMANDS = (inspect.inspect, expose_state.expose_state, verify.verify, split_seq2seq.split_seq2seq,
            convert.convert, splice.splice, stream.stream, extract_states.extract_states, diff.diff)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOGS["main"])
@click.version_option(package_name="lstm-surgery")
def main():
    """Expose, inject, stream and splice the state of recurrent layers in saved Keras models."""


for _command in COMMANDS:
    main.add_command(_command)


def entry():
    """The program entry point (console script and `python cli.py`): commands run
    supervised, and SIGTERM/SIGHUP clean up like Ctrl-C."""
    supervised = os.environ.get(SANDBOX_ENV, "1") != "0"
    set_supervised(supervised)
    if not supervised:
        from surgery.io.sandbox import install_termination_handlers

        install_termination_handlers()
    main()


if __name__ == "__main__":
    entry()
