"""Explicit mask edges for configs that only imply them (Sequential models).

Keras 3 Functional configs record a recurrent layer's mask as an explicit `mask` keyword
(a tensor made by ops such as NotEqual/Any). A Sequential config does not: Keras fills the
mask in implicitly at call time, and only while the layer is called with a single tensor
argument. Once surgery adds `initial_state`, that implicit mask would silently vanish, so
the Sequential -> Functional conversion writes the mask edges Keras itself would write.
"""

from __future__ import annotations

from typing import Callable

# Layers whose output mask is their input mask (Keras `supports_masking` pass-through).
MASK_PASSTHROUGH = frozenset({
    "Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "Activation", "Identity", "Dense", "EinsumDense", "BatchNormalization",
    "LayerNormalization", "UnitNormalization", "TimeDistributed", "ActivityRegularization",
    "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax",
})

# Layers whose call takes a `mask` keyword that must be wired explicitly.
MASK_CONSUMERS_EXTRA = frozenset({"TimeDistributed"})


def _op_entry(class_name: str, name: str, args: list, config_extra: dict | None = None) -> dict:
    return {
        "module": "keras.src.ops.numpy",
        "class_name": class_name,
        "config": {"name": name, **(config_extra or {})},
        "registered_name": class_name,
        "name": name,
        "inbound_nodes": [{"args": args, "kwargs": {}}],
    }


def _masking_ops(layer: dict, input_tensor: dict, fresh_name: Callable[[str], str]):
    value = layer["config"].get("mask_value", 0.0)
    not_equal = fresh_name("not_equal")
    any_name = fresh_name("any")
    bool_tensor = _retarget(input_tensor, (not_equal, 0, 0), "bool")
    ops = [
        _op_entry("NotEqual", not_equal, [input_tensor, value]),
        _op_entry("Any", any_name, [bool_tensor], {"axis": -1, "keepdims": False}),
    ]
    return ops, (any_name, 0, 0)


def _embedding_ops(layer: dict, input_tensor: dict, fresh_name: Callable[[str], str]):
    if not layer["config"].get("mask_zero", False):
        return [], None
    not_equal = fresh_name("not_equal")
    return [_op_entry("NotEqual", not_equal, [input_tensor, 0])], (not_equal, 0, 0)


# Layer class -> builds the ops that compute the mask it emits: (op entries, mask ref).
MASK_SOURCES: dict[str, Callable] = {
    "Masking": _masking_ops,
    "Embedding": _embedding_ops,
}


def _retarget(tensor: dict, ref: tuple, dtype: str) -> dict:
    config = dict(tensor["config"])
    config["keras_history"] = list(ref)
    config["dtype"] = dtype
    return {"class_name": "__keras_tensor__", "config": config}


def mask_tensor(ref: tuple, shape) -> dict:
    return {
        "class_name": "__keras_tensor__",
        "config": {"shape": list(shape[:2]) if shape else [None, None], "dtype": "bool",
                   "keras_history": list(ref)},
    }


def returns_sequence_mask(layer: dict) -> bool:
    """A recurrent layer passes its input mask on only when it returns sequences."""
    inner = layer.get("config", {})
    if layer.get("class_name") == "Bidirectional":
        inner = inner.get("layer", {}).get("config", {})
    return bool(inner.get("return_sequences", False))


def add_explicit_masks(level_config: dict, is_recurrent: Callable[[str], bool]) -> None:
    """Give every recurrent call whose mask is only implied an explicit `mask` keyword.

    Works on one Keras 3 functional level in place: each call's mask is traced back from its
    sequence input through mask pass-through layers to the layer that emits it (Masking,
    Embedding(mask_zero)), whose mask ops are then written into the graph once.
    """
    layers = level_config["layers"]
    by_name = {entry.get("name") or entry["config"]["name"]: entry for entry in layers}
    taken = set(by_name)
    made: dict[tuple, tuple | None] = {}

    def fresh_name(base: str) -> str:
        name, n = base, 0
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        return name

    def first_arg(node):
        args = node.get("args", []) if isinstance(node, dict) else []
        first = args[0] if args else None
        return first if isinstance(first, dict) and first.get("class_name") == "__keras_tensor__" else None

    def mask_of(tensor: dict | None, depth: int = 0):
        if tensor is None or depth > 10_000:
            return None
        name, node_index, output_index = tensor["config"]["keras_history"]
        key = (name, node_index, output_index)
        if key in made:
            return made[key]
        made[key] = None  # cycle guard
        entry = by_name.get(name)
        result = None
        if entry is not None and node_index < len(entry.get("inbound_nodes", [])):
            node = entry["inbound_nodes"][node_index]
            class_name = entry.get("class_name")
            source = MASK_SOURCES.get(class_name)
            explicit = node.get("kwargs", {}).get("mask") if isinstance(node, dict) else None
            if source is not None and first_arg(node) is not None:
                ops, result = source(entry, first_arg(node), fresh_name)
                position = layers.index(entry) + 1
                layers[position:position] = ops
                by_name.update({op["name"]: op for op in ops})
            elif is_recurrent(class_name):
                if output_index == 0 and returns_sequence_mask(entry):
                    result = _ref_of(explicit) if explicit else mask_of(first_arg(node), depth + 1)
            elif class_name in MASK_PASSTHROUGH:
                result = _ref_of(explicit) if explicit else mask_of(first_arg(node), depth + 1)
        made[key] = result
        return result

    for entry in list(layers):
        class_name = entry.get("class_name")
        if not (is_recurrent(class_name) or class_name in MASK_CONSUMERS_EXTRA):
            continue
        for node in entry.get("inbound_nodes", []):
            if not isinstance(node, dict) or node.get("kwargs", {}).get("mask") is not None:
                continue
            sequence = first_arg(node)
            ref = mask_of(sequence)
            if ref is not None:
                shape = sequence["config"].get("shape")
                node.setdefault("kwargs", {})["mask"] = mask_tensor(ref, shape)


def _ref_of(tensor) -> tuple | None:
    if isinstance(tensor, dict) and tensor.get("class_name") == "__keras_tensor__":
        return tuple(tensor["config"]["keras_history"])
    return None
