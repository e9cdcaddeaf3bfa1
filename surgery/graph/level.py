"""The editable view of a serialized functional model that every operation rewires.

A model config is a tree of *levels*: the top-level Functional model and every nested
Functional model inside it. Each level is a list of layer entries with call nodes that
reference tensors as (layer name, call index, output index). Surgery edits happen here,
on plain dicts, so that a `.keras` file can be rewritten without loading its weights and a
live Keras model can be rewritten through its own serialization.

The serialization dialect (Keras 3 vs Keras 2 / tf_keras node encoding) is the only
family-specific part and lives in `Dialect` objects.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any, Iterator

from surgery.errors import NotSupportedError

TensorRef = tuple  # (layer name, call index, output index)

_FUNCTIONAL = "Functional"
_SEQUENTIAL = "Sequential"
MODEL_CLASSES = (_FUNCTIONAL, _SEQUENTIAL, "Model")


def sanitize(name: str) -> str:
    """A state name fragment that survives Keras, SavedModel signatures and TFLite."""
    clean = re.sub(r"[^A-Za-z0-9_]", "_", str(name))
    if not clean or clean[0].isdigit():
        clean = "s_" + clean
    return clean


class Keras3Dialect:
    """Keras 3 encoding: nodes are {"args": [...], "kwargs": {...}} with __keras_tensor__ leaves."""

    family = "keras3"
    explicit_masks = True
    nested_node_offset = 0  # a nested model's n-th call is addressed as node n

    def tensor(self, ref: TensorRef, shape=None, dtype="float32") -> dict:
        return {
            "class_name": "__keras_tensor__",
            "config": {"shape": list(shape) if shape is not None else None, "dtype": dtype,
                       "keras_history": [ref[0], ref[1], ref[2]]},
        }

    def is_tensor(self, value) -> bool:
        return isinstance(value, dict) and value.get("class_name") == "__keras_tensor__"

    def ref_of(self, tensor: dict) -> TensorRef:
        return tuple(tensor["config"]["keras_history"])

    def first_input(self, node) -> dict | None:
        leaves = list(self.iter_tensors(node.get("args", [])))
        return leaves[0] if leaves else None

    def tensor_shape(self, tensor: dict):
        shape = tensor.get("config", {}).get("shape")
        return tuple(shape) if shape is not None else None

    def iter_tensors(self, value) -> Iterator[dict]:
        stack = [value]
        while stack:
            item = stack.pop()
            if self.is_tensor(item):
                yield item
            elif isinstance(item, dict):
                stack.extend(reversed(list(item.values())))
            elif isinstance(item, (list, tuple)):
                stack.extend(reversed(list(item)))

    def get_kwarg(self, node, key):
        return node.get("kwargs", {}).get(key)

    def has_state_inputs(self, node) -> bool:
        # Keras 3 passes initial states as the `initial_state` keyword, never positionally.
        return False

    def set_initial_state(self, node, tensors: list) -> None:
        node.setdefault("kwargs", {})["initial_state"] = tensors

    def new_node(self, args: list, kwargs: dict | None = None) -> dict:
        return {"args": args, "kwargs": kwargs or {}}

    def append_model_inputs(self, node, tensors: list, inputs_were_single: bool, names: list) -> None:
        """Extra inputs for a nested model call, in the structure of the call's inputs."""
        args = node["args"]
        first = args[0]
        if isinstance(first, dict) and not self.is_tensor(first):
            first.update(zip(names, tensors))
            return
        if inputs_were_single or self.is_tensor(first):
            # One tensor passed (even to a model declared with a one-element input list).
            args[0] = [first, *tensors]
        elif isinstance(first, list):
            first.extend(tensors)
        else:
            raise NotSupportedError(
                f"cannot add state inputs to a nested model called with a {type(first).__name__} of inputs"
            )
        # A mask passed to the nested model must keep the structure of its inputs.
        kwargs = node.get("kwargs", {})
        mask = kwargs.get("mask")
        if mask is not None:
            padding = [None] * len(tensors)
            kwargs["mask"] = [mask, *padding] if inputs_were_single else [*mask, *padding]

    def input_layer(self, name: str, shape, dtype: str) -> dict:
        return {
            "module": "keras.layers",
            "class_name": "InputLayer",
            "config": {"batch_shape": [None, *shape], "dtype": dtype, "sparse": False,
                       "ragged": False, "name": name, "optional": False},
            "registered_name": None,
            "name": name,
            "inbound_nodes": [],
        }

    def identity_layer(self, name: str, dtype_policy, source: dict) -> dict:
        return {
            "module": "keras.layers",
            "class_name": "Identity",
            "config": {"name": name, "trainable": False, "dtype": copy.deepcopy(dtype_policy)},
            "registered_name": None,
            "name": name,
            "inbound_nodes": [self.new_node([source])],
        }

    def input_shape_of_layer(self, entry) -> tuple | None:
        shape = (entry.get("build_config") or {}).get("input_shape")
        if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple)):
            shape = shape[0]  # a call with several inputs (initial states): the sequence comes first
        return tuple(shape) if isinstance(shape, (list, tuple)) and shape and not isinstance(shape[0], dict) else None

    def input_layer_shape(self, entry) -> tuple | None:
        cfg = entry.get("config", {})
        shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
        return tuple(shape) if shape is not None else None

    def input_layer_dtype(self, entry) -> str:
        dtype = entry.get("config", {}).get("dtype", "float32")
        return dtype if isinstance(dtype, str) else "float32"


