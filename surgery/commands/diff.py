"""`lstm-surgery diff A B`: static comparison of two model files."""

import sys

import click

from surgery.commands.options import progress_option

EPILOG = """\b
Examples:
  lstm-surgery diff model.keras model.exposed.keras
  lstm-surgery diff a.h5 b.h5 --json | jq .weights.changed
Exit status: 0 identical, 1 different (like diff(1)), 2 unreadable input."""


def register(main, handle_errors, emit_json) -> None:
    @main.command(epilog=EPILOG)
    @click.argument("a", type=click.Path())
    @click.argument("b", type=click.Path())
    @click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON (stable schema).")
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
