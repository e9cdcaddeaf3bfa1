"""Per-family loading: which Keras reads an artifact into a live model.

Keras 3 artifacts load with Keras 3. Keras 2 (tf_keras) artifacts are handled by the
legacy-family support; until it lands they are reported as not supported.
"""

from __future__ import annotations

from surgery.artifact import ModelArtifact
from surgery.errors import NotSupportedError


def _load_keras3(artifact: ModelArtifact, *, custom_objects: dict, safe_mode: bool):
    from surgery.loading import keras_load

    return keras_load(artifact.path, custom_objects=custom_objects, safe_mode=safe_mode)


def _load_keras2(artifact: ModelArtifact, *, custom_objects: dict, safe_mode: bool):
    raise NotSupportedError(
        f"{artifact.path!r} was written by Keras {artifact.keras_version or '2'} (tf.keras); "
        "Keras 2 models are not supported by this version"
    )


LOADERS = {"keras3": _load_keras3, "keras2": _load_keras2}


def load(artifact: ModelArtifact, *, custom_objects: dict, safe_mode: bool):
    return LOADERS[artifact.family](artifact, custom_objects=custom_objects, safe_mode=safe_mode)