class Keras2Dialect:
    """Keras 2 (tf.keras / tf_keras) encoding: a node is a list of [layer, node, tensor, kwargs].

    Initial states are extra positional entries of an RNN call, and masks are never recorded:
    tf_keras recomputes them and, unlike Keras 3, keeps them when initial states are given.
    """

    family = "keras2"
    explicit_masks = False
    nested_node_offset = 1  # node 0 of a nested model is its own construction

    def tensor(self, ref: TensorRef, shape=None, dtype="float32") -> list:
        return [ref[0], ref[1], ref[2], {}]

    def is_tensor(self, value) -> bool:
        return (isinstance(value, list) and len(value) in (3, 4) and isinstance(value[0], str)
                and isinstance(value[1], int) and isinstance(value[2], int))

    def ref_of(self, tensor: list) -> TensorRef:
        return (tensor[0], tensor[1], tensor[2])

    def first_input(self, node) -> list | None:
        entries = self._entries(node)
        return entries[0] if entries else None

    def tensor_shape(self, tensor) -> None:
        return None  # Keras 2 nodes carry no shapes

    def iter_tensors(self, value) -> Iterator[list]:
        yield from (entry for entry in self._entries(value) if self.is_tensor(entry))

    def _entries(self, node) -> list:
        if isinstance(node, dict):  # tf_keras may write Keras-3-style nodes in .keras files
            return list(KERAS3.iter_tensors(node.get("args", [])))
        return list(node) if isinstance(node, list) else []

    def get_kwarg(self, node, key):
        entries = self._entries(node)
        if entries and isinstance(entries[0], list) and len(entries[0]) == 4 and isinstance(entries[0][3], dict):
            return entries[0][3].get(key)
        return None

    def has_state_inputs(self, node) -> bool:
        return len(self._entries(node)) > 1

    def set_initial_state(self, node, tensors: list) -> None:
        node.extend(_flatten_list(tensors))

    def new_node(self, args: list, kwargs: dict | None = None) -> list:
        return [self.tensor(self.ref_of(a)) if self.is_tensor(a) else a for a in args]

    def append_model_inputs(self, node, tensors: list, inputs_were_single: bool, names: list) -> None:
        node.extend(tensors)

    def input_layer(self, name: str, shape, dtype: str) -> dict:
        return {
            "class_name": "InputLayer",
            "config": {"batch_input_shape": [None, *shape], "dtype": dtype, "sparse": False,
                       "ragged": False, "name": name},
            "name": name,
            "inbound_nodes": [],
        }

    def identity_layer(self, name: str, dtype_policy, source) -> dict:
        return {
            "class_name": "Identity",
            "config": {"name": name, "trainable": False, "dtype": copy.deepcopy(dtype_policy)},
            "name": name,
            "inbound_nodes": [[self.tensor(self.ref_of(source))]],
        }

    def input_shape_of_layer(self, entry) -> tuple | None:
        shape = KERAS3.input_shape_of_layer(entry)
        if shape is None:
            shape = entry.get("config", {}).get("batch_input_shape")
        return tuple(shape) if isinstance(shape, (list, tuple)) else None

    def input_layer_shape(self, entry) -> tuple | None:
        return KERAS3.input_layer_shape(entry)

    def input_layer_dtype(self, entry) -> str:
        return KERAS3.input_layer_dtype(entry)


