"""The `lstm-surgery` command line: parse, call the library, print, map errors to exit codes.

Exit codes: 0 ok, 1 verification failed, 2 usage error or unreadable input,
3 unsafe content refused, 4 model not supported, 5 internal error (please report).

Run as a program (`lstm-surgery ...`, `python cli.py ...`), each command works in a
supervised child process with limits on wall time, memory and open files
(surgery/io/sandbox.py); `main` called in-process (tests, click's CliRunner) runs in-process.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from surgery.commands.epilogs import EPILOGS
from surgery.commands.options import draw, plot_option, progress_option
from surgery.errors import SurgeryError, UsageError
from surgery.progress import Progress, resolve_mode as resolve_progress

EXIT_INTERNAL = 5
SANDBOX_ENV = "LSTM_SURGERY_SANDBOX"  # "0": run commands in-process, without limits
_supervise = False


def _emit_json(payload) -> None:
    click.echo(json.dumps(payload, indent=2, default=str))


def handle_errors(command):
    """Turn library exceptions into a one-line message and the documented exit code; as a
    program, run the command in a supervised child process under the resource limits."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from surgery.io import sandbox

        as_json = kwargs.get("as_json", False)
        limit_options = {name: kwargs.pop(name, None) for name in ("timeout", "max_memory", "max_open_files")}
        progress_flag = kwargs.pop("progress", None)

        def work():
            try:
                # Made in the worker (the forked child), whose stderr is the terminal's or the pipe's.
                with Progress(resolve_progress(progress_flag, as_json)) as progress:
                    return command(*args, progress=progress, **kwargs)
            except BaseException as error:  # noqa: BLE001 - every end maps to one line
                _fail_for(error, as_json)

        try:
            limits = sandbox.resolve_limits(**limit_options)
            if _supervise and sandbox.supported():
                code = sandbox.run_supervised(work, limits)
                if code:
                    sys.exit(code)
                return None
            return work()
        except SystemExit:
            raise
        except BaseException as error:  # noqa: BLE001
            _fail_for(error, as_json)

    return wrapper


def _fail_for(error: BaseException, as_json: bool):
    from surgery.io.sandbox import Terminated

    if isinstance(error, SystemExit):
        raise error
    if isinstance(error, Terminated) and error.quiet:
        sys.exit(128 + error.signum)
    _fail(*describe_error(error), as_json)


def describe_error(error: BaseException) -> tuple[str, int, str]:
    """(one-line message, exit code, kind) for any error a command may end with."""
    from surgery.io.sandbox import Terminated

    if isinstance(error, SurgeryError):
        return str(error), error.exit_code, type(error).__name__
    if isinstance(error, KeyboardInterrupt):
        return "interrupted", 130, "KeyboardInterrupt"
    if isinstance(error, Terminated):
        return f"terminated by {error}", 128 + error.signum, "Terminated"
    if isinstance(error, ImportError) and "failed to map segment" in str(error):
        return (f"not enough memory under the limit to load TensorFlow ({error}); raise --max-memory",
                2, "ResourceLimitError")
    if isinstance(error, MemoryError):
        return "ran out of memory (raise the limit with --max-memory if the machine has more)", 2, "ResourceLimitError"
    # Never a traceback on the user's terminal: a bug in the tool, said as such.
    message = " ".join(f"{type(error).__name__}: {error}".split())[:500]
    return f"internal error: {message}; this is a bug in lstm-surgery, please report it", EXIT_INTERNAL, "InternalError"


def _fail(message: str, code: int, kind: str, as_json: bool):
    if as_json:
        _emit_json({"ok": False, "error": message, "error_type": kind, "exit_code": code})
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def limit_options(command):
    """Resource limits of the supervised child process (see surgery/io/sandbox.py), and --progress
    (every command has both)."""
    command = progress_option(command)
    command = click.option("--max-open-files", type=click.IntRange(min=0), default=None,
                           help="Open-file limit of the worker (default 4096 or "
                                "$LSTM_SURGERY_MAX_OPEN_FILES; 0: none).")(command)
    command = click.option("--max-memory", metavar="SIZE", default=None,
                           help="Memory (address-space) limit of the worker, e.g. 8G (default: the "
                                "machine's physical memory or $LSTM_SURGERY_MAX_MEMORY; 0: none).")(command)
    command = click.option("--timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
                           help="Wall-time limit of one command (default 3600 or "
                                "$LSTM_SURGERY_TIMEOUT; 0: none).")(command)
    return command


