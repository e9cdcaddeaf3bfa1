"""Turn recurrent states into model outputs and/or inputs, on a serialized config.

This is the rewiring step shared by every operation that moves state across the model
boundary (expose-state, stream, splice). It edits configs only; callers decide whether the
result is written next to the untouched weights (file surgery) or rebuilt in Keras.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Iterable

from surgery.graph import registry
from surgery.errors import NotSupportedError, UsageError
from surgery.graph.level import Level, dialect_for, is_model_entry, top_level_entry
from surgery.graph.sites import Site, describe_site, find_sites, iter_level_sites, site_name


@dataclass(frozen=True)
class StateTensor:
    """A state that crosses the model boundary after surgery."""

    name: str
    site: str
    role: str
    shape: tuple
    dtype: str

    def as_dict(self) -> dict:
        return {"name": self.name, "site": self.site, "role": self.role,
                "shape": [None, *self.shape], "dtype": self.dtype}


@dataclass(frozen=True)
class RewirePlan:
    outputs: tuple[StateTensor, ...]
    inputs: tuple[StateTensor, ...]
    skipped: tuple[tuple[str, str], ...]
    original_outputs: int
    original_inputs: int
    weights_layout_changed: bool


@dataclass
class _Lifted:
    """A state on its way up from the level that owns it to the top level."""

    site: str
    role: str
    shape: tuple
    dtype: str
    policy: object
    ref: tuple | None = None  # output tensor at the current level
    implicit_mask: bool = False  # its layer call relies on a mask Keras fills in at run time


@dataclass
class _Context:
    select: Callable[[Site], bool]
    want_outputs: bool
    want_inputs: bool
    skipped: list = field(default_factory=list)
    layout_changed: bool = False


def make_selector(model_config: dict, family: str, layers: Iterable[str] | None) -> Callable[[Site], bool]:
    """A predicate over sites from user-given names: layer names, site names, paths or models."""
    if not layers:
        return lambda site: True
    wanted = set(layers)
    sites = find_sites(model_config, family)
    known = set()
    for site in sites:
        known.update({site.layer, site.name, site.path, *site.model_path})
    unknown = sorted(wanted - known)
    # Inside a nested model the config is shared by all its calls: a nested site's full name
    # selects that layer (for every call of the model).
    wanted |= {site.path for site in sites if site.name in wanted and site.model_path}
    if unknown:
        names = ", ".join(sorted({s.path for s in sites})) or "none"
        raise UsageError(f"no recurrent layer named {unknown[0]!r}; recurrent layers: {names}")

    def select(site: Site) -> bool:
        return bool(wanted & {site.layer, site.name, site.path, *site.model_path})

    return select


def rewire_states(
    model_config: dict,
    family: str = "keras3",
    layers: Iterable[str] | None = None,
    outputs: bool = True,
    inputs: bool = False,
) -> tuple[dict, RewirePlan]:
    """Return (new model config, plan) with the selected sites' states exposed.

    outputs: final states become extra model outputs after the original ones.
    inputs:  each selected site gets initial-state inputs after the original inputs.
    The input config is never modified.
    """
    if not outputs and not inputs:
        raise UsageError("nothing to do: both state outputs and state inputs are disabled")
    dialect = dialect_for(family)
    context = _Context(make_selector(model_config, family, layers), outputs, inputs)
    entry = top_level_entry(model_config)
    # A top-level Sequential becomes Functional; its weight paths ("layers/<class>") stay.
    level = Level(entry, dialect)
    original_outputs = level.original_output_count()
    original_inputs = _input_count(level)
    lifted_out, lifted_in = _rewire_level(level, context)
    if not lifted_out and not lifted_in:
        raise UsageError("no recurrent layer was selected: the model has no recurrent site to rewire")
    out_states = []
    for state in lifted_out:
        name = f"{state.site}_{state.role}"
        ensure_free(level, name)
        level.add_layer(dialect.identity_layer(name, plain_policy(state.policy),
                                               dialect.tensor(state.ref, (None, *state.shape), state.dtype)))
        level.add_output((name, 0, 0))
        out_states.append(StateTensor(name, state.site, state.role, state.shape, state.dtype))
    in_states = [
        StateTensor(f"{s.site}_{s.role}_in", s.site, s.role, s.shape, s.dtype) for s in lifted_in
    ]
    plan = RewirePlan(
        outputs=tuple(out_states),
        inputs=tuple(in_states),
        skipped=tuple(context.skipped),
        original_outputs=original_outputs,
        original_inputs=original_inputs,
        weights_layout_changed=context.layout_changed,
    )
    return entry, plan


def _input_count(level: Level) -> int:
    from surgery.graph.level import output_count

    return output_count(level.config["input_layers"])


def ensure_free(level: Level, name: str) -> None:
    if level.has_layer(name):
        raise NotSupportedError(
            f"the model already has a layer named {name!r}, the name a state would get; rename that layer"
        )


def plain_policy(policy):
    policy = copy.deepcopy(policy)
    if isinstance(policy, dict):
        policy.pop("shared_object_id", None)
    return policy


def _rewire_level(level: Level, context: _Context, model_path: tuple = ()) -> tuple[list[_Lifted], list[_Lifted]]:
    """Rewire one level in place; returns its states (refs and names local to this level)."""
    outs: list[_Lifted] = []
    ins: list[_Lifted] = []
    for entry in list(level.layers):
        if is_model_entry(entry):
            if _any_selected_inside(entry, level.dialect, context.select, model_path):
                o, i = _rewire_nested(level, entry, context, model_path)
                outs.extend(o)
                ins.extend(i)
        elif registry.is_recurrent(entry):
            o, i = _rewire_recurrent(level, entry, context, model_path)
            outs.extend(o)
            ins.extend(i)
    return outs, ins


def _any_selected_inside(entry: dict, dialect, select, model_path: tuple) -> bool:
    probe = Level(copy.deepcopy(entry), dialect)
    path = (*model_path, Level.name_of(entry))
    return any(select(site) for site in iter_level_sites(probe, "", path))


def _rewire_recurrent(level: Level, entry: dict, context: _Context, model_path: tuple):
    calls = level.calls(entry)
    sites = [describe_site(level, call, "", model_path) for call in calls]
    selected = [(call, site) for call, site in zip(calls, sites) if context.select(site)]
    if not selected:
        return [], []
    kind = registry.layer_kind(entry)
    base = kind.output_count(entry)
    policy = entry["config"].get("dtype", "float32")
    outs, ins = [], []
    if context.want_outputs and not kind.returns_states(entry):
        entry["config"] = kind.enable_states(entry)["config"]
    make_stateless(entry)
    for call, site in selected:
        if context.want_outputs:
            for k, state in enumerate(site.states):
                require_known_shape(site, state)
                outs.append(_Lifted(site.name, state.role, state.shape, state.dtype, policy,
                                    (call.layer_name, call.index, base + k)))
        if context.want_inputs:
            if site.fed_by_graph:
                context.skipped.append((site.name, "its initial state already comes from another layer"))
                continue
            tensors = []
            for state in site.states:
                require_known_shape(site, state)
                ref = level.add_input(level.unique_name(state.input_name), state.shape, state.dtype)
                tensors.append(level.dialect.tensor(ref, (None, *state.shape), state.dtype))
                ins.append(_Lifted(site.name, state.role, state.shape, state.dtype, policy, ref,
                                   implicit_mask=level.dialect.get_kwarg(call.node, "mask") is None))
            level.dialect.set_initial_state(call.node, kind.state_structure(entry, tensors))
    return outs, ins


def require_known_shape(site: Site, state) -> None:
    if any(dim is None for dim in state.shape):
        raise NotSupportedError(
            f"state {state.output_name!r} of {site.path!r} has an unknown shape {state.shape!r}: "
            "the layer's input shape is not recorded in the config"
        )


def make_stateless(entry: dict) -> None:
    """A stateful layer's carried state becomes explicit, so the layer itself stops carrying it."""
    inner = registry.unwrap(entry)["config"]
    for cfg in (inner, inner.get("layer", {}).get("config", {}), (inner.get("backward_layer") or {}).get("config", {})):
        if cfg.get("stateful"):
            cfg["stateful"] = False


