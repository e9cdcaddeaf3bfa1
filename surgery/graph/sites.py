"""Find every recurrent *site* (one call of one recurrent layer) in a serialized model.

Works on configs only: no Keras import. The walk order (config layer order, depth first
into nested models, calls in order, states in Keras order) is the documented order of
state outputs and inputs everywhere in the tool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from surgery.graph import registry
from surgery.graph.level import Call, Level, dialect_for, is_model_entry, sanitize, top_level_entry


@dataclass(frozen=True)
class StateInfo:
    role: str
    output_name: str
    input_name: str
    shape: tuple
    dtype: str


@dataclass(frozen=True)
class Site:
    """One call of one recurrent layer, possibly inside nested models."""

    name: str                    # sanitized site name: "<model>__<layer>[__<call>]"
    layer: str                   # the layer's own name
    model_path: tuple[str, ...]  # names of the nested models that contain it, outermost first
    call_index: int              # which call of the (possibly shared) layer
    class_name: str              # e.g. "LSTM", "Bidirectional(LSTM)", "RNN(StackedRNNCells[LSTMCell,GRUCell])"
    units: int | None
    return_sequences: bool
    return_state: bool
    stateful: bool
    go_backwards: bool
    fed_by_graph: bool           # its initial state already comes from another tensor
    input_shape: tuple | None
    states: tuple[StateInfo, ...]
    weight_shapes: dict = field(default_factory=dict)
    wrapper: str | None = None   # e.g. "PruneLowMagnitude" for tfmot-wrapped layers
    model_calls: tuple[int, ...] = ()  # which call of each enclosing model, outermost first

    @property
    def path(self) -> str:
        return "/".join((*self.model_path, self.layer))


def site_name(prefix: str, layer_name: str, call_index: int) -> str:
    base = sanitize(layer_name)
    if call_index:
        base = f"{base}__{call_index}"
    return f"{prefix}__{base}" if prefix else base


def describe_class(layer_config: dict) -> str:
    layer_config = registry.unwrap(layer_config)
    name = layer_config.get("class_name", "?")
    inner = layer_config.get("config", {})
    if name == "Bidirectional":
        return f"Bidirectional({describe_class(inner['layer'])})"
    if name == "RNN":
        cell = inner.get("cell", {})
        if cell.get("class_name") == "StackedRNNCells":
            cells = ",".join(c.get("class_name", "?") for c in cell["config"]["cells"])
            return f"RNN(StackedRNNCells[{cells}])"
        return f"RNN({cell.get('class_name', '?')})"
    return name


def _first_cell_units(layer_config: dict) -> int | None:
    cells = registry.layer_kind(layer_config).cells(layer_config)
    cell = cells[0][1]["config"]
    return cell.get("units", cell.get("filters"))


def _flag(layer_config: dict, key: str) -> bool:
    layer_config = registry.unwrap(layer_config)
    inner = layer_config["config"]
    if layer_config.get("class_name") == "Bidirectional":
        inner = inner["layer"]["config"]
    return bool(inner.get(key, False))


def describe_site(level: Level, call: Call, prefix: str, model_path: tuple, model_calls: tuple = ()) -> Site:
    entry = call.entry
    name = site_name(prefix, call.layer_name, call.index)
    input_shape = level.input_shape_of_call(call)
    step = registry.sequence_step_shape(input_shape) or ()
    dtype = registry.compute_dtype(registry.unwrap(entry))
    try:
        slots = registry.state_slots(entry, step)
        weights = registry.weight_shapes(entry, step) if step else {}
    except (KeyError, TypeError, ValueError, IndexError):
        slots = [registry.StateSlot(role, (None,), "") for role in _roles_only(entry)]
        weights = {}
    states = tuple(
        StateInfo(slot.role, f"{name}_{slot.role}", f"{name}_{slot.role}_in", tuple(slot.shape), dtype)
        for slot in slots
    )
    initial = level.dialect.get_kwarg(call.node, "initial_state")
    return Site(
        name=name,
        layer=call.layer_name,
        model_path=model_path,
        call_index=call.index,
        class_name=describe_class(entry),
        units=_first_cell_units(entry),
        return_sequences=_flag(entry, "return_sequences"),
        return_state=registry.layer_kind(entry).returns_states(entry),
        stateful=_flag(entry, "stateful"),
        go_backwards=_flag(entry, "go_backwards"),
        fed_by_graph=bool(initial) or level.dialect.has_state_inputs(call.node),
        input_shape=input_shape,
        states=states,
        weight_shapes=weights,
        wrapper=registry.wrapper_of(entry),
        model_calls=model_calls,
    )


def _roles_only(entry: dict) -> list[str]:
    roles = []
    for prefix, cell, _path in registry.layer_kind(entry).cells(entry):
        roles.extend(prefix + role for role in registry.cell_kind(cell).roles)
    return roles


def iter_level_sites(
    level: Level, prefix: str = "", model_path: tuple = (), model_calls: tuple = ()
) -> Iterator[Site]:
    for entry in level.layers:
        if is_model_entry(entry):
            nested = Level(entry, level.dialect)
            for call in level.calls(entry):
                nested_prefix = site_name(prefix, call.layer_name, call.index)
                yield from iter_level_sites(
                    nested, nested_prefix, (*model_path, call.layer_name), (*model_calls, call.index)
                )
        elif registry.is_recurrent(entry):
            for call in level.calls(entry):
                yield describe_site(level, call, prefix, model_path, model_calls)


def find_sites(model_config: dict, family: str = "keras3") -> list[Site]:
    """Every recurrent site of a serialized model, in the documented order. A read-only walk:
    the config is copied only when a Sequential level must first become a functional one."""
    entry = top_level_entry(model_config) if _has_sequential_level(model_config) else model_config
    level = Level(entry, dialect_for(family))
    return list(iter_level_sites(level))


def _has_sequential_level(model_config: dict) -> bool:
    """Whether building the Levels of this config would edit it (Level turns a Sequential
    into a functional model in place); True for anything unexpected, which is then copied."""
    stack = [model_config]
    while stack:
        entry = stack.pop()
        if entry.get("class_name") == "Sequential":
            return True
        config = entry.get("config", {})
        layers = config.get("layers", []) if isinstance(config, dict) else None
        if not isinstance(layers, list):
            return True
        for layer in layers:
            if not isinstance(layer, dict) or not isinstance(layer.get("config", {}), dict):
                return True
            if is_model_entry(layer):
                stack.append(layer)
    return False