def load_options(command):
    """Options shared by every command that loads a model into Keras."""
    command = limit_options(command)
    command = click.option("--custom-objects", "custom_objects_file", type=click.Path(dir_okay=False),
                           help="Trusted Python file defining/registering custom layers.")(command)
    command = click.option("--unsafe", is_flag=True,
                           help="Allow Lambda layers and code from outside Keras (runs code from the file!).")(command)
    return command


def write_options(command):
    command = click.option("--force", is_flag=True, help="Overwrite an existing output.")(command)
    command = click.option("--verify/--no-verify", default=True, show_default=True,
                           help="Reload what was written and check it numerically.")(command)
    command = click.option("--format", "fmt", type=click.Choice(["keras", "h5", "savedmodel"]),
                           help="Output format (default: from the output's extension, else the input's).")(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOGS["main"])
@click.version_option(package_name="lstm-surgery")
def main():
    """Expose, inject, stream and splice the state of recurrent layers in saved Keras models."""


@main.command(epilog=EPILOGS["inspect"])
@click.argument("models", metavar="MODEL...", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True,
              help="Print the report as JSON (stable schema); several models: one JSON line each.")
@plot_option
@limit_options
@handle_errors
def inspect(models, as_json, plot_path, progress):
    """List every recurrent layer of each MODEL (a path or a glob; static: nothing is executed,
    TensorFlow is not loaded)."""
    from surgery.commands.many import dispatch, expand
    from surgery.ops.inspect import format_table, inspect as run_inspect

    models = expand(models)
    if plot_path and len(models) > 1:
        raise UsageError("--plot draws one model; give one MODEL")

    def one(model, _index, emit):
        progress(f"reading {model}")
        report = run_inspect(model)
        if as_json:
            emit(report)
        else:
            click.echo(format_table(report) + ("\n" if len(models) > 1 else ""))
        draw([model], plot_path, [Path(model).name])
        return 0 if report["supported"] else 4  # the documented code for a model the tool cannot operate on

    _exit_with(dispatch(models, one, as_json=as_json, describe=describe_error, progress=progress,
                        emit_json=_emit_json))


def _exit_with(code: int) -> None:
    if code:
        sys.exit(code)


@main.command("expose-state", epilog=EPILOGS["expose-state"])
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
@click.option("--data", type=click.Path(dir_okay=False),
              help="Verify on these inputs: .npy, or .npz with arrays named by model input (or in input order).")
@write_options
@load_options
@plot_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def expose_state(models, output, layers, inputs, no_outputs, to, strip, data, fmt, verify, force, unsafe,
                 custom_objects_file, plot_path, as_json, progress):
    """Make recurrent states of each MODEL (a path or a glob) extra outputs (and, with --inputs,
    extra inputs)."""
    from surgery.commands.many import dispatch, expand, outputs_in
    from surgery.ops.expose import expose_state_file
    from surgery.io.loading import load_custom_objects
    from surgery.io.saving import default_output_path

    models = expand(models)
    custom = load_custom_objects(custom_objects_file) if custom_objects_file else None
    outputs = outputs_in(output, models, lambda m: default_output_path(m, "exposed", fmt)) \
        if len(models) > 1 else [output]
    if plot_path and len(models) > 1:
        raise UsageError("--plot draws one model; give one MODEL")

    def one(model, index, emit):
        result = expose_state_file(
            model, outputs[index], layers=layers or None, outputs=not no_outputs, inputs=inputs, fmt=fmt,
            verify=verify, force=force, unsafe=unsafe, custom_objects=custom, progress=progress, to=to,
            strip=strip, data=data,
        )
        _report_write(result, as_json, emit)
        draw([model, result.output], plot_path, [f"before: {Path(model).name}", f"after: {result.output.name}"])

    _exit_with(dispatch(models, one, as_json=as_json, describe=describe_error, progress=progress,
                        emit_json=_emit_json))


