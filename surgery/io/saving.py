"""Atomic writes of rebuilt models and their JSON manifests.

Every artifact is written to a temporary sibling, verified there, and renamed into place after
its manifest, so a crash or a SIGKILL never leaves a partial file (or an artifact without its
manifest) at the target path. The tool never writes to, into or around its input. Temporaries
are listed in $LSTM_SURGERY_TEMP_LOG (when set) before they exist, for a supervising parent.

What goes into those files (manifests, signature names, SavedModel export, Keras save) is in
surgery.io.writers.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import platform
import re
import secrets
import shutil
import sys
from pathlib import Path
from typing import Iterator

from surgery.errors import SurgeryError, UsageError
from surgery.io.run_env import TEMP_LOG_ENV


EXTENSION_FORMATS = {".keras": "keras", ".h5": "h5", ".hdf5": "h5"}
FORMAT_EXTENSIONS = {"keras": ".keras", "h5": ".h5", "savedmodel": ""}


def infer_format(path: str | os.PathLike, requested: str | None = None) -> str:
    if requested:
        if requested not in FORMAT_EXTENSIONS:
            raise UsageError(f"unknown output format {requested!r}; choose keras, h5 or savedmodel")
        return requested
    suffix = Path(path).suffix.lower()
    return EXTENSION_FORMATS.get(suffix, "savedmodel")


def default_output_path(source: str | os.PathLike, tag: str, fmt: str | None = None) -> Path:
    """<stem>.<tag><ext> next to the source, e.g. model.exposed.keras."""
    source = Path(source)
    if source.is_dir():
        return source.with_name(f"{source.name}.{tag}")
    stem, ext = source.stem, source.suffix
    if fmt is not None and fmt != "savedmodel":
        ext = FORMAT_EXTENSIONS[fmt]
    elif fmt == "savedmodel":
        ext = ""
    return source.with_name(f"{stem}.{tag}{ext}")


def manifest_path(artifact: str | os.PathLike) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".manifest.json")


# ----------------------------------------------------------------------------------------
# Output checks (before any work) and the one commit every writing operation goes through.
#
# An operation stages its artifact(s) in temporaries beside the targets, verifies them there,
# then `Outputs.commit` moves the manifests into place first and the artifacts second, so an
# artifact is never visible without its manifest. Without --force nothing is ever replaced at
# that moment (renameat2 RENAME_NOREPLACE): a concurrent run that got there first wins.

TEMP_MARKER = ".lstm-surgery-tmp-"
_TEMP_NAME = re.compile(r"\..*" + re.escape(TEMP_MARKER) + r"[0-9a-f]{16}(\.[^/]*)?", re.DOTALL)
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def check_output(source, dest: str | os.PathLike, force: bool, *, directory: bool | None = None) -> Path:
    """Refuse, before any work, an output that overlaps an input, that exists (without --force),
    or that --force may not replace. `source`: one input path, a list of them, or None;
    `directory`: whether the output is a directory (default: inferred from its extension)."""
    dest = Path(dest)
    directory = infer_format(dest) == "savedmodel" if directory is None else directory
    for path in (dest, manifest_path(dest)):
        check_disjoint(source, path)
    # A manifest alone is refused too: it may be a concurrent run's, about to get its artifact.
    for path in (dest, manifest_path(dest)):
        if _lexists(path) and not force:
            raise UsageError(f"output {str(path)!r} exists; pass --force to overwrite it")
    if force:
        _check_replaceable(dest, directory)
        _check_replaceable(manifest_path(dest), False)
    make_output_directory(dest.parent)
    return dest


def make_output_directory(path: str | os.PathLike) -> bool:
    """The one rule for every command's output directory: a missing one is created (with its
    parents, like `mkdir -p`); True when it was. Anything in the way is refused in one line."""
    path = Path(path)
    if path.is_dir():
        return False
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"cannot create the output directory {str(path)!r}: a file is in the way") from None
    except OSError as error:
        raise UsageError(f"cannot create the output directory {str(path)!r}: {error.strerror or error}") from None
    return True


def check_disjoint(source, dest: str | os.PathLike) -> None:
    """Refuse an output that is, contains or lies inside an input (symlinks resolved)."""
    sources = [] if source is None else [source] if isinstance(source, (str, os.PathLike)) else list(source)
    # The output path is replaced as a link, never written through, but a link to the input
    # (or to a directory holding it) is refused too: its real path is what a reader sees.
    outs = {_real_parent(dest), Path(os.path.realpath(dest))}
    for src in sources:
        real_src = Path(os.path.realpath(src))
        for out in outs:
            if out == real_src:
                raise UsageError(f"refusing to write the output {str(dest)!r} onto the input {str(src)!r}")
            if out in real_src.parents:
                raise UsageError(f"refusing to write the output {str(dest)!r}: it contains the input {str(src)!r}")
            if real_src in out.parents:
                raise UsageError(f"refusing to write the output {str(dest)!r} inside the input {str(src)!r}")


def _real_parent(path) -> Path:
    path = Path(os.path.abspath(path))
    return Path(os.path.realpath(path.parent)) / path.name


def _lexists(path) -> bool:
    return os.path.lexists(path)


def _check_replaceable(dest: Path, directory: bool) -> None:
    """What --force may replace: a file by a file, a link by anything (the link itself), and a
    directory only by a directory and only when it is a previous output of this tool."""
    if not _lexists(dest) or dest.is_symlink():
        return
    if dest.is_dir() and not directory:
        raise UsageError(f"output {str(dest)!r} is a directory; choose a file name")
    if not dest.is_dir() and directory:
        raise UsageError(f"output {str(dest)!r} is a file; a SavedModel output is a directory")
    if dest.is_dir() and not _is_previous_output(dest):
        raise UsageError(f"refusing to replace the directory {str(dest)!r}: it is not a SavedModel nor an "
                         "output of this tool (--force replaces only those)")


def _is_previous_output(directory: Path) -> bool:
    if (directory / "saved_model.pb").is_file():
        return True
    try:
        manifest = json.loads(manifest_path(directory).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "lstm_surgery" in manifest


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (no window for threads)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _normalize_modes(path: Path, directory: bool) -> None:
    """The modes a plain `open`/`mkdir` would give under the umask: temporaries start private."""
    mask = _umask()
    file_mode, dir_mode = 0o666 & ~mask, 0o777 & ~mask
    if not directory:
        _chmod(path, file_mode)
        return
    _chmod(path, dir_mode)
    for root, dirs, files in os.walk(path):
        for name in dirs:
            _chmod(os.path.join(root, name), dir_mode)
        for name in files:
            _chmod(os.path.join(root, name), file_mode)


def _chmod(path, mode: int) -> None:
    if os.path.islink(path):
        return
    try:
        os.chmod(path, mode)
    except OSError as error:  # filesystems without modes (vfat, some FUSE) refuse; nothing to set there
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise


def temp_path(dest: str | os.PathLike, *, suffix: str | None = None) -> Path:
    """A fresh temporary name beside `dest` (not created), recorded in the temp log first."""
    dest = Path(dest)
    suffix = dest.suffix if suffix is None else suffix
    name = f".{dest.name[:100]}{TEMP_MARKER}{secrets.token_hex(8)}{suffix[:20]}"
    temp = Path(os.path.abspath(dest.parent / name))
    _log_temp(temp)
    return temp


def _log_temp(path: Path) -> None:
    log = os.environ.get(TEMP_LOG_ENV)
    if not log:
        return
    # One write() of one line on an O_APPEND descriptor: lines from concurrent writers never mix.
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, os.fsencode(str(path)) + b"\n")
    finally:
        os.close(fd)


def cleanup_logged_temps(log_path: str | os.PathLike) -> list[Path]:
    """Remove what a killed run left: every path in the log that still exists and whose name is
    one of our temporaries (anything else in a hostile log is ignored). Returns what was removed."""
    try:
        lines = Path(log_path).read_bytes().splitlines()
    except FileNotFoundError:
        return []
    removed = []
    for raw in lines:
        path = os.fsdecode(raw.strip())
        if not os.path.isabs(path) or ".." in Path(path).parts or not _TEMP_NAME.fullmatch(os.path.basename(path)):
            continue
        if _lexists(path):
            _remove(Path(path))
            removed.append(Path(path))
    return removed


class Outputs:
    """One operation's outputs: temporaries to write and verify, then one commit."""

    def __init__(self, force: bool):
        self.force = force
        self._staged: list[tuple[Path, Path, bool]] = []  # (dest, temp, directory)
        self.committed = False

    def temp(self, dest: str | os.PathLike, *, directory: bool = False, suffix: str | None = None) -> Path:
        """The temporary to write `dest` into (ending in `suffix`, default `dest`'s own). A file
        is created empty; a directory is left for its writer (SavedModel) to create."""
        dest = Path(dest)
        temp = temp_path(dest, suffix="" if directory else suffix)
        if not directory:
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._staged.append((dest, temp, directory))
        return temp

    def commit(self, manifests: dict | None = None) -> dict[Path, Path]:
        """Move every staged output into place, each manifest before its artifact. `manifests`:
        {dest: manifest dict} for the outputs that carry one. Returns {dest: manifest path}."""
        if self.committed:
            raise SurgeryError("internal: outputs committed twice")
        manifests = {Path(k): v for k, v in (manifests or {}).items()}
        staged = {dest for dest, _t, _d in self._staged}
        if set(manifests) - staged:
            raise SurgeryError(f"manifest for an output that was not staged: {sorted(map(str, set(manifests) - staged))}")
        for dest, manifest in manifests.items():
            target = manifest_path(dest)
            temp = temp_path(target)
            with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as handle:
                handle.write(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            self._staged.insert(0, (target, temp, False))
        names = [_real_parent(dest) for dest, _t, _d in self._staged]
        if len(set(names)) != len(names):
            raise UsageError(f"two outputs of this run name the same path: {sorted(map(str, names))}")
        for dest, temp, directory in self._staged:
            if self.force:  # again: the directory may have changed during the work
                _check_replaceable(dest, directory)
            _normalize_modes(temp, directory)
            if not directory:
                fsync(temp)
        done: list[_Placed] = []
        try:
            for dest, temp, directory in self._staged:  # manifests first: they were inserted in front
                done.append(_place(temp, dest, directory, self.force))
        except BaseException:
            for placed in reversed(done):
                with contextlib.suppress(OSError):
                    placed.undo()
            raise
        self.committed = True
        for placed in done:
            placed.finish()
        for parent in {dest.parent for dest, _t, _d in self._staged}:
            fsync(parent)
        return {dest: manifest_path(dest) for dest in manifests}

    def discard(self) -> None:
        for _dest, temp, _directory in self._staged:
            _remove(temp)


@contextlib.contextmanager
def staged_outputs(*, force: bool) -> Iterator[Outputs]:
    """Stage outputs; the block must end with `outputs.commit(...)`. Any exception (also
    KeyboardInterrupt, SystemExit) removes every temporary; an OSError while writing becomes
    a one-line UsageError naming the path (exit 2)."""
    outputs = Outputs(force)
    try:
        yield outputs
    except BaseException as error:
        outputs.discard()
        converted = _write_error(error, outputs)
        if converted is not None:
            raise converted from error
        raise
    if not outputs.committed:
        outputs.discard()
        raise SurgeryError("internal: staged outputs were never committed")


def _write_error(error: BaseException, outputs: Outputs) -> UsageError | None:
    artifacts = [dest for dest, _t, _d in outputs._staged if not dest.name.endswith(".manifest.json")]
    target = str(artifacts[0]) if artifacts else "the output"
    if isinstance(error, OSError):
        reason = error.strerror or " ".join(str(error).split())[:200] or type(error).__name__
        where = f" ({error.filename})" if error.filename and str(error.filename) != target else ""
        return UsageError(f"cannot write {target!r}: {reason}{where}")
    if isinstance(error, Exception) and not isinstance(error, SurgeryError):
        # TensorFlow reports a full disk as its own error types, not OSError.
        for code in (errno.ENOSPC, errno.EDQUOT):
            if os.strerror(code) in str(error):
                return UsageError(f"cannot write {target!r}: {os.strerror(code)}")
    return None


class _Placed:
    """One output moved into place: how to take it back, and what to remove once all are in."""

    def __init__(self, dest: Path, ident, backup: Path | None, exchanged: bool):
        self.dest, self.ident, self.backup, self.exchanged = dest, ident, backup, exchanged

    def undo(self) -> None:
        if self.backup is not None and self.exchanged:
            _renameat2(self.backup, self.dest, _RENAME_EXCHANGE)  # the old directory back
            _remove(self.backup)
        elif self.backup is not None:
            os.replace(self.backup, self.dest)
        elif _identity(self.dest) == self.ident:  # never remove what another run put there
            _remove(self.dest)

    def finish(self) -> None:
        if self.backup is not None:
            with contextlib.suppress(OSError):  # the output is in place; a stale backup is harmless
                _remove(self.backup)


def _identity(path: Path):
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        return st.st_dev, st.st_ino
    return None


def _place(temp: Path, dest: Path, directory: bool, force: bool) -> _Placed:
    ident = _identity(temp)
    if not force:
        try:
            _rename_noreplace(temp, dest, directory)
        except FileExistsError:
            raise UsageError(f"output {str(dest)!r} appeared while this run was writing it; "
                             "left it as it is") from None
        return _Placed(dest, ident, None, False)
    if not _lexists(dest):
        os.rename(temp, dest)
        return _Placed(dest, ident, None, False)
    if not directory:
        backup = temp_path(dest)
        try:
            os.link(dest, backup, follow_symlinks=False)  # keeps the old one for an undo
        except (OSError, NotImplementedError):
            backup = None
        try:
            os.replace(temp, dest)  # replaces a link itself, never what it points to
        except BaseException:
            if backup is not None:
                _remove(backup)
            raise
        return _Placed(dest, ident, backup, False)
    if _renameat2(temp, dest, _RENAME_EXCHANGE):
        return _Placed(dest, ident, temp, True)  # `temp` now holds the old directory (or link)
    backup = temp_path(dest, suffix="")
    os.rename(dest, backup)
    try:
        os.rename(temp, dest)
    except BaseException:
        os.rename(backup, dest)
        raise
    return _Placed(dest, ident, backup, False)


def _rename_noreplace(temp: Path, dest: Path, directory: bool) -> None:
    """Rename that fails with FileExistsError rather than replace anything."""
    if _renameat2(temp, dest, _RENAME_NOREPLACE):
        return
    if os.name == "nt":
        os.rename(temp, dest)  # never replaces on Windows
    elif directory:
        os.mkdir(dest)  # claims the name; a rename replaces only an empty directory
        try:
            os.rename(temp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.rmdir(dest)
            raise
    else:
        try:
            os.link(temp, dest)
        except FileExistsError:
            raise
        except OSError:  # no hard links here: claim the name, then replace the claim
            os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.replace(temp, dest)
            return
        os.unlink(temp)


_RENAMEAT2 = []


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """Linux renameat2(2). False where the system or filesystem lacks it (callers fall back)."""
    if not _RENAMEAT2:
        _RENAMEAT2.append(_load_renameat2())
    call = _RENAMEAT2[0]
    if call is None:
        return False
    if call(os.fsencode(str(src)), os.fsencode(str(dst)), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(src), None, str(dst))


def _load_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    at_fdcwd = -100
    function = getattr(libc, "renameat2", None)  # glibc >= 2.28
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        function.restype = ctypes.c_int
        return lambda src, dst, flags: function(at_fdcwd, src, at_fdcwd, dst, flags)
    number = {"x86_64": 316, "aarch64": 276}.get(platform.machine())
    if number is None:
        return None
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    return lambda src, dst, flags: syscall(ctypes.c_long(number), ctypes.c_int(at_fdcwd), ctypes.c_char_p(src),
                                           ctypes.c_int(at_fdcwd), ctypes.c_char_p(dst), ctypes.c_uint(flags))


@contextlib.contextmanager
def atomic_target(dest: str | os.PathLike, *, directory: bool = False, force: bool = True) -> Iterator[Path]:
    """One output without a manifest, through the same commit (for callers that need no manifest)."""
    with staged_outputs(force=force) as outputs:
        temp = outputs.temp(dest, directory=directory)
        yield temp
        outputs.commit()


@contextlib.contextmanager
def scratch_dir(beside: str | os.PathLike) -> Iterator[Path]:
    """A working directory beside an output (same filesystem), logged like any temporary and
    removed on the way out, whatever happens."""
    path = temp_path(beside, suffix=".work")
    os.mkdir(path, 0o700)
    try:
        yield path
    finally:
        _remove(path)


def fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(path: Path) -> None:
    """Remove a file, a link (never what it points to) or a directory tree."""
    with contextlib.suppress(FileNotFoundError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
