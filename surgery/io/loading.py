"""Load a model file into Keras, only after the static safety scan has passed."""

from __future__ import annotations

from copy import copy as shallow_copy
import dataclasses
import os
import runpy
from pathlib import Path

from surgery.io import families, private_copy
from surgery.io.artifact import ModelArtifact
from surgery.errors import SurgeryError, UsageError
from surgery.io.formats import read_artifact
from surgery.io.quiet import import_keras
from surgery.io.safety import ensure_artifact_safe


def load_custom_objects(path: str | os.PathLike | None) -> dict:
    """Run a user's trusted Python file and collect the Keras objects it defines or registers.

    This is the explicit opt-in for custom layers: the user vouches for the file.
    """
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--custom-objects file not found: {str(path)!r}")
    keras = import_keras()
    before = _registered_objects(keras)
    try:
        namespace = runpy.run_path(str(path), run_name="lstm_surgery_custom_objects")
    except Exception as error:  # the user's file: report its failure in one line
        raise UsageError(f"--custom-objects file {str(path)!r} failed: {type(error).__name__}: {error}") from None
    bases = _layer_bases(keras)
    objects = {
        name: value
        for name, value in namespace.items()
        if isinstance(value, type) and issubclass(value, bases)
        or getattr(value, "_lstm_surgery_custom", False)
    }
    registered = {k: v for k, v in _registered_objects(keras).items() if k not in before}
    objects.update(registered)
    objects.update({name.split(">")[-1]: value for name, value in registered.items()})
    return CustomObjects(objects, _per_family(namespace, registered))


class CustomObjects(dict):
    """Name -> object, as Keras takes them; `per_family` keeps each family's own class
    where a file defines one name for both (a tf_keras class for the Keras 2 original and
    a Keras 3 one for its conversion). See families.custom_objects_for."""

    def __init__(self, objects: dict, per_family: dict):
        super().__init__(objects)
        self.per_family = per_family


def _per_family(namespace: dict, registered: dict) -> dict:
    from surgery.io.families import class_family

    out: dict = {"keras2": {}, "keras3": {}}
    named = [(name, value) for name, value in namespace.items() if isinstance(value, type)]
    named += [(name.split(">")[-1], value) for name, value in registered.items()]
    for name, value in named:
        family = class_family(value)
        if family is not None:
            out[family][name] = value
            out[family].setdefault(value.__name__, value)
    return out


def _tf_keras():
    """tf_keras if something (the user's file) imported it; a file that never imported it
    cannot subclass or register anything of it."""
    import sys

    return sys.modules.get("tf_keras")


def _layer_bases(keras) -> tuple:
    """Layer and Model of both families: a Keras 2 file's custom layers subclass tf_keras'
    (`tf.keras` is Keras 3 under TensorFlow >= 2.16 unless TF_USE_LEGACY_KERAS is set)."""
    tf_keras = _tf_keras()
    legacy = (tf_keras.layers.Layer, tf_keras.Model) if tf_keras is not None else ()
    return (keras.layers.Layer, keras.Model, *legacy)


def _registered_objects(keras) -> dict:
    tf_keras = _tf_keras()
    legacy = tf_keras.utils.get_custom_objects() if tf_keras is not None else {}
    return {**legacy, **keras.saving.get_custom_objects()}


def load_model(
    source: str | os.PathLike | ModelArtifact,
    *,
    unsafe: bool = False,
    custom_objects: dict | None = None,
):
    """Load a model file into Keras after refusing anything that would run code.

    Keras never opens the user's path: the file's bytes are copied into a private
    directory, that copy is read and scanned (UnsafeContentError, exit 3, before Keras
    sees anything), and Keras loads the same copy under the extension of the format its
    content was read as. Keras' own safe_mode stays on unless `unsafe` is given.
    """
    path = source.path if isinstance(source, ModelArtifact) else source
    # A copy that keeps its type: CustomObjects carries each family's own classes.
    custom_objects = shallow_copy(custom_objects) if custom_objects else {}
    with private_copy.private_directory() as directory:
        copy = private_copy.copy_into(path, directory)
        try:
            artifact = read_artifact(copy)
            if artifact.weights_only:
                raise UsageError(f"{os.fspath(path)!r} holds weights only; a full model file is needed here")
            copy = private_copy.name_for_format(copy, artifact.format)
            artifact = dataclasses.replace(artifact, path=str(copy))
            ensure_artifact_safe(artifact, allow_unsafe=unsafe, trusted=custom_objects.keys())
            return families.load(artifact, custom_objects=custom_objects, safe_mode=not unsafe)
        except SurgeryError as error:
            raise private_copy.rename_errors(error, copy, path) from None
