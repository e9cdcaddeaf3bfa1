"""Options every command shares, for cli.py and the command modules alike."""

import click


def progress_option(command):
    """--progress/--no-progress; cli.handle_errors turns it into a surgery.progress.Progress."""
    return click.option("--progress/--no-progress", "progress", default=None,
                        help="Show what the command is doing on stderr: a bar on a terminal, a line "
                             "every 5 s when piped (default: on, off with --json; "
                             "$LSTM_SURGERY_PROGRESS=0/1 sets it).")(command)
