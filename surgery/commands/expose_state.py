"""`lstm-surgery expose-state MODEL...`: recurrent states as extra outputs (and inputs)."""

from pathlib import Path

import click

from surgery.commands.epilogs import EPILOGS
from surgery.commands.options import (custom_objects_from, draw, json_option, load_options, one_plot_only,
                                      plot_option, verify_data_option, write_options)
from surgery.commands.runner import describe_error, emit_json, exit_with, handle_errors


@click.command("expose-state", epilog=EPILOGS["expose-state"])
@click.argument("models", metavar="MODEL...", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", type=click.Path(),
              help="Output path (default: <stem>.exposed<ext> beside MODEL); with several models, a directory.")
@click.option("--layer", "layers", multiple=True, help="Only this recurrent layer (name, site or path); repeatable.")
@click.option("--inputs", is_flag=True, help="Also add initial-state inputs.")
@click.option("--no-outputs", is_flag=True, help="Do not add state outputs.")
@click.option("--to", "to", type=click.Choice(["keras3"]),
              help="Write a Keras 2 (tf_keras) input as a Keras 3 model (default: keep its family).")
@click.option("--strip", is_flag=True,
              help="Remove pruning/clustering wrappers (tfmot's strip functions) instead of keeping them.")
@verify_data_option
@write_options
@load_options
@plot_option
@json_option()
@handle_errors
def expose_state(models, output, layers, inputs, no_outputs, to, strip, data, fmt, verify, force, unsafe,
                 custom_objects_file, plot_path, as_json, progress):
    """Make recurrent states of each MODEL (a path or a glob) extra outputs (and, with --inputs,
    extra inputs)."""
    from surgery.commands.many import dispatch, expand, outputs_in
    from surgery.ops.expose import expose_state_file
    from surgery.io.saving import default_output_path

    models = expand(models)
    custom = custom_objects_from(custom_objects_file)
    outputs = outputs_in(output, models, lambda m: default_output_path(m, "exposed", fmt)) \
        if len(models) > 1 else [output]
    one_plot_only(plot_path, models)

    def one(model, index, emit):
        result = expose_state_file(
            model, outputs[index], layers=layers or None, outputs=not no_outputs, inputs=inputs, fmt=fmt,
            verify=verify, force=force, unsafe=unsafe, custom_objects=custom, progress=progress, to=to,
            strip=strip, data=data,
        )
        report_write(result, as_json, emit)
        draw([model, result.output], plot_path, [f"before: {Path(model).name}", f"after: {result.output.name}"])

    exit_with(dispatch(models, one, as_json=as_json, describe=describe_error, progress=progress,
                       emit_json=emit_json))


def report_write(result, as_json: bool, emit=None) -> None:
    """What an exposed model's writing reports: JSON (one document), or lines for a person."""
    plan = result.plan
    if as_json:
        (emit or emit_json)({
            "ok": True,
            "output": str(result.output),
            "manifest": str(result.manifest),
            "format": result.format,
            "weights_copied_byte_for_byte": result.fast_path,
            "already_exposed": getattr(result, "already_exposed", False),
            "reused_state_io": ({"outputs": list(result.reused.outputs), "inputs": list(result.reused.inputs)}
                                if getattr(result, "reused", None) else None),
            "state_outputs": [s.as_dict() for s in plan.outputs],
            "state_inputs": [s.as_dict() for s in plan.inputs],
            "skipped": [{"site": s, "reason": r} for s, r in plan.skipped],
            "verification": result.report.as_dict() if result.report is not None else None,
        })
        return
    click.echo(f"wrote {result.output} ({result.format}) and {result.manifest.name}")
    if getattr(result, "reused", None):
        click.echo(("already exposed: " if result.already_exposed else "reused: ")
                   + f"the input had {result.reused.describe()}; kept under the same names")
    if plan.outputs:
        click.echo(f"state outputs (after the {plan.original_outputs} original): "
                   + ", ".join(f"{s.name} {_shape(s.shape)}" for s in plan.outputs))
    if plan.inputs:
        click.echo(f"state inputs (after the {plan.original_inputs} original): "
                   + ", ".join(f"{s.name} {_shape(s.shape)}" for s in plan.inputs))
    for site, reason in plan.skipped:
        click.echo(f"note: no state input for {site}: {reason}")
    if result.report is not None:
        click.echo(result.report.summary())
    else:
        click.echo("not verified (--no-verify)")


def _shape(shape) -> str:
    return "(None, " + ", ".join(str(d) for d in shape) + ")"
