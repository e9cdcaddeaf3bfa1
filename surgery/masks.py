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
