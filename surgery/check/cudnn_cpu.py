"""Checking models with cuDNN-only layers on a machine without a GPU.

Keras 2's CuDNNLSTM / CuDNNGRU have no CPU kernel. Where TensorFlow sees no GPU, a
verification runs a *stand-in*: the same model with each cuDNN layer replaced by the LSTM /
GRU that computes what the cuDNN kernel computes (translate.RENAMED_CLASSES), its weights
converted from the cuDNN layout (layouts.cudnn_to_keras) as tf.keras' own loader did. The
stand-in's recurrent states are then checked against the NumPy oracle on those weights,
which are the written file's own; nothing else about the model changes.
"""

from __future__ import annotations

import copy

from surgery.io import families
from surgery.graph import layouts

# Keras 2 layers whose kernels exist only for GPUs (cuDNN): no CPU implementation at all.
GPU_ONLY_CLASSES = frozenset({"CuDNNLSTM", "CuDNNGRU"})
CUDNN_GATES = {"CuDNNLSTM": 4, "CuDNNGRU": 3}


def gpu_only_classes(config) -> list[str]:
    """The cuDNN-only classes a model config uses, sorted."""
    from surgery.graph.level import walk_values

    return sorted({item["class_name"] for item in walk_values(config)
                   if isinstance(item, dict) and item.get("class_name") in GPU_ONLY_CLASSES})


def cannot_run(config) -> str | None:
    """Why a model with this config cannot run on this machine, or None when it can.

    The one genuine case: cuDNN-only layers and no GPU visible to TensorFlow. Decided from
    the config before running anything, so that no other failure can pass for it."""
    from surgery.io.quiet import import_tensorflow

    found = gpu_only_classes(config)
    if not found:
        return None
    if import_tensorflow().config.list_physical_devices("GPU"):
        return None
    return f"{', '.join(found)} layers need a GPU and TensorFlow sees none"


def model_cannot_run(model) -> str | None:
    """cannot_run for a live model (None for one that is not a Keras model, e.g. an adapter)."""
    if not hasattr(model, "get_config"):
        return None
    return cannot_run(families.of_model(model).serialize(model))


def cudnn_layers(config) -> dict[str, str]:
    """{layer name: cuDNN class} for every layer holding cuDNN weights: a cuDNN layer, or a
    wrapper (Bidirectional) around one."""
    from surgery.graph.level import walk_values

    out = {}
    for item in walk_values(config):
        if not (isinstance(item, dict) and isinstance(item.get("config"), dict)):
            continue
        name = item["config"].get("name")
        inner = item["config"].get("layer")
        if item.get("class_name") in GPU_ONLY_CLASSES:
            out.setdefault(name, item["class_name"])
        elif isinstance(inner, dict) and inner.get("class_name") in GPU_ONLY_CLASSES:
            out[name] = inner["class_name"]
    return out


def to_keras_layout(class_name: str, weights: list) -> list:
    """A cuDNN layer's weights (or a Bidirectional's: forward then backward, each in the
    cuDNN layout) in the layout of its stand-in LSTM / GRU."""
    gates = CUDNN_GATES[class_name]
    if len(weights) == 6:
        return layouts.cudnn_to_keras(list(weights[:3]), gates) + layouts.cudnn_to_keras(list(weights[3:]), gates)
    return layouts.cudnn_to_keras(list(weights), gates)


def standin_config(config: dict) -> dict:
    """The config with each cuDNN layer as the LSTM / GRU computing the same function."""
    from surgery.graph.level import walk_values
    from surgery.graph.translate import RENAMED_CLASSES

    new = copy.deepcopy(config)
    for item in walk_values(new):
        if isinstance(item, dict) and item.get("class_name") in GPU_ONLY_CLASSES:
            target, fixed = RENAMED_CLASSES[item["class_name"]]
            item["class_name"] = target
            item["config"].update(fixed)
            if item.get("registered_name") is not None:
                item["registered_name"] = target
    return new


def standin(model, *, custom_objects=None, weights: dict | None = None):
    """A CPU-runnable copy of a live model with cuDNN layers (see module doc).

    weights: {layer name: weights in the cuDNN model's layout} to use instead of the
    model's own (a splice's expected weights); converted like the model's own."""
    family = families.of_model(model)
    config = family.serialize(model)
    cudnn = cudnn_layers(config)
    classes = {**_own_classes(family, model), **(custom_objects or {})}
    copy_model = family.deserialize(standin_config(config), classes)
    _assign(family, model, copy_model, cudnn, weights or {})
    return copy_model


def _own_classes(family, model) -> dict:
    """The classes the live model is made of, by name: its custom layers were trusted when
    it was loaded, and the stand-in is built from the same ones."""
    out = {}
    for layer in model.layers:
        out[type(layer).__name__] = type(layer)
        if family.is_model(layer):
            out.update(_own_classes(family, layer))
    out.pop("CuDNNLSTM", None), out.pop("CuDNNGRU", None)
    return out


def _assign(family, source, target, cudnn: dict, overrides: dict) -> None:
    by_name = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        origin = by_name[layer.name]
        if family.is_model(layer):
            _assign(family, origin, layer, cudnn, overrides)
            continue
        if not layer.weights:
            continue
        values = overrides.get(layer.name, origin.get_weights())
        if layer.name in cudnn:
            values = to_keras_layout(cudnn[layer.name], values)
        layer.set_weights(values)


def note(reason: str) -> str:
    return (f"{reason}: checked on a CPU stand-in (each cuDNN layer as the LSTM/GRU with the cuDNN "
            "kernel's semantics, the file's own weights converted from the cuDNN layout), "
            "recurrent states vs the NumPy oracle on those weights")
