"""Static readers and writers for saved Keras models: `.keras` zips, HDF5 files and
SavedModel directories.

Nothing here imports TensorFlow, Keras or protobuf, and nothing here executes content
from the file: configs are parsed as JSON, `keras_metadata.pb` is decoded by hand and
HDF5 files are read for metadata only (attributes, dataset shapes) through h5py.

`read_artifact` is the one entry point for reading. Whatever the input, it returns a
`ModelArtifact` or raises `UnreadableModelError` (or `NotSupportedError` for a readable
SavedModel that carries no Keras config); no other exception escapes it. Reading never
modifies the input, never extracts anything to disk and never follows HDF5 soft or
external links. HDF5 parsing runs under an address-space cap (see h5.hdf5_memory_guard):
the HDF5 C library can be driven into runaway allocation by a corrupt object header.
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from typing import Any

import h5py

from surgery.graph import keras2_compat
from surgery.io.artifact import ModelArtifact
from surgery.errors import SurgeryError, UnreadableModelError, UnsafeContentError, UsageError

ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # local file header; empty archive
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")



# ----------------------------------------------------------------------------------------
# Message helpers shared by the format modules (defined before the submodule imports at
# the bottom of this file, which use them).


def describe_path(path: str | os.PathLike) -> str:
    """The path as it should appear in a one-line message (control characters escaped)."""
    try:
        text = os.fspath(path)
    except TypeError:
        return short_repr(path)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return repr(text)


def one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace (an exception text may span lines) and cap the length."""
    flat = " ".join(str(text).split())
    if len(flat) > limit:
        flat = flat[: limit - 3] + "..."
    return flat


def short_repr(value: object, limit: int = 80) -> str:
    """repr() of an offending value, capped so a huge value cannot flood the message."""
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ cannot happen with JSON values, but be safe
        text = f"<{type(value).__name__}>"
    return one_line(text, limit)


def unreadable(path: str | os.PathLike, problem: str) -> UnreadableModelError:
    """Build the standard one-line error: '<path>: <what is wrong>'."""
    return UnreadableModelError(f"{describe_path(path)}: {one_line(problem)}")


def parse_json(
    path: str | os.PathLike, data: bytes | str, where: str, object_hook=None
) -> Any:
    """json.loads with errors that say which part of which file is broken."""
    try:
        return json.loads(data, object_hook=object_hook)
    except RecursionError:
        raise unreadable(path, f"{where} is nested too deeply to parse") from None
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise unreadable(path, f"{where} is not valid JSON ({error})") from None


def check_model_config(path: str | os.PathLike, config: Any, where: str) -> dict[str, Any]:
    """A serialized model is a dict with a string class_name and a dict config."""
    # Keras <= 2.2.2 wrote a Sequential's config as a bare list of layers.
    config = keras2_compat.sequential_dict(config)
    if not isinstance(config, dict):
        kind = type(config).__name__
        raise unreadable(path, f"{where} is not a JSON object but {kind} {short_repr(config, 40)}")
    class_name = config.get("class_name")
    if not isinstance(class_name, str) or not class_name:
        raise unreadable(path, f"{where} has no class_name (got {short_repr(class_name, 40)})")
    if not isinstance(config.get("config"), dict):
        raise unreadable(
            path,
            f"{where} for class {short_repr(class_name, 40)} has no config object "
            f"(got {short_repr(config.get('config'), 40)})",
        )
    return config


def family_from_version(keras_version: str | None, default: str = "keras3") -> str:
    """Keras 2 (tf.keras / tf_keras) wrote versions 2.x; everything newer is Keras 3."""
    if keras_version is None:
        return default
    return "keras2" if keras_version.startswith("2.") else "keras3"


def refuse_same_file(source_path: str | os.PathLike, dest_path: str | os.PathLike) -> None:
    """Writers copy from source to dest; writing onto the source would destroy it."""
    if os.path.exists(dest_path) and os.path.samefile(source_path, dest_path):
        raise UsageError(
            f"destination {describe_path(dest_path)} is the source file itself; "
            "write to a new path"
        )


# ----------------------------------------------------------------------------------------
# Kind detection and the read boundary.


def read_artifact(path: str | os.PathLike) -> ModelArtifact:
    """Read a saved model's config and weight shapes without importing Keras.

    Raises UnreadableModelError (corrupt, truncated, wrong kind, ...) or
    NotSupportedError (a valid SavedModel without Keras metadata); nothing else.
    """
    try:
        # Old Keras 2 config forms become the one form every reader expects.
        return keras2_compat.normalize_artifact(_read_by_kind(path))
    except SurgeryError as error:
        # Our own errors already name the path; make sure they stay on one line.
        if "\n" in str(error) or "\r" in str(error):
            raise type(error)(one_line(str(error), 1000)) from None
        raise
    except RecursionError:
        # Absurdly deep nesting somewhere a parser recurses.
        raise unreadable(path, "the model file is nested too deeply to parse") from None
    except MemoryError:
        raise unreadable(path, "reading it needs more memory than is available") from None
    except Exception as error:
        # The boundary: anything a parser throws on hostile input becomes one error type.
        raise unreadable(
            path, f"cannot read model file ({type(error).__name__}: {error})"
        ) from error


