"""The static view of a model file: what `inspect` and the config-level rewrite work on.

Reading an artifact never imports TensorFlow or Keras and never executes anything from
the file: it is JSON (or a protobuf decoded by hand) and HDF5 metadata read through h5py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FORMATS = ("keras", "h5", "savedmodel")
FAMILIES = ("keras3", "keras2")


@dataclass(frozen=True)
class ModelArtifact:
    """A model file as read from disk, before any Keras deserialization.

    path:          the file or directory that was read.
    format:        "keras" (zip), "h5" (HDF5) or "savedmodel" (directory).
    family:        "keras3" (Keras 3 serialization) or "keras2" (tf.keras / tf_keras).
    model_config:  the serialized model, {"class_name": ..., "config": ...}; None for a
                   weights-only file.
    keras_version: the version string recorded in the file, if any.
    weight_shapes: HDF5 dataset path -> shape, read from metadata only (no weight data).
    embedded_configs: further serialized objects the loader deserializes on its own, as
                   (where, JSON value) pairs: the safety scan must cover them as well as
                   model_config (a SavedModel's per-layer Keras metadata).
    hazards:       safety.Finding records the static read found in the container itself
                   (HDF5 external storage, file-reading ops in a SavedModel graph, ...);
                   refused unless the user passes --unsafe.
    normalized:    what keras2_compat changed in an old Keras 2 config (one note each); the
                   file's own config is then not the one to load.
    """

    path: str
    format: str
    family: str
    model_config: dict[str, Any] | None
    keras_version: str | None = None
    weight_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    embedded_configs: tuple[tuple[str, Any], ...] = ()
    hazards: tuple[Any, ...] = ()
    normalized: tuple[str, ...] = ()

    @property
    def weights_only(self) -> bool:
        return self.model_config is None