def _report_write(result, as_json: bool, emit=None) -> None:
    plan = result.plan
    if as_json:
        (emit or _emit_json)({
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


@main.command(epilog=EPILOGS["verify"])
@click.argument("original", type=click.Path())
@click.argument("rebuilt", type=click.Path())
@click.option("--data", type=click.Path(dir_okay=False),
              help="Verify on these inputs: .npy, or .npz with arrays named by model input (or in input order).")
@load_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@handle_errors
def verify(original, rebuilt, data, unsafe, custom_objects_file, as_json, progress):
    """Check that REBUILT reproduces ORIGINAL exactly and its states match the NumPy oracle."""
    from surgery.io.loading import load_custom_objects
    from surgery.check.verify import verify_files

    custom = load_custom_objects(custom_objects_file) if custom_objects_file else None
    progress("comparing the structures, loading both models and running them")
    report = verify_files(original, rebuilt, unsafe=unsafe, custom_objects=custom, data=data)
    if as_json:
        _emit_json(report.as_dict())
    else:
        click.echo(report.summary())
    if not report.ok:
        sys.exit(1)


@main.command("split-seq2seq", epilog=EPILOGS["split-seq2seq"])
@click.argument("model", type=click.Path())
@click.option("-o", "--output", "outdir", type=click.Path(file_okay=False),
              help="Output directory (default: <stem>.split beside MODEL); gets encoder.keras and decoder_step.keras.")
@click.option("--force", is_flag=True, help="Overwrite existing encoder/decoder files in the output directory.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Reload what was written and check it step by step against teacher forcing.")
@load_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@plot_option
@handle_errors
def split_seq2seq(model, outdir, force, verify, unsafe, custom_objects_file, plot_path, as_json, progress):
    """Split a trained encoder-decoder MODEL into an encoder and a one-step decoder model."""
    from surgery.io.loading import load_custom_objects
    from surgery.ops.seq2seq import format_result, result_dict, split_seq2seq_file

    custom = load_custom_objects(custom_objects_file) if custom_objects_file else None
    result = split_seq2seq_file(model, outdir, force=force, verify=verify, unsafe=unsafe,
                                custom_objects=custom, progress=progress)
    draw([model, result.encoder, result.decoder], plot_path,
         [f"before: {Path(model).name}", f"encoder: {result.encoder.name}", f"decoder: {result.decoder.name}"])
    if as_json:
        _emit_json(result_dict(result))
    else:
        click.echo(format_result(result))


@main.command(epilog=EPILOGS["convert"])
@click.argument("models", metavar="MODEL...", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", type=click.Path(),
              help="Output .keras path (default: <stem>.keras3.keras beside MODEL); with several models, a directory.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check the Keras 3 model reproduces the Keras 2 original.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--data", type=click.Path(dir_okay=False),
              help="Verify on these inputs: .npy, or .npz with arrays named by model input (or in input order).")
@load_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@plot_option
@handle_errors
def convert(models, output, verify, force, data, unsafe, custom_objects_file, plot_path, as_json, progress):
    """Upgrade each Keras 2 (tf.keras / tf_keras) MODEL file (a path or a glob) to a Keras 3 .keras file."""
    from surgery.commands.many import dispatch, expand, outputs_in
    from surgery.ops.convert import convert_file
    from surgery.io.loading import load_custom_objects
    from surgery.io.saving import default_output_path

    models = expand(models)
    custom = load_custom_objects(custom_objects_file) if custom_objects_file else None
    outputs = outputs_in(output, models, lambda m: default_output_path(m, "keras3", "keras")) \
        if len(models) > 1 else [output]
    if plot_path and len(models) > 1:
        raise UsageError("--plot draws one model; give one MODEL")

    def one(model, index, emit):
        result = convert_file(model, outputs[index], verify=verify, force=force, unsafe=unsafe,
                              custom_objects=custom, progress=progress, data=data)
        draw([model, result.output], plot_path, [f"before: {Path(model).name}", f"after: {result.output.name}"])
        if as_json:
            emit({"ok": True, "output": str(result.output), "manifest": str(result.manifest),
                  "notes": result.notes, "max_abs_diff_vs_keras2": result.max_abs_diff, "check": result.check})
            return
        click.echo(f"wrote {result.output} (Keras 3) and {result.manifest.name}")
        for note in result.notes:
            click.echo(f"note: {note}")
        if not result.verified:
            click.echo("not verified (--no-verify)")
        else:
            click.echo(f"verified: the written file reproduces the translation exactly; {result.check}")

    _exit_with(dispatch(models, one, as_json=as_json, describe=describe_error, progress=progress,
                        emit_json=_emit_json))


@main.command(epilog=EPILOGS["splice"])
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
@click.option("--json", "as_json", is_flag=True, help="Print the plan and the result as one JSON document.")
@plot_option
@handle_errors
def splice(a, b, output, mode, mapping, data, store, keep_override, dry_run, fmt, verify, force, unsafe,
           custom_objects_file, plot_path, as_json, progress):
    """Move A's trained recurrent weights or final state into B."""
    from surgery.io.loading import load_custom_objects
    from surgery.ops.splice import plan as splice_plan, splice as run_splice

    # The plan trusts the custom classes by name (loading the file imports Keras, so a
    # dry run only does so when --custom-objects is given).
    custom = load_custom_objects(custom_objects_file) if custom_objects_file else None
    the_plan = splice_plan(a, b, mode, list(mapping), data=data, unsafe=unsafe, custom_objects=custom)
    if not as_json:
        click.echo("\n".join(the_plan.lines()))
    if dry_run:
        if as_json:
            _emit_json({"ok": True, "dry_run": True, "plan": the_plan.as_dict()})
        else:
            click.echo("dry run: nothing written")
        return
    result = run_splice(a, b, mode, list(mapping), output=output, data=data, fmt=fmt, store=store,
                        keep_override=keep_override, verify=verify, force=force, unsafe=unsafe,
                        custom_objects=custom, progress=progress)
    draw([b, a, result.output], plot_path, [f"B: {Path(b).name}", f"A: {Path(a).name}", f"after: {result.output.name}"])
    if as_json:
        _emit_json(result.as_dict())
        return
    click.echo(f"wrote {result.output} ({result.format}) and {result.manifest.name}")
    click.echo(result.summary)


@main.command(epilog=EPILOGS["stream"])
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
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@plot_option
@handle_errors
def stream(model, output, state, steps, batch_size, tflite_path, per_step, verify, force, unsafe, custom_objects_file,
           plot_path, as_json, progress):
    """Turn MODEL into a step model that runs K timesteps per call and carries its state."""
    from surgery.io.loading import load_custom_objects
    from surgery.ops.stream import stream_file

    custom = load_custom_objects(custom_objects_file) if custom_objects_file else None
    result = stream_file(model, output, state=state, steps=steps, batch_size=batch_size, tflite_path=tflite_path,
                         verify=verify, force=force, unsafe=unsafe, custom_objects=custom,
                         progress=progress, per_step=per_step)
    draw([model, result.output], plot_path, [f"before: {Path(model).name}", f"step model: {result.output.name}"])
    if as_json:
        _emit_json(result.as_dict())
        return
    click.echo("\n".join(result.lines()))


@main.command("extract-states", epilog=EPILOGS["extract-states"])
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
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def extract_states(model, data, output, layers, trajectory, batch_size, fmt, runner, beam_options, force, unsafe,
                   custom_objects_file, as_json, progress):
    """Run MODEL over a dataset and write its recurrent states (final, or every step)."""
    from surgery.ops.extract import extract_states as run_extract
    from surgery.io.loading import load_custom_objects

    custom = load_custom_objects(custom_objects_file) if custom_objects_file else None
    if output is None:  # the rule of every writing command: a default name beside the input
        from surgery.io.saving import default_output_path

        output = f"{default_output_path(model, 'states', 'savedmodel')}.{fmt or 'npz'}"
    result = run_extract(model, data, output, layers=layers or None, trajectory=trajectory, batch_size=batch_size,
                         fmt=fmt, force=force, unsafe=unsafe, custom_objects=custom, runner=runner,
                         beam_options=beam_options, progress=progress.counter("extracting", "sequences"))
    if as_json:
        _emit_json(result.as_dict())
        return
    click.echo("\n".join(result.lines()))


from surgery.commands import register as _register_commands  # noqa: E402 - commands in their own modules

_register_commands(main, handle_errors, _emit_json)


def entry():
    """The program entry point (console script and `python cli.py`): commands run
    supervised, and SIGTERM/SIGHUP clean up like Ctrl-C."""
    global _supervise
    _supervise = os.environ.get(SANDBOX_ENV, "1") != "0"
    if not _supervise:
        from surgery.io.sandbox import install_termination_handlers

        install_termination_handlers()
    main()


if __name__ == "__main__":
    entry()