def _read_by_kind(path: str | os.PathLike) -> ModelArtifact:
    try:
        path_text = os.fspath(path)
    except TypeError:
        raise UnreadableModelError(f"not a file path: {short_repr(path)}") from None
    if isinstance(path_text, bytes):
        path_text = os.fsdecode(path_text)
    if path_text == "":
        raise UnreadableModelError("empty path given as the model file")
    try:
        status = os.stat(path_text)
    except FileNotFoundError:
        raise unreadable(path_text, "no such file or directory") from None
    except OSError as error:
        raise unreadable(path_text, f"cannot access it ({error.strerror or error})") from None

    if stat.S_ISDIR(status.st_mode):
        return _read_directory(path_text)
    if not stat.S_ISREG(status.st_mode):
        # A FIFO or device would block or never end; never open one.
        raise unreadable(path_text, "not a regular file or directory")
    if status.st_size == 0:
        raise unreadable(path_text, "the file is empty")
    return _read_file(path_text)


def _read_directory(path: str) -> ModelArtifact:
    if any(os.path.isfile(os.path.join(path, name)) for name in SAVED_MODEL_FILES):
        from surgery.io.formats import savedmodel  # with its protobuf decoder: only for directories

        return savedmodel.read_savedmodel(path)
    raise unreadable(
        path,
        "directory is not a SavedModel (no saved_model.pb); "
        "pass a .keras file, an .h5 file or a SavedModel directory",
    )


def _read_file(path: str) -> ModelArtifact:
    kind = container_kind(path)
    if kind == "zip":
        return keras_zip.read_keras_zip(path)
    if kind == "hdf5":
        return h5.read_h5(path)
    hint = ""
    if os.path.basename(path) in SAVED_MODEL_FILES:
        hint = "; pass the SavedModel directory, not the saved_model.pb inside it"
    elif path.endswith(".keras"):
        hint = " (a .keras file must be a zip archive)"
    elif path.endswith((".h5", ".hdf5")):
        hint = " (no HDF5 signature)"
    raise unreadable(path, f"not a Keras model file: neither a zip archive nor HDF5{hint}")


def container_kind(path: str) -> str | None:
    """"zip", "hdf5" or None, decided by content alone, never by the file name.

    Keras and tf_keras pick their reader from the extension and from h5py.is_hdf5, so a
    file that is readable as BOTH containers would be scanned as one and loaded as the
    other. Such a polyglot is refused (UnsafeContentError) wherever either reader would
    find its signature: a zip local header at byte 0 or an end-of-central-directory record
    zipfile accepts, and an HDF5 superblock at 0 or any power of two from 512 up (where
    libhdf5 searches). The one overlap a genuine .keras file can show is allowed: its
    stored `model.weights.h5` member may happen to start at such an offset; libhdf5 then
    finds only that weights file, which must carry no model config.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(4)
        hdf5_offsets = _hdf5_signature_offsets(handle, size)
    zip_header = head in ZIP_MAGICS
    archive = _open_zip_quietly(path) if (zip_header or hdf5_offsets) else None
    try:
        if hdf5_offsets and (zip_header or archive is not None):
            stray = [offset for offset in hdf5_offsets
                     if not _is_weights_member_start(path, archive, offset)]
            if stray:
                raise UnsafeContentError(
                    f"{describe_path(path)}: refusing a polyglot file: it is both a zip "
                    f"archive and an HDF5 file (HDF5 superblock at byte {stray[0]}); "
                    "Keras could load one while the other was checked"
                )
            return "zip"
        if zip_header:
            return "zip"
        return "hdf5" if hdf5_offsets else None
    finally:
        if archive is not None:
            archive.close()


def _hdf5_signature_offsets(handle, size: int) -> list[int]:
    offsets, offset = [], 0
    while offset + len(HDF5_SIGNATURE) <= size:
        handle.seek(offset)
        if handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
            offsets.append(offset)
        offset = 512 if offset == 0 else offset * 2
    return offsets


def _open_zip_quietly(path: str):
    """A ZipFile when zipfile itself would accept the file as an archive, else None."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        return None


def _is_weights_member_start(path: str, archive, offset: int) -> bool:
    """True when `offset` is where the stored weights member's bytes begin, and those
    bytes are a weights file (no model config for an HDF5 reader of the outer file)."""
    if archive is None:
        return False
    try:
        info = archive.getinfo(keras_zip.WEIGHTS_MEMBER)
        if info.compress_type != zipfile.ZIP_STORED:
            return False
        if keras_zip.stored_data_offset(path, archive, info) != offset:
            return False
        with keras_zip.open_member_seekable(path, archive, info) as member:
            with h5.hdf5_memory_guard(), h5py.File(member, "r") as weights:
                return h5.MODEL_CONFIG_ATTR not in weights.attrs
    except (KeyError, OSError, ValueError, RuntimeError, SurgeryError):
        return False


# The format modules import the helpers above, so these imports must stay below them.
from surgery.io.formats import h5, keras_zip  # noqa: E402
from surgery.io.formats.h5 import write_h5_with_config  # noqa: E402
from surgery.io.formats.keras_zip import write_keras_zip  # noqa: E402

__all__ = [
    "read_artifact",
    "write_keras_zip",
    "write_h5_with_config",
    "UnreadableModelError",
]
