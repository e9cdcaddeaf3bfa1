"""`lstm-surgery diff A B`: static comparison of two model files."""

import sys

import click

from surgery.commands.epilogs import EPILOGS
from surgery.commands.options import json_option, progress_option
from surgery.commands.runner import emit_json, handle_errors


@click.command("diff", epilog=EPILOGS["diff"])
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@json_option("Print the differences as JSON (stable schema).")
@progress_option
@handle_errors
def diff(a, b, as_json, progress):
    """What changed from A to B: inputs/outputs, layers (config keys), weights (by sha256).
    Static: TensorFlow is not loaded and nothing from the files is executed."""
    from surgery.check.diff import diff as run_diff, format_table

    report = run_diff(a, b)
    if as_json:
        emit_json(report)
    else:
        click.echo(format_table(report))
    if not report["identical"]:
        sys.exit(1)
