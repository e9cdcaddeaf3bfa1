"""`lstm-surgery inspect MODEL...`: the recurrent layers of each model (static)."""

from pathlib import Path

import click

from surgery.commands.epilogs import EPILOGS
from surgery.commands.options import draw, json_option, limit_options, one_plot_only, plot_option
from surgery.commands.runner import describe_error, emit_json, exit_with, handle_errors


@click.command("inspect", epilog=EPILOGS["inspect"])
@click.argument("models", metavar="MODEL...", nargs=-1, required=True, type=click.Path())
@json_option("Print the report as JSON (stable schema); several models: one JSON line each.")
@plot_option
@limit_options
@handle_errors
def inspect(models, as_json, plot_path, progress):
    """List every recurrent layer of each MODEL (a path or a glob; static: nothing is executed,
    TensorFlow is not loaded)."""
    from surgery.commands.many import dispatch, expand
    from surgery.ops.inspect import format_table, inspect as run_inspect

    models = expand(models)
    one_plot_only(plot_path, models)

    def one(model, _index, emit):
        progress(f"reading {model}")
        report = run_inspect(model)
        if as_json:
            emit(report)
        else:
            click.echo(format_table(report) + ("\n" if len(models) > 1 else ""))
        draw([model], plot_path, [Path(model).name])
        return 0 if report["supported"] else 4  # the documented code for a model the tool cannot operate on

    exit_with(dispatch(models, one, as_json=as_json, describe=describe_error, progress=progress,
                       emit_json=emit_json))
