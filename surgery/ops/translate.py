"""Translate a live Keras 2 model (or a Keras 2 file) into a Keras 3 model, weights included.

The config translation is surgery/graph/translate.py; here the Keras 3 model is built from it
and every layer's weights copied over (read from the HDF5 file, else from the loaded Keras 2
model), converted as that translation says.
"""

from __future__ import annotations

import re

import numpy as np

from surgery.io import families, optimization
from surgery.io.artifact import ModelArtifact
from surgery.errors import NotSupportedError, UnreadableModelError
from surgery.graph.level import walk_values
from surgery.graph.translate import DEFAULT_REMEDY, apply_fold, cudnn_to_keras, translate_config

# command -> (what to do about a Keras-2-only setting, what a Keras 3 custom class is needed for)
ADVICE = {
    None: (DEFAULT_REMEDY, "translate it to Keras 3"),
    "convert": ("convert cannot express it; the other commands work on the Keras 2 file as it is", "convert"),
    "expose-state": ("keep the model in the Keras 2 family (omit --to keras3)", "use --to keras3"),
}


def h5_layer_weights(path: str) -> dict[str, list[np.ndarray]]:
    """Leaf layer name -> weights in saved order, from a Keras 2 HDF5 model or weights file."""
    import h5py

    out: dict[str, list[np.ndarray]] = {}
    try:
        with h5py.File(path, "r") as handle:
            group = handle["model_weights"] if "model_weights" in handle else handle
            for layer_name in _decode_all(group.attrs.get("layer_names", [])):
                layer_group = group[layer_name]
                for weight_name in _decode_all(layer_group.attrs.get("weight_names", [])):
                    leaf = weight_name.split("/")[0] if "/" in weight_name else layer_name
                    if re.fullmatch(re.escape(layer_name) + r"(_\d+)?", leaf):
                        leaf = layer_name  # Keras 2.1 scopes a layer's own weights as "<name>_1/"
                    out.setdefault(leaf, []).append(np.asarray(layer_group[weight_name]))
    except (OSError, KeyError) as error:
        raise UnreadableModelError(f"cannot read Keras 2 weights from {path!r}: {error}") from None
    return out


def _decode_all(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def live_layer_weights(model) -> dict[str, list[np.ndarray]]:
    """Leaf layer name -> weights, from a live tf_keras model (nested models flattened)."""
    family = families.of_model(model)
    out = {}
    for layer in model.layers:
        if family.is_model(layer):
            out.update(live_layer_weights(layer))
        elif layer.weights:
            out[layer.name] = layer.get_weights()
    return out


def translate(artifact: ModelArtifact, *, custom_objects=None, unsafe: bool = False, command: str | None = None):
    """(Keras 3 model, notes) equivalent to a Keras 2 artifact. command: whose options a
    refusal names (a key of ADVICE)."""
    if artifact.family != "keras2":
        raise NotSupportedError(f"{artifact.path!r} is already a Keras 3 model")
    remedy, purpose = ADVICE[command]
    _refuse_keras2_classes(artifact.model_config, custom_objects, purpose)
    config, notes, cudnn, folds = translate_config(artifact.model_config, _keras3_layers(), remedy=remedy)
    model = families.get("keras3").deserialize(config, custom_objects)
    if artifact.format == "h5":
        weights = h5_layer_weights(artifact.path)
    else:
        from surgery.io.loading import load_model

        weights = live_layer_weights(load_model(artifact, unsafe=unsafe, custom_objects=custom_objects))
    _assign(model, weights, cudnn, folds)
    return model, notes


def translate_live(model, *, custom_objects=None, command: str | None = None):
    """(Keras 3 model, notes) equivalent to a live tf_keras model."""
    remedy, purpose = ADVICE[command]
    config = families.of_model(model).serialize(model)
    _refuse_keras2_classes(config, custom_objects, purpose)
    config, notes, cudnn, folds = translate_config(config, _keras3_layers(), remedy=remedy)
    translated = families.get("keras3").deserialize(config, custom_objects)
    _assign(translated, live_layer_weights(model), cudnn, folds)
    return translated, notes


def _refuse_keras2_classes(config: dict, custom_objects, purpose: str) -> None:
    """A custom class given only as a tf_keras class cannot live in a Keras 3 model, nor can
    tensorflow-model-optimization's wrappers (tfmot exists for tf_keras only)."""
    wrappers = optimization.wrapper_classes(config)
    if wrappers:
        how = ("add --strip" if purpose == ADVICE["expose-state"][1]
               else "strip them first: lstm-surgery expose-state MODEL --strip -o PLAIN.h5")
        raise NotSupportedError(f"{', '.join(wrappers)} (tensorflow-model-optimization wrappers) exist only in "
                                f"tf_keras, not in Keras 3; to {purpose}, {how} (tfmot's own strip keeps the "
                                "weights the model computes with)")
    given = custom_objects or {}
    usable = families.custom_objects_for("keras3", given)
    for item in walk_values(config):
        name = item.get("class_name") if isinstance(item, dict) and isinstance(item.get("config"), dict) else None
        if isinstance(name, str) and name not in usable and families.class_family(given.get(name)) == "keras2":
            raise NotSupportedError(f"custom layer {name!r} is a tf_keras class; pass --custom-objects with "
                                    f"a Keras 3 definition of it to {purpose}")


def _assign(model, weights: dict, cudnn: dict, folds: dict) -> None:
    family = families.of_model(model)
    for layer in model.layers:
        if family.is_model(layer):
            _assign(layer, weights, cudnn, folds)
            continue
        if not layer.weights:
            continue
        if layer.name not in weights:
            raise UnreadableModelError(f"no saved weights for layer {layer.name!r}")
        values = weights[layer.name]
        if layer.name in cudnn:
            values = cudnn_to_keras(cudnn[layer.name], values)
        if layer.name in folds:
            values = apply_fold(folds[layer.name], values)
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(np.shape(v)) for v in values]
        if expected != got:
            raise UnreadableModelError(
                f"layer {layer.name!r}: saved weight shapes {got} do not fit the Keras 3 layer's {expected}"
            )
        layer.set_weights(values)


def _keras3_layers():
    return families.get("keras3").keras.layers
