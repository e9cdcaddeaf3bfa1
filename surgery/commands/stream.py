"""`lstm-surgery stream MODEL`: a step model that runs K timesteps per call and carries its state."""

from pathlib import Path

import click

from surgery.commands.epilogs import EPILOGS
from surgery.commands.options import custom_objects_from, draw, json_option, load_options, plot_option
from surgery.commands.runner import emit_json, handle_errors


@click.command("stream", epilog=EPILOGS["stream"])
@click.argument("model", type=click.Path())
@click.option("-o", "--output", type=click.Path(),
              help="Step model to write: a SavedModel directory (or a .keras file, external state only); "
                   "default: <stem>.step beside MODEL.")
@click.option("--state", type=click.Choice(["external", "internal"]), default="external", show_default=True,
              help="external: states are inputs/outputs the caller carries; internal: variables in the model.")
@click.option("--steps", type=click.IntRange(min=1), default=1, show_default=True, help="Timesteps per call (K).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Fixed batch size (default: any; internal state: 1).")
@click.option("--tflite", "tflite_path", type=click.Path(dir_okay=False), help="Also write a TFLite model here.")
@click.option("--per-step", "per_step", multiple=True, metavar="LAYER",
              help="Treat this layer (layer, class or registered name; e.g. a custom layer) as acting on each "
                   "timestep separately, so streaming keeps it; repeatable. Verification still checks it.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Step through 500 timesteps (K 1, 4, 16; batch 1, 8) against the full-sequence model.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@load_options
@json_option()
@plot_option
@handle_errors
def stream(model, output, state, steps, batch_size, tflite_path, per_step, verify, force, unsafe, custom_objects_file,
           plot_path, as_json, progress):
    """Turn MODEL into a step model that runs K timesteps per call and carries its state."""
    from surgery.ops.stream import stream_file

    custom = custom_objects_from(custom_objects_file)
    result = stream_file(model, output, state=state, steps=steps, batch_size=batch_size, tflite_path=tflite_path,
                         verify=verify, force=force, unsafe=unsafe, custom_objects=custom,
                         progress=progress, per_step=per_step)
    draw([model, result.output], plot_path, [f"before: {Path(model).name}", f"step model: {result.output.name}"])
    if as_json:
        emit_json(result.as_dict())
        return
    click.echo("\n".join(result.lines()))
