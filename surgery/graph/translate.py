"""Translate a Keras 2 (tf.keras / tf_keras) model config into Keras 3: the pure part.

Keras 3 rejects many Keras 2 configs (`time_major`, CuDNNLSTM/CuDNNGRU layers, ...). The
translation rewrites the config (dropping arguments Keras 3 does not know when they hold
their harmless Keras 2 defaults, refusing them otherwise) and says how each layer's weights
change on the way (CuDNN layouts converted as tf.keras itself did; Keras-2-only activations
folded into the weights feeding them). Building the Keras 3 model and moving the weights
is surgery/ops/translate.py.
"""

from __future__ import annotations

import copy
import inspect as pyinspect

import numpy as np

from surgery.graph import layouts
from surgery.errors import NotSupportedError, UnreadableModelError
from surgery.graph.level import KERAS3, is_model_entry, walk_values
from surgery.graph.masks import add_explicit_masks
from surgery.graph.registry import LAYER_KINDS, activation_name, is_recurrent

# Keras 2 arguments Keras 3 does not accept, with the value that makes dropping them exact.
KERAS2_ONLY_DEFAULTS = {
    "time_major": False,
    "implementation": None,   # a speed hint only; any value computes the same function
    "reset_dropout_mask": None,
    "reset_recurrent_dropout_mask": None,
    "enable_caching_device": None,
}

# Keras 2 classes with no Keras 3 counterpart -> (Keras 3 class, arguments that make it equal).
RENAMED_CLASSES = {
    "CuDNNLSTM": ("LSTM", {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True,
                           "unit_forget_bias": True}),
    "CuDNNGRU": ("GRU", {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True,
                         "reset_after": True}),
}
CUDNN_GATES = {"CuDNNLSTM": 4, "CuDNNGRU": 3}

_LAYER_BASE_ARGS = {"name", "trainable", "dtype", "autocast", "input_dim", "input_shape",
                    "batch_input_shape", "batch_shape", "input_length"}


# Activations whose Keras 2 meaning is the Keras 3 one applied to a scaled input:
# Keras 2 hard_sigmoid(x) = clip(0.2x + 0.5, 0, 1) = Keras 3 hard_sigmoid(1.2x)
# (relu6(x + 3) / 6). Folding the scale into the weights that feed the activation keeps
# the translated file plain Keras 3: it loads without this package.
KERAS2_INPUT_SCALES = {"hard_sigmoid": 1.2}

# Layer class -> the activation argument applied to each gate block along the last axis of
# every weight (kernel, recurrent kernel, bias), in gate order; each block's pre-activation
# is linear in exactly those columns, so scaling them scales what the activation sees.
GATE_ACTIVATIONS = {
    "LSTM": ("recurrent_activation", "recurrent_activation", "activation", "recurrent_activation"),
    "GRU": ("recurrent_activation", "recurrent_activation", "activation"),
    "SimpleRNN": ("activation",),
    "Dense": ("activation",),
    "Conv1D": ("activation",),
    "Conv2D": ("activation",),
    "Conv3D": ("activation",),
}
for _name in ("LSTM", "GRU", "SimpleRNN"):
    GATE_ACTIVATIONS[f"{_name}Cell"] = GATE_ACTIVATIONS[_name]
for _rank in (1, 2, 3):
    GATE_ACTIVATIONS[f"ConvLSTM{_rank}D"] = GATE_ACTIVATIONS["LSTM"]
