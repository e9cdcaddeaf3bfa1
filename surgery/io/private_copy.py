"""Private copies of model files: Keras only ever loads exactly the bytes that were scanned.

The static scan and the Keras loader would otherwise open the user's path twice: a file
swapped or rewritten in between (or a polyglot read by another reader) would reach Keras
unscanned. So a load first copies the file (or the SavedModel tree) into a fresh directory
only this user can enter, reads and scans THAT copy, names it with the extension of the
format its content was read as, and gives Keras that name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from surgery.errors import SurgeryError, UnreadableModelError, UnsafeContentError
from surgery.io.run_env import RUN_DIR_ENV  # a supervising CLI's per-run scratch space, if any

FORMAT_EXTENSIONS = {"keras": ".keras", "h5": ".h5", "savedmodel": ""}
_COPY_CHUNK = 1 << 22


@contextlib.contextmanager
def private_directory() -> Iterator[Path]:
    """A fresh mode-0700 directory, removed with everything in it on exit."""
    parent = os.environ.get(RUN_DIR_ENV) or None
    if parent is not None and not os.path.isdir(parent):
        parent = None
    directory = Path(tempfile.mkdtemp(prefix="lstm-surgery-load-", dir=parent))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def copy_into(source: str | os.PathLike, directory: Path) -> Path:
    """Copy a model file or SavedModel directory to `directory/model` (no extension yet)."""
    source_text = os.fspath(source)
    target = directory / "model"
    try:
        status = os.stat(source_text)
    except OSError as error:
        raise UnreadableModelError(f"{source_text}: cannot access it ({error.strerror or error})") from None
    if stat.S_ISDIR(status.st_mode):
        _copy_tree(source_text, target)
    elif stat.S_ISREG(status.st_mode):
        _copy_file(source_text, target)
    else:
        raise UnreadableModelError(f"{source_text}: not a regular file or directory")
    return target


def name_for_format(copy: Path, fmt: str) -> Path:
    """Rename the copy so Keras picks the reader of the format its content was read as."""
    named = copy.with_name("model" + FORMAT_EXTENSIONS[fmt])
    if named != copy:
        os.replace(copy, named)
    return named


def rename_errors(error: SurgeryError, copy: Path, source: str | os.PathLike) -> SurgeryError:
    """The same error, naming the user's path instead of the private copy's."""
    message = str(error)
    for name in sorted({str(copy), str(copy.parent / "model.keras"), str(copy.parent / "model.h5")},
                       key=len, reverse=True):
        message = message.replace(name, os.fspath(source))
    return type(error)(message)


def _copy_file(source: str, target: Path) -> None:
    # O_NOFOLLOW is not used: the user named this path; links INSIDE a SavedModel are refused.
    with open(source, "rb") as reader:
        if not stat.S_ISREG(os.fstat(reader.fileno()).st_mode):
            raise UnreadableModelError(f"{source}: not a regular file")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb") as writer:
            _copy_stream(reader, writer)


def _copy_stream(reader, writer) -> None:
    source_fd, target_fd = reader.fileno(), writer.fileno()
    try:
        while os.copy_file_range(source_fd, target_fd, _COPY_CHUNK * 64):
            pass
        return
    except (AttributeError, OSError):
        pass  # no copy_file_range here, or not across these file systems
    reader.seek(0)
    writer.seek(0)
    writer.truncate()
    shutil.copyfileobj(reader, writer, _COPY_CHUNK)


def _copy_tree(source: str, target: Path) -> None:
    """Copy regular files and directories; any link or special file is refused, so the
    copy cannot pull in a file from outside the SavedModel."""
    target.mkdir(mode=0o700)
    for root, directories, files in os.walk(source, followlinks=False):
        relative = os.path.relpath(root, source)
        destination = target if relative == "." else target / relative
        for name in directories + files:
            entry = os.path.join(root, name)
            mode = os.lstat(entry).st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
                raise UnsafeContentError(
                    f"{source}: refusing unsafe model content: {os.path.join(relative, name)!r} "
                    f"is {kind}; a SavedModel may hold only regular files and directories"
                )
        for name in directories:
            (destination / name).mkdir(mode=0o700)
        for name in files:
            _copy_file(os.path.join(root, name), destination / name)
