"""Registry from recurrent layer type to its state specification.

Adding a layer kind means adding a row here: every operation (inspect, expose, stream,
splice, verify) asks this registry rather than testing class names itself.

All functions take serialized layer configs ({"class_name": ..., "config": {...}}) so the
registry works on files without importing Keras.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Container, Sequence

Shape = tuple  # a shape without the batch dimension; None for unknown sizes


@dataclass(frozen=True)
class CellKind:
    """How one recurrent cell carries state.

    roles:        the state names, in the order Keras returns them.
    state_shapes: (cell_config, step_input_shape) -> one shape per role, batch excluded.
    weight_shapes:(cell_config, step_input_shape) -> {weight name: shape}.
    """

    roles: tuple[str, ...]
    state_shapes: Callable[[dict, Shape], list[Shape]]
    weight_shapes: Callable[[dict, Shape], dict[str, Shape]]


def _units(cfg: dict) -> int:
    return int(cfg["config"]["units"])


def _dense_states(count: int):
    return lambda cfg, _shape: [(_units(cfg),)] * count


def _gated_weights(gates: int, *, gru: bool = False):
    def shapes(cfg: dict, step_shape: Shape) -> dict[str, Shape]:
        units = _units(cfg)
        inner = cfg["config"]
        out = {
            "kernel": (step_shape[-1] if step_shape else None, gates * units),
            "recurrent_kernel": (units, gates * units),
        }
        if inner.get("use_bias", True):
            two_biases = gru and inner.get("reset_after", True)
            out["bias"] = (2, gates * units) if two_biases else (gates * units,)
        return out

    return shapes


def _conv_output_size(size, kernel, stride, dilation, padding):
    if size is None:
        return None
    if padding == "same":
        return math.ceil(size / stride)
    effective = (kernel - 1) * dilation + 1
    return (size - effective) // stride + 1


def _conv_state_shapes(cfg: dict, step_shape: Shape) -> list[Shape]:
    inner = cfg["config"]
    rank = len(inner["kernel_size"])
    channels_first = inner.get("data_format") == "channels_first"
    spatial = step_shape[1:] if channels_first else step_shape[:-1]
    if len(spatial) != rank:
        raise ValueError(
            f"ConvLSTM{rank}D expects {rank} spatial dims per step, received step shape {step_shape!r}"
        )
    out = tuple(
        _conv_output_size(size, k, s, d, inner.get("padding", "valid"))
        for size, k, s, d in zip(
            spatial,
            inner["kernel_size"],
            _as_tuple(inner.get("strides", 1), rank),
            _as_tuple(inner.get("dilation_rate", 1), rank),
        )
    )
    filters = int(inner["filters"])
    shape = (filters, *out) if channels_first else (*out, filters)
    return [shape, shape]


def _conv_weight_shapes(cfg: dict, step_shape: Shape) -> dict[str, Shape]:
    inner = cfg["config"]
    filters = int(inner["filters"])
    kernel = tuple(inner["kernel_size"])
    channels = step_shape[0] if inner.get("data_format") == "channels_first" else step_shape[-1]
    out = {
        "kernel": (*kernel, channels, 4 * filters),
        "recurrent_kernel": (*kernel, filters, 4 * filters),
    }
    if inner.get("use_bias", True):
        out["bias"] = (4 * filters,)
    return out


def _as_tuple(value, rank: int) -> tuple:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return (value,) * rank


def _cudnn_weights(gates: int):
    def shapes(cfg: dict, step_shape: Shape) -> dict[str, Shape]:
        units = _units(cfg)
        return {"kernel": (step_shape[-1] if step_shape else None, gates * units),
                "recurrent_kernel": (units, gates * units), "bias": (2 * gates * units,)}

    return shapes


LSTM_CELL = CellKind(("h", "c"), _dense_states(2), _gated_weights(4))
CUDNN_LSTM_CELL = CellKind(("h", "c"), _dense_states(2), _cudnn_weights(4))
CUDNN_GRU_CELL = CellKind(("h",), _dense_states(1), _cudnn_weights(3))
GRU_CELL = CellKind(("h",), _dense_states(1), _gated_weights(3, gru=True))
SIMPLE_CELL = CellKind(("h",), _dense_states(1), _gated_weights(1))
CONV_LSTM_CELL = CellKind(("h", "c"), _conv_state_shapes, _conv_weight_shapes)

# Layer class (also the class of a cell inside RNN) -> how its cell carries state.
CELL_KINDS: dict[str, CellKind] = {
    "LSTM": LSTM_CELL,
    "LSTMCell": LSTM_CELL,
    "GRU": GRU_CELL,
    "GRUCell": GRU_CELL,
    "SimpleRNN": SIMPLE_CELL,
    "SimpleRNNCell": SIMPLE_CELL,
    "ConvLSTM1D": CONV_LSTM_CELL,
    "ConvLSTM2D": CONV_LSTM_CELL,
    "ConvLSTM3D": CONV_LSTM_CELL,
    "ConvLSTMCell": CONV_LSTM_CELL,
    # Keras 2 layouts (tf_keras): same state structure, different weight layout.
    "CuDNNLSTM": CUDNN_LSTM_CELL,
    "CuDNNGRU": CUDNN_GRU_CELL,
}


@dataclass(frozen=True)
class StateSlot:
    """One state tensor of a recurrent layer: its role name, shape and the cell it belongs to."""

    role: str
    shape: Shape
    cell_path: str  # "" for a plain layer, "forward"/"backward", "cells[1]", ...


@dataclass(frozen=True)
class LayerKind:
    """How a recurrent layer type exposes state.

    cells:          (layer_config) -> [(role prefix, cell config, cell path)] in Keras state order.
    output_count:   (layer_config) -> how many non-state outputs a call returns.
    enable_states:  (layer_config) -> a copy of the config that returns its states.
    returns_states: (layer_config) -> whether the config already returns its states.
    """

    cells: Callable[[dict], list[tuple[str, dict, str]]]
    output_count: Callable[[dict], int]
    enable_states: Callable[[dict], dict]
    returns_states: Callable[[dict], bool]
    state_structure: Callable[[dict, list], list] = lambda _cfg, flat: list(flat)


def _copy(cfg: dict) -> dict:
    import copy

    return copy.deepcopy(cfg)


def _plain_cells(cfg):
    return [("", cfg, "")]


def _set_flags(cfg: dict, **flags) -> dict:
    new = _copy(cfg)
    new["config"].update(flags)
    return new


def _one_output(_cfg):
    return 1


def _returns_state(cfg):
    return bool(cfg["config"].get("return_state", False))


def _rnn_cells(cfg):
    cell = cfg["config"]["cell"]
    if cell.get("class_name") == "StackedRNNCells":
        return [
            (f"cell{i}_", sub, f"cells[{i}]") for i, sub in enumerate(cell["config"]["cells"])
        ]
    return [("", cell, "cell")]


def _bidirectional_cells(cfg):
    inner = cfg["config"]
    forward = inner["layer"]
    backward = inner.get("backward_layer") or forward
    out = []
    for prefix, layer, path in (("fw_", forward, "forward"), ("bw_", backward, "backward")):
        for sub_prefix, cell, cell_path in layer_kind(layer).cells(layer):
            out.append((prefix + sub_prefix, cell, f"{path}.{cell_path}".rstrip(".")))
    return out


def _bidirectional_outputs(cfg):
    return 2 if cfg["config"].get("merge_mode", "concat") is None else 1


def _bidirectional_enable(cfg):
    # Keras derives Bidirectional's return_state from the wrapped layers, which must agree.
    new = _copy(cfg)
    inner = new["config"]
    inner["layer"]["config"]["return_state"] = True
    if inner.get("backward_layer"):
        inner["backward_layer"]["config"]["return_state"] = True
    inner.pop("return_state", None)
    return new


def _bidirectional_returns(cfg):
    return bool(cfg["config"]["layer"]["config"].get("return_state", False))


PLAIN_RNN = LayerKind(
    _plain_cells,
    _one_output,
    lambda cfg: _set_flags(cfg, return_state=True),
    _returns_state,
)
def _rnn_state_structure(cfg, flat):
    """StackedRNNCells wants one entry per cell: a list for multi-state cells, else the tensor."""
    cell = cfg["config"]["cell"]
    if cell.get("class_name") != "StackedRNNCells":
        return list(flat)
    out, position = [], 0
    for sub in cell["config"]["cells"]:
        count = len(cell_kind(sub).roles)
        group = list(flat[position:position + count])
        out.append(group if count > 1 else group[0])
        position += count
    return out


CELL_RNN = LayerKind(
    _rnn_cells,
    _one_output,
    lambda cfg: _set_flags(cfg, return_state=True),
    _returns_state,
    _rnn_state_structure,
)
BIDIRECTIONAL = LayerKind(
    _bidirectional_cells, _bidirectional_outputs, _bidirectional_enable, _bidirectional_returns
)

# Layer class name -> layer kind. The Keras 2 names map to the same kinds.
LAYER_KINDS: dict[str, LayerKind] = {
    **{name: PLAIN_RNN for name in (
        "LSTM", "GRU", "SimpleRNN", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D",
        "CuDNNLSTM", "CuDNNGRU", "LSTMV1", "GRUV1",
    )},
    "RNN": CELL_RNN,
    "Bidirectional": BIDIRECTIONAL,
}


# Wrappers (tensorflow-model-optimization) that hold a layer under config["layer"] and
# call it with the same inputs: the wrapped layer's kind is theirs.
WRAPPER_CLASSES = frozenset({
    "PruneLowMagnitude", "ClusterWeights", "ClusterWeightsRNN", "ClusterWeightsMHA",
    "QuantizeWrapper", "QuantizeWrapperV2",
})


def unwrap(layer_config: dict) -> dict:
    """The recurrent layer inside any model-optimization wrappers (the config itself if none)."""
    while layer_config.get("class_name") in WRAPPER_CLASSES and isinstance(
            layer_config.get("config", {}).get("layer"), dict):
        layer_config = layer_config["config"]["layer"]
    return layer_config


def wrapper_of(layer_config: dict) -> str | None:
    name = layer_config.get("class_name")
    return name if name in WRAPPER_CLASSES else None


def _wrapped_kind(kind: LayerKind) -> LayerKind:
    """A wrapper's kind: the wrapped layer's, with edits applied to the wrapped config."""

    def enable(cfg):
        new = _copy(cfg)
        inner = new
        while inner.get("class_name") in WRAPPER_CLASSES:
            inner = inner["config"]["layer"]
        inner.update(kind.enable_states(inner))
        return new

    return LayerKind(
        cells=lambda cfg: kind.cells(unwrap(cfg)),
        output_count=lambda cfg: kind.output_count(unwrap(cfg)),
        enable_states=enable,
        returns_states=lambda cfg: kind.returns_states(unwrap(cfg)),
        state_structure=lambda cfg, flat: kind.state_structure(unwrap(cfg), flat),
    )


def is_recurrent(layer_config: dict) -> bool:
    return unwrap(layer_config).get("class_name") in LAYER_KINDS


def layer_kind(layer_config: dict) -> LayerKind:
    name = unwrap(layer_config).get("class_name")
    try:
        kind = LAYER_KINDS[name]
    except KeyError:
        raise KeyError(f"not a recurrent layer class, received: {name!r}") from None
    return _wrapped_kind(kind) if wrapper_of(layer_config) else kind


def cell_kind(cell_config: dict) -> CellKind:
    name = cell_config.get("class_name")
    try:
        return CELL_KINDS[name]
    except KeyError:
        raise KeyError(f"no state spec for recurrent cell class, received: {name!r}") from None


def state_slots(layer_config: dict, step_shape: Shape) -> list[StateSlot]:
    """Every state of a recurrent layer, in the order Keras returns them.

    step_shape is the shape of one timestep of the layer's input (batch and time excluded).
    For stacked cells, a cell's step input is the previous cell's output.
    """
    slots = []
    for prefix, cell, path in layer_kind(layer_config).cells(layer_config):
        kind = cell_kind(cell)
        shapes = kind.state_shapes(cell, step_shape)
        slots.extend(StateSlot(prefix + role, shape, path) for role, shape in zip(kind.roles, shapes))
        if path.startswith("cells["):
            step_shape = shapes[0]
    return slots


def weight_shapes(layer_config: dict, step_shape: Shape) -> dict[str, Shape]:
    """Weight shapes of a recurrent layer by '<cell path>/<weight name>'."""
    out = {}
    shape = step_shape
    for _prefix, cell, path in layer_kind(layer_config).cells(layer_config):
        kind = cell_kind(cell)
        for name, wshape in kind.weight_shapes(cell, shape).items():
            out[f"{path}/{name}" if path else name] = wshape
        if path.startswith("cells["):
            # A stacked cell reads the previous cell's output.
            shape = kind.state_shapes(cell, shape)[0]
    return out


def compute_dtype(layer_config: dict, default: str = "float32") -> str:
    """The dtype a layer computes (and returns states) in, from its dtype policy."""
    dtype = layer_config.get("config", {}).get("dtype", default)
    if isinstance(dtype, dict):
        dtype = dtype.get("config", {}).get("name", default)
    if not isinstance(dtype, str):
        return default
    if dtype.startswith("mixed_"):
        return dtype[len("mixed_"):]
    return dtype


def activation_name(identifier: object, known: Container[str] = ()) -> str:
    """Reduce a serialized activation (None, name, or Keras dict) to its name. A dict naming only
    its class is read as that activation when the class is one of `known` (the names the caller
    can tell apart: check/activations.py's NumPy table, translate's Keras 2 rescalings)."""
    if identifier is None:
        return "linear"
    if isinstance(identifier, str):
        return identifier
    if isinstance(identifier, dict):
        config = identifier.get("config")
        if isinstance(config, str):  # {"class_name": "function", "config": "tanh"}
            return config
        if isinstance(config, dict) and isinstance(config.get("name"), str):
            return config["name"]
        class_name = identifier.get("class_name")
        if isinstance(class_name, str) and class_name in known:
            return class_name
    raise ValueError(f"Cannot interpret activation identifier, received: {identifier!r}")


def sequence_step_shape(input_shape: Sequence | None) -> Shape | None:
    """(batch, time, *step) -> step; None when unknown."""
    if input_shape is None or len(input_shape) < 3:
        return None
    return tuple(input_shape[2:])