# ... where `activation` is also applied to a state (LSTM: h = o * act(c)): no weight
# feeds it, so a Keras-2-only activation there cannot be folded.
STATE_ACTIVATIONS = frozenset({"LSTM", "LSTMCell", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"})
_ACTIVATION_KEYS = ("activation", "recurrent_activation")

# (weight count, per-gate scales) for each sub-layer, in weight order.
FoldPlan = list[tuple[int, tuple[float, ...]]]


# What a refusal tells the user to do; callers name their own command's option.
DEFAULT_REMEDY = "keep the model in the Keras 2 family"


def translate_config(config: dict, keras_layers, *, remedy: str = DEFAULT_REMEDY
                     ) -> tuple[dict, list[str], dict[str, str], dict[str, FoldPlan]]:
    """(Keras 3 config, notes on what changed, {layer name: original CuDNN class},
    {layer name: weight scales that keep a Keras-2-only activation's meaning}).
    keras_layers: Keras 3's layer namespace (`keras.layers`), which says the built-in classes
    and the arguments each accepts. remedy: the end of a refusal's message (e.g. "omit --to keras3")."""
    new = copy.deepcopy(config)
    notes: list[str] = []
    cudnn: dict[str, str] = {}
    folds = _activation_folds(new, notes, remedy)
    for item in list(walk_values(new)):
        if isinstance(item, dict) and isinstance(item.get("config"), dict) and "class_name" in item:
            _translate_layer(keras_layers, item, notes, cudnn, remedy)
    for item in list(walk_values(new)):
        if isinstance(item, dict) and item.get("class_name") == "Sequential":
            _explicit_sequential_input(item["config"])
    _keras3_modules(keras_layers, new)
    for item in list(walk_values(new)):
        if isinstance(item, dict) and isinstance(item.get("config", {}).get("layers"), list):
            # tf_keras addresses a nested model's n-th call as node n+1, Keras 3 as node n.
            nested = {entry.get("name") for entry in item["config"]["layers"] if is_model_entry(entry)}
            for entry in item["config"]["layers"]:
                for node in entry.get("inbound_nodes") or []:
                    for tensor in node if isinstance(node, list) else []:
                        if isinstance(tensor, list) and len(tensor) >= 3 and tensor[0] in nested:
                            tensor[1] = max(tensor[1] - 1, 0)
    for item in list(walk_values(new)):
        if isinstance(item, dict) and isinstance(item.get("inbound_nodes"), list):
            item["inbound_nodes"] = [_keras3_node(item, node) for node in item["inbound_nodes"]]
            # Keras 2 build configs list every input's shape (states too); the calls build the layers.
            item.pop("build_config", None)
    for item in list(walk_values(new)):
        if isinstance(item, dict) and item.get("class_name") in ("Functional", "Model") \
                and isinstance(item.get("config", {}).get("layers"), list):
            # tf_keras keeps implicit masks when initial states are passed; Keras 3 does not.
            add_explicit_masks(item["config"], lambda name: name in LAYER_KINDS)
    if new.get("class_name") in ("Functional", "Model"):
        new.update({"module": "keras.src.models.functional", "class_name": "Functional",
                    "registered_name": "Functional"})
    elif new.get("class_name") == "Sequential":
        new.update({"module": "keras", "registered_name": None})
    return new, notes, cudnn, folds


def _activation_folds(config: dict, notes: list, remedy: str = DEFAULT_REMEDY) -> dict[str, FoldPlan]:
    """Per leaf layer (by name), the weight scales that make its Keras-2-only activations
    compute their Keras 2 values under the Keras 3 names; refuses those it cannot fold."""
    folds: dict[str, FoldPlan] = {}
    covered: set[int] = set()
    for item in list(walk_values(config)):
        layers = item.get("config", {}).get("layers") if isinstance(item, dict) else None
        if not isinstance(layers, list):
            continue
        for entry in layers:
            if isinstance(entry, dict) and not is_model_entry(entry):
                plan = _fold_plan(entry, covered)
                if plan and any(scale != 1.0 for _, scales in plan for scale in scales):
                    name = entry.get("config", {}).get("name") or entry.get("name")
                    folds[name] = plan
                    notes.append(f"{name}: Keras 2 hard_sigmoid kept exact as Keras 3 hard_sigmoid "
                                 "on gate inputs scaled by 1.2 (the weights feeding it)")
    for item in walk_values(config):
        cfg = item.get("config") if isinstance(item, dict) else None
        if isinstance(cfg, dict) and id(cfg) not in covered:
            for key in _ACTIVATION_KEYS:
                if key in cfg and _keras2_scale(cfg[key]) != 1.0:
                    raise NotSupportedError(
                        f"layer {cfg.get('name', item.get('class_name'))!r} ({item.get('class_name')}) "
                        f"has {key}={activation_name(cfg[key], KERAS2_INPUT_SCALES)!r}, whose Keras 2 meaning "
                        f"(0.2x + 0.5, clipped) Keras 3 has no name for here; {remedy}")
    return folds


def _keras2_scale(identifier) -> float:
    try:
        return KERAS2_INPUT_SCALES.get(activation_name(identifier, KERAS2_INPUT_SCALES), 1.0)
    except ValueError:  # a custom activation: Keras resolves it, nothing to rescale
        return 1.0


def _fold_plan(item: dict, covered: set) -> FoldPlan | None:
    """The fold plan of one serialized layer or cell, or None when some Keras-2-only
    activation inside it cannot be folded (the caller then refuses it by name)."""
    name, cfg = item.get("class_name"), item.get("config")
    if not isinstance(cfg, dict):
        return None
    if name in GATE_ACTIVATIONS:
        if name in STATE_ACTIVATIONS and _keras2_scale(cfg.get("activation")) != 1.0:
            return None
        covered.add(id(cfg))
        count = 2 if name not in ("Dense", "Conv1D", "Conv2D", "Conv3D") else 1
        count += bool(cfg.get("use_bias", True))
        return [(count, tuple(_keras2_scale(cfg.get(key)) for key in GATE_ACTIVATIONS[name]))]
    children = _FOLD_CHILDREN.get(name)
    if children is None:
        return []
    plans = [_fold_plan(child, covered) for child in children(cfg)]
    if any(plan is None for plan in plans):
        return None
    covered.add(id(cfg))
    return [part for plan in plans for part in plan]


def _bidirectional_children(cfg: dict) -> list[dict]:
    forward = cfg.get("layer", {})
    # Without a backward_layer Keras copies the forward config (go_backwards flipped).
    return [forward, cfg.get("backward_layer") or forward]


# Wrappers: the sub-layers whose weights they hold, in weight order.
_FOLD_CHILDREN = {
    "Bidirectional": _bidirectional_children,
    "RNN": lambda cfg: [cfg.get("cell", {})],
    "StackedRNNCells": lambda cfg: list(cfg.get("cells", [])),
    "TimeDistributed": lambda cfg: [cfg.get("layer", {})],
}


def apply_fold(plan: FoldPlan, values: list[np.ndarray]) -> list[np.ndarray]:
    """Scale each weight's gate blocks (last axis) by the plan's per-gate factors."""
    out, position = [], 0
    for count, scales in plan:
        for value in values[position:position + count]:
            value = np.asarray(value)
            block = value.shape[-1] // len(scales)
            factors = np.repeat(np.asarray(scales, dtype=np.float64), block)
            out.append((value * factors).astype(value.dtype))
        position += count
    if position != len(values):
        raise UnreadableModelError(f"activation fold expected {position} weights, found {len(values)}")
    return out


def _explicit_sequential_input(config: dict) -> None:
    """Keras 2.x Sequential configs put batch_input_shape on the first layer; Keras 3 would
    read it as an input shape (one dimension too many), so it becomes an InputLayer."""
    layers = config.get("layers") or []
    if not layers or layers[0].get("class_name") == "InputLayer":
        return
    first = layers[0]["config"]
    shape = first.pop("batch_input_shape", None)
    if shape is None:
        return
    dtype = first.get("dtype") if isinstance(first.get("dtype"), str) else "float32"
    layers.insert(0, {"class_name": "InputLayer",
                      "config": {"batch_shape": shape, "dtype": dtype, "name": f"{first.get('name', 'layer')}_input"}})


def _keras3_modules(keras_layers, config: dict) -> None:
    """Name the module of every built-in layer (Keras <= 2.12 wrote none). Keras 3's wrappers
    (Bidirectional, TimeDistributed) look their inner layer up by its module, in a Functional
    model as in a Sequential one, and cannot find a module-less LSTM."""
    for item in walk_values(config):
        if (isinstance(item, dict) and isinstance(item.get("config"), dict) and "module" not in item
                and isinstance(getattr(keras_layers, str(item.get("class_name")), None), type)):
            item.update({"module": "keras.layers", "registered_name": None})
        # Read by Keras 3's current loader, which refuses it; the InputLayer holds the shape.
        if isinstance(item, dict) and item.get("class_name") != "InputLayer" and isinstance(item.get("config"), dict):
            item["config"].pop("batch_input_shape", None)


def _translate_layer(keras_layers, item: dict, notes: list, cudnn: dict, remedy: str = DEFAULT_REMEDY) -> None:
    name = item.get("class_name")
    cfg = item["config"]
    if name in RENAMED_CLASSES:
        target, fixed = RENAMED_CLASSES[name]
        cudnn[cfg.get("name", "?")] = name
        item["class_name"] = target
        cfg.update(fixed)
        notes.append(f"{cfg.get('name')}: {name} -> {target} (weights converted from the cuDNN layout)")
        name = target
    if isinstance(cfg.get("dtype"), dict) and cfg["dtype"].get("class_name") == "Policy":
        cfg["dtype"] = cfg["dtype"].get("config", {}).get("name", "float32")
    layer_class = getattr(keras_layers, name, None)
    if layer_class is None or not isinstance(layer_class, type):
        return
    accepted = _accepted_arguments(layer_class)
    if accepted is None:
        return
    for key in sorted(set(cfg) - accepted - _LAYER_BASE_ARGS):
        if key not in KERAS2_ONLY_DEFAULTS:
            continue
        default = KERAS2_ONLY_DEFAULTS[key]
        value = cfg.pop(key)
        if default is not None and value != default:
            raise NotSupportedError(
                f"layer {cfg.get('name')!r} has {key}={value!r}, which Keras 3 cannot express; {remedy}"
            )
        notes.append(f"{cfg.get('name')}: dropped Keras 2 argument {key}={value!r}")


def _keras3_node(entry: dict, node):
    """A Keras 2 node ([[layer, node, tensor, kwargs], ...]) in Keras 3 form.

    Extra tensors of a recurrent call are its initial states; other multi-input calls take
    their tensors as one list. Keras rebuilds tensors from their history, so the recorded
    shape only has to be defined.
    """
    if not isinstance(node, list):
        return node
    tensors = [t for t in node if isinstance(t, list) and len(t) >= 3]
    kwargs = dict(tensors[0][3]) if tensors and len(tensors[0]) > 3 and isinstance(tensors[0][3], dict) else {}
    as_tensors = [KERAS3.tensor((t[0], t[1], t[2]), [None]) for t in tensors]
    if is_recurrent(entry) and len(as_tensors) > 1:
        return KERAS3.new_node([as_tensors[0]], {**kwargs, "initial_state": as_tensors[1:]})
    if len(as_tensors) == 1:
        return KERAS3.new_node(as_tensors, kwargs)
    return KERAS3.new_node([as_tensors], kwargs)


def _accepted_arguments(layer_class) -> set | None:
    try:
        parameters = pyinspect.signature(layer_class.__init__).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_KEYWORD for p in parameters.values()) and len(parameters) <= 2:
        return None
    return set(parameters)


def cudnn_to_keras(class_name: str, weights: list[np.ndarray]) -> list[np.ndarray]:
    """CuDNN weight layout -> Keras LSTM / GRU(reset_after=True) (see layouts.cudnn_to_keras)."""
    return layouts.cudnn_to_keras(weights, CUDNN_GATES[class_name])
