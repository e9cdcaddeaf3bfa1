"""Keras HDF5 files: full models (`model.save("x.h5")`, Keras 2 or Keras 3 legacy format)
and weights-only files (`save_weights("x.weights.h5")`).

A full model carries its serialized config as the JSON root attribute `model_config`,
next to `keras_version` and `backend`. A weights-only file has no `model_config`; its
artifact has model_config None. Only metadata is read: attributes and dataset shapes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
from typing import Any, Iterator

import h5py
import numpy as np

from surgery.artifact import ModelArtifact
from surgery.errors import UsageError
from surgery.formats import (
    check_model_config,
    family_from_version,
    parse_json,
    refuse_same_file,
    short_repr,
    unreadable,
)

MODEL_CONFIG_ATTR = "model_config"
KERAS_VERSION_ATTR = "keras_version"

# Parsing a hostile HDF5 file can make the HDF5 library allocate (and touch) memory
# without bound: fuzzing found files with a corrupt object header that took >20 GiB before
# the OOM killer stepped in. While HDF5 parses metadata, the address space is capped at
# what the process already uses plus this much; real metadata needs a few MB.
HDF5_MEMORY_HEADROOM_BYTES = 1 << 30

# A real model has thousands of weights at most; a file with millions of datasets is
# hostile or not a Keras file, and walking it would take minutes.
MAX_DATASETS = 1_000_000


def read_h5(path: str) -> ModelArtifact:
    with hdf5_memory_guard():
        try:
            handle = h5py.File(path, "r", locking=False)
        except OSError as error:
            raise unreadable(path, f"corrupt or truncated HDF5 file ({error})") from None
        with handle:
            try:
                keras_version = _optional_text_attr(path, handle.attrs, KERAS_VERSION_ATTR)
                raw_config = _optional_text_attr(path, handle.attrs, MODEL_CONFIG_ATTR)
                # Keras 2 weights files mark themselves with layer_names; Keras 3 do not.
                has_keras2_layout = "layer_names" in handle.attrs
                shapes = collect_dataset_shapes(path, handle)
            except (OSError, RuntimeError, KeyError, ValueError, TypeError) as error:
                # h5py's wording for HDF5 failures deep in a damaged file.
                raise unreadable(path, f"corrupt HDF5 file ({error})") from None

    if raw_config is None:
        if not shapes:
            raise unreadable(
                path,
                "HDF5 file holds neither a Keras model (no model_config attribute) "
                "nor any weight datasets",
            )
        default_family = "keras2" if has_keras2_layout else "keras3"
        return ModelArtifact(
            path=path,
            format="h5",
            family=family_from_version(keras_version, default_family),
            model_config=None,
            keras_version=keras_version,
            weight_shapes=shapes,
        )

    config = check_model_config(
        path, parse_json(path, raw_config, "the model_config attribute"), "model_config"
    )
    return ModelArtifact(
        path=path,
        format="h5",
        family=family_from_version(keras_version),
        model_config=config,
        keras_version=keras_version,
        weight_shapes=shapes,
    )


def _optional_text_attr(path: str, attrs: h5py.AttributeManager, name: str) -> str | None:
    """A string attribute as str, whichever way h5py hands it back; None if absent."""
    if name not in attrs:
        return None
    value = attrs[name]
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "OSU":
        value = value.reshape(-1)[0]  # a one-element string array, as some writers do
    if isinstance(value, (bytes, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as error:
            raise unreadable(path, f"attribute {name!r} is not UTF-8 text ({error})") from None
    if isinstance(value, str):
        return str(value)
    raise unreadable(
        path,
        f"attribute {name!r} is not a string but {type(value).__name__} {short_repr(value, 40)}",
    )


_GUARD_LOCK = threading.Lock()


@contextlib.contextmanager
def hdf5_memory_guard(headroom: int = HDF5_MEMORY_HEADROOM_BYTES) -> Iterator[None]:
    """Cap the address space (RLIMIT_AS) while HDF5 parses an untrusted file.

    An allocation past the cap fails inside HDF5, which reports it as an ordinary error
    ("memory allocation failed for chunk") that becomes UnreadableModelError, instead of
    the OOM killer ending the process. The previous limit is restored on exit.

    Skipped where it could hurt or cannot work: off Linux, and once TensorFlow is loaded
    (the limit is process-wide and TF's own threads must not hit it).
    """
    current = _address_space_in_use()
    if current is None or "tensorflow" in sys.modules:
        yield
        return
    import resource

    with _GUARD_LOCK:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = current + headroom
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        if soft != resource.RLIM_INFINITY and soft <= cap:
            yield  # already at least this tight
            return
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _address_space_in_use() -> int | None:
    """The process' virtual size in bytes (Linux /proc), or None where unknown."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[0])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def collect_dataset_shapes(path: str, group: h5py.Group) -> dict[str, tuple[int, ...]]:
    """Dataset path -> shape for every dataset under `group`, from metadata only.

    visititems follows hard links only (soft and external links are not resolved, so a
    file cannot make us open another file) and visits each object once, even when hard
    links form a cycle.
    """
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str, node: Any) -> None:
        if not isinstance(node, h5py.Dataset):
            return None
        if len(shapes) >= MAX_DATASETS:
            raise unreadable(path, f"HDF5 file holds more than {MAX_DATASETS} datasets")
        if node.shape is not None:  # None: a null dataspace, no shape to report
            shapes[name] = tuple(int(size) for size in node.shape)
        return None

    group.visititems(record)
    return shapes


def write_h5_with_config(
    source_path: str | os.PathLike, dest_path: str | os.PathLike, new_config: dict
) -> None:
    """Copy an HDF5 model file and replace its `model_config` attribute.

    Weights and every other attribute are untouched. Atomicity is the caller's business:
    dest_path is overwritten.
    """
    if not isinstance(new_config, dict) or not isinstance(new_config.get("class_name"), str):
        raise UsageError(
            f"new config must be a dict with a class_name, got {short_repr(new_config)}"
        )
    try:
        config_text = json.dumps(new_config)
    except (TypeError, ValueError) as error:
        raise UsageError(f"new config is not JSON-serializable: {error}") from None
    refuse_same_file(source_path, dest_path)
    shutil.copyfile(source_path, dest_path)
    with h5py.File(dest_path, "r+", locking=False) as handle:
        if MODEL_CONFIG_ATTR not in handle.attrs:
            raise UsageError(
                f"{os.fspath(source_path)} has no model_config attribute "
                "(a weights-only file); there is no config to replace"
            )
        # A str becomes a variable-length UTF-8 attribute, as Keras writes it; its data
        # lives in the global heap, so no 64 KiB attribute limit applies.
        handle.attrs[MODEL_CONFIG_ATTR] = config_text