def _flatten_list(value) -> list:
    if isinstance(value, list) and value and isinstance(value[0], list) and not isinstance(value[0][0], str):
        return [leaf for item in value for leaf in _flatten_list(item)]
    return list(value)


KERAS3 = Keras3Dialect()
KERAS2 = Keras2Dialect()
DIALECTS = {"keras3": KERAS3, "keras2": KERAS2}


def dialect_for(family: str):
    try:
        return DIALECTS[family]
    except KeyError:
        raise NotSupportedError(f"no rewiring dialect for model family {family!r}") from None


@dataclass
class Call:
    """One call of a layer inside a level: the layer entry and which of its nodes."""

    entry: dict
    index: int

    @property
    def node(self) -> dict:
        return self.entry["inbound_nodes"][self.index]

    @property
    def layer_name(self) -> str:
        return self.entry.get("name") or self.entry["config"]["name"]


def is_model_entry(entry: dict) -> bool:
    return entry.get("class_name") in MODEL_CLASSES and "layers" in entry.get("config", {})


class Level:
    """One functional model's config, editable in place (the caller owns a deep copy)."""

    def __init__(self, entry: dict, dialect):
        if entry.get("class_name") == _SEQUENTIAL:
            sequential_to_functional(entry, dialect)
        if entry.get("class_name") not in (_FUNCTIONAL, "Model") or "layers" not in entry.get("config", {}):
            raise NotSupportedError(
                f"model {entry.get('config', {}).get('name', '?')!r} is a subclassed "
                f"{entry.get('class_name')!r} with no functional graph in its config; only "
                "Functional and Sequential models can be rewired (rebuild it as a Functional model)"
            )
        self.entry = entry
        self.dialect = dialect
        self.config = entry["config"]
        self.layers: list[dict] = self.config["layers"]
        self._by_name = {self.name_of(e): e for e in self.layers}

    @staticmethod
    def name_of(entry: dict) -> str:
        return entry.get("name") or entry["config"]["name"]

    @property
    def name(self) -> str:
        return self.config.get("name", "model")

    def layer(self, name: str) -> dict:
        return self._by_name[name]

    def has_layer(self, name: str) -> bool:
        return name in self._by_name

    def calls(self, entry: dict) -> list[Call]:
        return [Call(entry, i) for i in range(len(entry.get("inbound_nodes", [])))]

    def unique_name(self, wanted: str) -> str:
        name, n = wanted, 1
        while name in self._by_name:
            n += 1
            name = f"{wanted}_{n}"
        return name

    def add_layer(self, entry: dict) -> None:
        name = self.name_of(entry)
        if name in self._by_name:
            raise NotSupportedError(f"layer name {name!r} already exists in model {self.name!r}")
        self.layers.append(entry)
        self._by_name[name] = entry

    # Inputs and outputs keep their original structure; extra ones turn it into a list.
    def input_refs_single(self) -> bool:
        return _is_leaf_ref(self.config["input_layers"])

    def add_input(self, name: str, shape, dtype: str) -> TensorRef:
        self.add_layer(self.dialect.input_layer(name, shape, dtype))
        ref = (name, 0, 0)
        self.config["input_layers"] = _append_ref(self.config["input_layers"], ref, name)
        return ref

    def add_output(self, ref: TensorRef) -> int:
        self.config["output_layers"] = _append_ref(self.config["output_layers"], ref, ref[0])
        return output_count(self.config["output_layers"]) - 1

    def original_output_count(self) -> int:
        return output_count(self.config["output_layers"])

    def input_shape_of_call(self, call: Call) -> tuple | None:
        """The shape of a call's main input: from the node, else the layer's build config."""
        shape = self.dialect.input_shape_of_layer(call.entry)
        if shape is None:
            first = self.dialect.first_input(call.node)
            shape = self.dialect.tensor_shape(first) if first is not None else None
        return shape


