"""`lstm-surgery verify ORIGINAL REBUILT`: does REBUILT reproduce ORIGINAL?"""

import sys

import click

from surgery.commands.epilogs import EPILOGS
from surgery.commands.options import custom_objects_from, json_option, load_options, verify_data_option
from surgery.commands.runner import emit_json, handle_errors


@click.command("verify", epilog=EPILOGS["verify"])
@click.argument("original", type=click.Path())
@click.argument("rebuilt", type=click.Path())
@verify_data_option
@load_options
@json_option("Print the report as JSON.")
@handle_errors
def verify(original, rebuilt, data, unsafe, custom_objects_file, as_json, progress):
    """Check that REBUILT reproduces ORIGINAL exactly and its states match the NumPy oracle."""
    from surgery.check.verify import verify_files

    custom = custom_objects_from(custom_objects_file)
    progress("comparing the structures, loading both models and running them")
    report = verify_files(original, rebuilt, unsafe=unsafe, custom_objects=custom, data=data)
    if as_json:
        emit_json(report.as_dict())
    else:
        click.echo(report.summary())
    if not report.ok:
        sys.exit(1)
