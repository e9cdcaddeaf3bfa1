"""Option groups the commands share (as Polygraphy's subtools share argument groups).

Each is a decorator adding its options to a command, in the order --help lists them;
runner.handle_errors consumes the limits and --progress."""

import click


def progress_option(command):
    """--progress/--no-progress; runner.handle_errors turns it into a surgery.progress.Progress."""
    return click.option("--progress/--no-progress", "progress", default=None,
                        help="Show what the command is doing on stderr: a bar on a terminal, a line "
                             "every 5 s when piped (default: on, off with --json; "
                             "$LSTM_SURGERY_PROGRESS=0/1 sets it).")(command)


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
    """Options shared by every command that loads a model into Keras (and the limits)."""
    command = limit_options(command)
    command = click.option("--custom-objects", "custom_objects_file", type=click.Path(dir_okay=False),
                           help="Trusted Python file defining/registering custom layers.")(command)
    command = click.option("--unsafe", is_flag=True,
                           help="Allow Lambda layers and code from outside Keras (runs code from the file!).")(command)
    return command


def write_options(command):
    """Options of a command that writes one model file."""
    command = click.option("--force", is_flag=True, help="Overwrite an existing output.")(command)
    command = click.option("--verify/--no-verify", default=True, show_default=True,
                           help="Reload what was written and check it numerically.")(command)
    command = click.option("--format", "fmt", type=click.Choice(["keras", "h5", "savedmodel"]),
                           help="Output format (default: from the output's extension, else the input's).")(command)
    return command


def verify_data_option(command):
    """--data: the user's inputs to verify on (else random ones)."""
    return click.option("--data", type=click.Path(dir_okay=False),
                        help="Verify on these inputs: .npy, or .npz with arrays named by model input "
                             "(or in input order).")(command)


def json_option(help: str = "Print the result as JSON."):  # noqa: A002 - click's own name for it
    """--json: the command prints JSON only (errors too, as {"ok": false, ...})."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def plot_option(command):
    """--plot FILE.svg: a picture of the graph (before/after for a writing command)."""
    return click.option("--plot", "plot_path", type=click.Path(dir_okay=False), metavar="FILE.svg",
                        help="Also draw the model graph as a standalone SVG: recurrent layers and state "
                             "inputs/outputs highlighted; for a writing command, before and after side "
                             "by side.")(command)


def custom_objects_from(custom_objects_file):
    """The classes a --custom-objects file registers, or None without one (loading the file
    imports Keras: called in a command's body, never at import)."""
    if not custom_objects_file:
        return None
    from surgery.io.loading import load_custom_objects

    return load_custom_objects(custom_objects_file)


def one_plot_only(plot_path, models: list) -> None:
    """--plot draws one model: refused with several."""
    if plot_path and len(models) > 1:
        from surgery.errors import UsageError

        raise UsageError("--plot draws one model; give one MODEL")


def draw(sources: list, plot_path, titles: list[str]) -> None:
    """The one way every command draws: after its work, never instead of it; says where."""
    if plot_path is None:
        return
    from surgery.ops.plot import plot

    click.echo(f"drew {plot(sources, plot_path, titles)}", err=True)