def _is_leaf_ref(value) -> bool:
    return isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)


def _append_ref(structure, ref: TensorRef, key: str):
    leaf = [ref[0], ref[1], ref[2]]
    if _is_leaf_ref(structure):
        return [structure, leaf]
    if isinstance(structure, dict):
        new = dict(structure)
        new[key] = leaf
        return new
    return [*structure, leaf]


def output_count(structure) -> int:
    if _is_leaf_ref(structure):
        return 1
    if isinstance(structure, dict):
        return len(structure)
    return len(structure)


def sequential_to_functional(entry: dict, dialect) -> None:
    """Turn a Sequential config into the equivalent Functional config, in place.

    Masks need no explicit edges: Keras recomputes mask propagation when it rebuilds the
    graph from the config.
    """
    config = entry["config"]
    layers = [copy.deepcopy(layer) for layer in config["layers"]]
    if layers and layers[0].get("class_name") == "InputLayer":
        input_entry = layers.pop(0)
        shape = dialect.input_layer_shape(input_entry)
        dtype = dialect.input_layer_dtype(input_entry)
        input_name = input_entry["config"].get("name", "input_layer")
    else:
        shape = _sequential_input_shape(config, layers)
        dtype = "float32"
        input_name = "input_layer"
    if shape is None:
        raise NotSupportedError(
            f"Sequential model {config.get('name')!r} has no input shape (it was never built); "
            "build it on an input before saving"
        )
    taken = {layer["config"]["name"] for layer in layers}
    while input_name in taken:
        input_name += "_0"
    new_layers = [dialect.input_layer(input_name, shape[1:], dtype)]
    new_layers[0]["config"]["batch_shape" if dialect.explicit_masks else "batch_input_shape"] = list(shape)
    previous = (input_name, 0, 0)
    # Keras rebuilds tensors from their history; the recorded shape must only be defined.
    # Weighted layers record their input shape; weightless ones are taken as shape-preserving.
    current_shape = list(shape)
    for layer in layers:
        name = layer["config"]["name"]
        current_shape = list(dialect.input_shape_of_layer(layer) or current_shape)
        layer["name"] = name
        layer["inbound_nodes"] = [dialect.new_node([dialect.tensor(previous, current_shape, dtype)])]
        new_layers.append(layer)
        previous = (name, 0, 0)
        dtype = "float32"
    entry["class_name"] = _FUNCTIONAL
    if dialect.explicit_masks:
        entry["module"] = "keras.src.models.functional"
        entry["registered_name"] = "Functional"
    else:
        entry.pop("module", None)
        entry.pop("registered_name", None)
    entry["config"] = {
        "name": config.get("name", "sequential"),
        "trainable": config.get("trainable", True),
        "layers": new_layers,
        "input_layers": [input_name, 0, 0],
        "output_layers": [previous[0], 0, 0],
    }
    entry.pop("build_config", None)
    if dialect.explicit_masks:
        from surgery.graph import masks  # only a Sequential turned functional needs mask edges

        masks.add_explicit_masks(entry["config"], is_recurrent_class)


def is_recurrent_class(class_name: str | None) -> bool:
    from surgery.graph.registry import LAYER_KINDS

    return class_name in LAYER_KINDS


def _sequential_input_shape(config: dict, layers: list) -> tuple | None:
    shape = config.get("build_input_shape")
    if shape is None and layers:
        shape = (layers[0].get("build_config") or {}).get("input_shape")
    if shape is None and layers:
        shape = layers[0]["config"].get("batch_input_shape") or layers[0]["config"].get("batch_shape")
    return tuple(shape) if shape is not None else None


def top_level_entry(model_config: dict) -> dict:
    """A deep copy of a serialized model, ready to be edited as the top level."""
    # A JSON round trip copies a 1000-layer config ~10x faster than deepcopy; anything it would
    # not reproduce exactly (tuples, NaN, non-JSON objects) takes deepcopy instead.
    try:
        copied = json.loads(json.dumps(model_config))
        if copied == model_config:
            return copied
    except (TypeError, ValueError, RecursionError):
        pass
    return copy.deepcopy(model_config)


def walk_values(value: Any) -> Iterator[Any]:
    stack = [value]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
