"""`lstm-surgery splice A B`: A's trained recurrent weights or final state moved into B."""

from pathlib import Path

import click

from surgery.commands.epilogs import EPILOGS
from surgery.commands.options import (custom_objects_from, draw, json_option, load_options, plot_option,
                                      write_options)
from surgery.commands.runner import emit_json, handle_errors


@click.command("splice", epilog=EPILOGS["splice"])
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("-o", "--output", type=click.Path(), help="Output path (default: <B stem>.spliced<ext> beside B).")
@click.option("--mode", type=click.Choice(["chain", "weights", "prime"]), default="chain", show_default=True,
              help="chain: A's final state starts B (one composite model); weights: copy A's recurrent "
                   "weights into B; prime: bake A's final state on --data into B as its initial state.")
@click.option("--map", "mapping", multiple=True, metavar="SRC=DST",
              help="Which layer/site of A goes to which of B; repeatable (default: by name, then order).")
@click.option("--data", type=click.Path(dir_okay=False),
              help="prime: .npy/.npz input to run A on (one sequence); chain/weights: inputs to verify on.")
@click.option("--store", type=click.Choice(["constant", "variable"]), default="constant", show_default=True,
              help="prime: the primed state as a frozen constant or a trainable variable.")
@click.option("--keep-override", is_flag=True,
              help="prime: keep state inputs <site>_<role>_in and a <site>_use_state_in flag to pass a state.")
@click.option("--dry-run", is_flag=True, help="Print the plan and write nothing (TensorFlow is not loaded).")
@write_options
@load_options
@json_option("Print the plan and the result as one JSON document.")
@plot_option
@handle_errors
def splice(a, b, output, mode, mapping, data, store, keep_override, dry_run, fmt, verify, force, unsafe,
           custom_objects_file, plot_path, as_json, progress):
    """Move A's trained recurrent weights or final state into B."""
    from surgery.ops.splice import plan as splice_plan, splice as run_splice

    # The plan trusts the custom classes by name (loading the file imports Keras, so a
    # dry run only does so when --custom-objects is given).
    custom = custom_objects_from(custom_objects_file)
    the_plan = splice_plan(a, b, mode, list(mapping), data=data, unsafe=unsafe, custom_objects=custom)
    if not as_json:
        click.echo("\n".join(the_plan.lines()))
    if dry_run:
        if as_json:
            emit_json({"ok": True, "dry_run": True, "plan": the_plan.as_dict()})
        else:
            click.echo("dry run: nothing written")
        return
    result = run_splice(a, b, mode, list(mapping), output=output, data=data, fmt=fmt, store=store,
                        keep_override=keep_override, verify=verify, force=force, unsafe=unsafe,
                        custom_objects=custom, progress=progress)
    draw([b, a, result.output], plot_path, [f"B: {Path(b).name}", f"A: {Path(a).name}", f"after: {result.output.name}"])
    if as_json:
        emit_json(result.as_dict())
        return
    click.echo(f"wrote {result.output} ({result.format}) and {result.manifest.name}")
    click.echo(result.summary)