def _rewire_nested(level: Level, entry: dict, context: _Context, model_path: tuple):
    dialect = level.dialect
    was_sequential = entry.get("class_name") == "Sequential"
    nested = Level(entry, dialect)  # converts a nested Sequential in place
    if was_sequential:
        # The weights file addresses containers by class: "sequential" becomes "functional".
        context.layout_changed = True
    outputs_before = nested.original_output_count()
    inputs_single = nested.input_refs_single()
    inner_outs, inner_ins = _rewire_level(nested, context, (*model_path, Level.name_of(entry)))
    for state in inner_outs:
        name = nested.unique_name(f"{state.site}_{state.role}")
        nested.add_layer(dialect.identity_layer(name, plain_policy(state.policy),
                                                dialect.tensor(state.ref, (None, *state.shape), state.dtype)))
        nested.add_output((name, 0, 0))
    entry.pop("build_config", None)
    _refuse_lost_masks(level, entry, inner_ins)
    outs, ins = [], []
    for call in level.calls(entry):
        prefix = site_name("", call.layer_name, call.index)
        for j, state in enumerate(inner_outs):
            node = call.index + dialect.nested_node_offset
            outs.append(_Lifted(f"{prefix}__{state.site}", state.role, state.shape, state.dtype,
                                state.policy, (call.layer_name, node, outputs_before + j)))
        tensors = []
        for state in inner_ins:
            site = f"{prefix}__{state.site}"
            ref = level.add_input(level.unique_name(f"{site}_{state.role}_in"), state.shape, state.dtype)
            tensors.append(dialect.tensor(ref, (None, *state.shape), state.dtype))
            ins.append(_Lifted(site, state.role, state.shape, state.dtype, state.policy, ref))
        if tensors:
            dialect.append_model_inputs(call.node, tensors, inputs_single, [s.ref[0] for s in inner_ins])
    return outs, ins


def _refuse_lost_masks(level: Level, entry: dict, inner_ins: list) -> None:
    """Keras fills a layer's mask in implicitly only while the layer gets one tensor argument.

    Inside a nested model called with a mask, a recurrent layer given an initial state would
    silently stop masking; refuse rather than change the model's numbers.
    """
    implicit = sorted({state.site for state in inner_ins if state.implicit_mask})
    masked_calls = [call for call in level.calls(entry) if level.dialect.get_kwarg(call.node, "mask") is not None]
    if implicit and masked_calls:
        raise NotSupportedError(
            f"cannot add state inputs to {implicit[0]!r} inside nested model {Level.name_of(entry)!r}: "
            "the model is called with a mask, which Keras stops passing on once an initial state is "
            "given; expose state outputs only (without --inputs) for this layer"
        )
