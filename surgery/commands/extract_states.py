"""`lstm-surgery extract-states MODEL --data ...`: recurrent states over a dataset."""

import click

from surgery.commands.epilogs import EPILOGS
from surgery.commands.options import custom_objects_from, json_option, load_options
from surgery.commands.runner import emit_json, handle_errors


@click.command("extract-states", epilog=EPILOGS["extract-states"])
@click.argument("model", type=click.Path())
@click.option("--data", required=True, help="Sequences: .npy, .npz, .tfrecord, .parquet, or a folder or glob of them.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Output .npz or .parquet (default: <stem>.states.npz beside MODEL, .parquet with --format parquet).")
@click.option("--layer", "layers", multiple=True, help="Only this recurrent layer (name, site or path); repeatable.")
@click.option("--trajectory", is_flag=True, help="Every state at every timestep (and the mask), not only the final one.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["npz", "parquet"]), help="Default: from the output's extension.")
@click.option("--runner", type=click.Choice(["local", "beam"]), default="local", show_default=True)
@click.option("--beam-option", "beam_options", multiple=True, metavar="OPT",
              help="An Apache Beam pipeline option, e.g. --beam-option=--runner=FlinkRunner; repeatable.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@load_options
@json_option()
@handle_errors
def extract_states(model, data, output, layers, trajectory, batch_size, fmt, runner, beam_options, force, unsafe,
                   custom_objects_file, as_json, progress):
    """Run MODEL over a dataset and write its recurrent states (final, or every step)."""
    from surgery.ops.extract import extract_states as run_extract

    custom = custom_objects_from(custom_objects_file)
    if output is None:  # the rule of every writing command: a default name beside the input
        from surgery.io.saving import default_output_path

        output = f"{default_output_path(model, 'states', 'savedmodel')}.{fmt or 'npz'}"
    result = run_extract(model, data, output, layers=layers or None, trajectory=trajectory, batch_size=batch_size,
                         fmt=fmt, force=force, unsafe=unsafe, custom_objects=custom, runner=runner,
                         beam_options=beam_options, progress=progress.counter("extracting", "sequences"))
    if as_json:
        emit_json(result.as_dict())
        return
    click.echo("\n".join(result.lines()))
