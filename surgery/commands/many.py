"""Several models (or globs) per command: one result per model, exit status the worst."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Callable, Iterable

import click

from surgery.errors import UsageError


def expand(patterns: Iterable[str]) -> list[str]:
    """Paths as given; a pattern that is not a path is a glob (quoted so the shell left it),
    sorted. A glob matching nothing is refused: a typo must not pass as 'nothing to do'."""
    models: list[str] = []
    for pattern in patterns:
        if os.path.lexists(pattern) or not glob.has_magic(pattern):
            models.append(pattern)
            continue
        matches = sorted(glob.glob(pattern, recursive=True))
        # A SavedModel directory's inner files are not models of their own.
        matches = [m for m in matches if not Path(m).name.endswith(".manifest.json")]
        if not matches:
            raise UsageError(f"no file matches {pattern!r}")
        models.extend(matches)
    if not models:
        raise UsageError("no model given")
    return list(dict.fromkeys(models))  # a model named twice is done once


def outputs_in(directory: str | None, models: list[str], name_for: Callable[[str], Path]) -> list:
    """-o with several models is a directory: each output keeps its default name inside it.
    Without -o, each is written beside its model (None: the command's default)."""
    if directory is None:
        return [None] * len(models)
    targets = [Path(directory) / name_for(model).name for model in models]
    seen: dict[Path, str] = {}
    for model, target in zip(models, targets):
        if target in seen:
            raise UsageError(f"{seen[target]!r} and {model!r} would both be written to {str(target)!r}")
        seen[target] = model
    return targets


def run_each(models: list[str], work: Callable[[str, object], int | None], *, as_json: bool,
             describe: Callable[[BaseException], tuple[str, int, str]], progress) -> int:
    """work(model, output_index) for every model; an error ends that model only (one line on
    stderr, one JSON line with --json) and the others go on. Returns the worst (highest) exit status."""
    worst = 0
    for index, model in enumerate(models):
        progress(f"{model} ({index + 1}/{len(models)})")
        try:
            code = work(model, index) or 0
        except (KeyboardInterrupt, SystemExit, BrokenPipeError):  # the whole command ends
            raise
        except Exception as error:  # noqa: BLE001 - each model's failure is reported, then the next
            message, code, kind = describe(error)
            click.echo(f"error: {message}" if model in message else f"error: {model}: {message}", err=True)
            if as_json:
                click.echo(json.dumps({"input": model, "ok": False, "error": message, "error_type": kind,
                                       "exit_code": code}, default=str))
        worst = max(worst, code)
    return worst


def emit_line(model: str, payload: dict) -> None:
    """One JSON document per model, on one line, naming its model ("input")."""
    click.echo(json.dumps({"input": model, **payload}, default=str))


def dispatch(models: list[str], work: Callable[[str, int, Callable[[dict], None]], int | None], *,
             as_json: bool, describe, progress, emit_json: Callable[[dict], None]) -> int:
    """One model: work as the command always did (its error is the command's, its JSON a
    document). Several: run_each, one JSON line per model. work(model, index, emit)."""
    if len(models) == 1:
        return work(models[0], 0, emit_json) or 0
    return run_each(models, lambda model, index: work(model, index, lambda payload: emit_line(model, payload)),
                    as_json=as_json, describe=describe, progress=progress)
