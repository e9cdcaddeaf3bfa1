"""`lstm-surgery split-seq2seq MODEL`: an encoder and a one-step decoder from a trained seq2seq model."""

from pathlib import Path

import click

from surgery.commands.epilogs import EPILOGS
from surgery.commands.options import custom_objects_from, draw, json_option, load_options, plot_option
from surgery.commands.runner import emit_json, handle_errors


@click.command("split-seq2seq", epilog=EPILOGS["split-seq2seq"])
@click.argument("model", type=click.Path())
@click.option("-o", "--output", "outdir", type=click.Path(file_okay=False),
              help="Output directory (default: <stem>.split beside MODEL); gets encoder.keras and decoder_step.keras.")
@click.option("--force", is_flag=True, help="Overwrite existing encoder/decoder files in the output directory.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Reload what was written and check it step by step against teacher forcing.")
@load_options
@json_option()
@plot_option
@handle_errors
def split_seq2seq(model, outdir, force, verify, unsafe, custom_objects_file, plot_path, as_json, progress):
    """Split a trained encoder-decoder MODEL into an encoder and a one-step decoder model."""
    from surgery.ops.seq2seq import format_result, result_dict, split_seq2seq_file

    custom = custom_objects_from(custom_objects_file)
    result = split_seq2seq_file(model, outdir, force=force, verify=verify, unsafe=unsafe,
                                custom_objects=custom, progress=progress)
    draw([model, result.encoder, result.decoder], plot_path,
         [f"before: {Path(model).name}", f"encoder: {result.encoder.name}", f"decoder: {result.decoder.name}"])
    if as_json:
        emit_json(result_dict(result))
    else:
        click.echo(format_result(result))
