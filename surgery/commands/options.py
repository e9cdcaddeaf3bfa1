"""Options every command shares, for cli.py and the command modules alike."""

import click


def progress_option(command):
    """--progress/--no-progress; cli.handle_errors turns it into a surgery.progress.Progress."""
    return click.option("--progress/--no-progress", "progress", default=None,
                        help="Show what the command is doing on stderr: a bar on a terminal, a line "
                             "every 5 s when piped (default: on, off with --json; "
                             "$LSTM_SURGERY_PROGRESS=0/1 sets it).")(command)


def plot_option(command):
    """--plot FILE.svg: a picture of the graph (before/after for a writing command)."""
    return click.option("--plot", "plot_path", type=click.Path(dir_okay=False), metavar="FILE.svg",
                        help="Also draw the model graph as a standalone SVG: recurrent layers and state "
                             "inputs/outputs highlighted; for a writing command, before and after side "
                             "by side.")(command)


def draw(sources: list, plot_path, titles: list[str]) -> None:
    """The one way every command draws: after its work, never instead of it; says where."""
    if plot_path is None:
        return
    from surgery.ops.plot import plot

    click.echo(f"drew {plot(sources, plot_path, titles)}", err=True)
