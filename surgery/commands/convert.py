"""`lstm-surgery convert MODEL...`: Keras 2 files upgraded to Keras 3 .keras files."""

from pathlib import Path

import click

from surgery.commands.epilogs import EPILOGS
from surgery.commands.options import (custom_objects_from, draw, json_option, load_options, one_plot_only,
                                      plot_option, verify_data_option)
from surgery.commands.runner import describe_error, emit_json, exit_with, handle_errors


@click.command("convert", epilog=EPILOGS["convert"])
@click.argument("models", metavar="MODEL...", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", type=click.Path(),
              help="Output .keras path (default: <stem>.keras3.keras beside MODEL); with several models, a directory.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check the Keras 3 model reproduces the Keras 2 original.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@verify_data_option
@load_options
@json_option()
@plot_option
@handle_errors
def convert(models, output, verify, force, data, unsafe, custom_objects_file, plot_path, as_json, progress):
    """Upgrade each Keras 2 (tf.keras / tf_keras) MODEL file (a path or a glob) to a Keras 3 .keras file."""
    from surgery.commands.many import dispatch, expand, outputs_in
    from surgery.ops.convert import convert_file
    from surgery.io.saving import default_output_path

    models = expand(models)
    custom = custom_objects_from(custom_objects_file)
    outputs = outputs_in(output, models, lambda m: default_output_path(m, "keras3", "keras")) \
        if len(models) > 1 else [output]
    one_plot_only(plot_path, models)

    def one(model, index, emit):
        result = convert_file(model, outputs[index], verify=verify, force=force, unsafe=unsafe,
                              custom_objects=custom, progress=progress, data=data)
        draw([model, result.output], plot_path, [f"before: {Path(model).name}", f"after: {result.output.name}"])
        if as_json:
            emit({"ok": True, "output": str(result.output), "manifest": str(result.manifest),
                  "notes": result.notes, "max_abs_diff_vs_keras2": result.max_abs_diff, "check": result.check,
                  "verification": result.report.as_dict() if result.report is not None else None})
            return
        click.echo(f"wrote {result.output} (Keras 3) and {result.manifest.name}")
        for note in result.notes:
            click.echo(f"note: {note}")
        if not result.verified:
            click.echo("not verified (--no-verify)")
        else:
            click.echo(result.check)

    exit_with(dispatch(models, one, as_json=as_json, describe=describe_error, progress=progress,
                       emit_json=emit_json))
