"""The split, decided on the config: hand-over sites, the encoder's and the decoder step model's
configs (`split_config` -> SplitPlan of Handover). See the package doc.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass


from surgery.graph import registry
from surgery.errors import NotSupportedError
from surgery.graph.level import Call, Level, dialect_for, is_model_entry, top_level_entry
from surgery.graph.sites import Site, describe_site, iter_level_sites
from surgery.graph.rewire import (
    RewirePlan,
    StateTensor,
    ensure_free,
    make_stateless,
    plain_policy,
    require_known_shape,
)


ENCODER_FILE = "encoder.keras"
DECODER_FILE = "decoder_step.keras"
OPERATION = "split-seq2seq"


# --------------------------------------------------------------------------------------------
# plan


@dataclass(frozen=True)
class Handover:
    """One state handed from the encoder to the decoder."""

    name: str     # the encoder output and the decoder state input it feeds: "<site>_<role>_in"
    site: str     # the decoder site that starts from it
    role: str
    source: str   # what computes it in the training model, e.g. "encoder_lstm_h"
    shape: tuple
    dtype: str

    def as_dict(self) -> dict:
        return {"name": self.name, "decoder_site": self.site, "role": self.role, "source": self.source,
                "shape": [None, *self.shape], "dtype": self.dtype}


@dataclass(frozen=True)
class SplitPlan:
    encoder_inputs: tuple[str, ...]
    decoder_inputs: tuple[str, ...]     # the original inputs the decoder step reads (one step of each)
    original_outputs: tuple[str, ...]
    handovers: tuple[Handover, ...]     # = the encoder's outputs, in order
    decoder_sites: tuple[str, ...]      # every recurrent site on the decoder side, in order
    zero_start: tuple[str, ...]         # decoder sites that start from zeros (not handed over)
    encoder_plan: RewirePlan            # outputs: the handed-over states
    decoder_plan: RewirePlan            # inputs: state inputs; outputs: state outputs (same order)

    def as_dict(self) -> dict:
        return {
            "encoder_inputs": list(self.encoder_inputs),
            "decoder_inputs": list(self.decoder_inputs),
            "original_outputs": list(self.original_outputs),
            "handover": [h.as_dict() for h in self.handovers],
            "decoder_sites": list(self.decoder_sites),
            "zero_start": list(self.zero_start),
            "decoder_state_inputs": [s.as_dict() for s in self.decoder_plan.inputs],
            "decoder_state_outputs": [s.as_dict() for s in self.decoder_plan.outputs],
        }


NodeKey = tuple  # (layer name, call index)


def _node_tensors(level: Level, node: dict, *, skip_initial_state: bool = False):
    dialect = level.dialect
    yield from dialect.iter_tensors(node.get("args", []))
    for key, value in (node.get("kwargs") or {}).items():
        if skip_initial_state and key == "initial_state":
            continue
        yield from dialect.iter_tensors(value)


def _upstream(level: Level, refs, cut: frozenset = frozenset()) -> set:
    """Every call node the given tensors depend on (including their own nodes).

    `cut`: nodes whose `initial_state` edges are not followed.
    """
    seen: set = set()
    stack = [(ref[0], ref[1]) for ref in refs]
    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        if not level.has_layer(key[0]):
            raise NotSupportedError(f"the model config references an unknown layer {key[0]!r}")
        nodes = level.layer(key[0]).get("inbound_nodes") or []
        if not nodes:  # an InputLayer
            continue
        node = nodes[key[1]]
        for tensor in _node_tensors(level, node, skip_initial_state=key in cut):
            ref = level.dialect.ref_of(tensor)
            stack.append((ref[0], ref[1]))
    return seen


def _has_recurrent_inside(level: Level, entry: dict) -> bool:
    nested = Level(copy.deepcopy(entry), level.dialect)
    return any(True for _ in iter_level_sites(nested))


def _is_recurrent_node(level: Level, key: NodeKey) -> bool:
    entry = level.layer(key[0])
    return registry.is_recurrent(entry) or (is_model_entry(entry) and _has_recurrent_inside(level, entry))


def _refs(structure) -> list[tuple]:
    if isinstance(structure, list) and len(structure) == 3 and isinstance(structure[0], str):
        return [tuple(structure)]
    if isinstance(structure, dict):
        return [tuple(ref) for ref in structure.values()]
    return [tuple(ref) for ref in structure or []]


def _recurrent_calls(level: Level) -> list[Call]:
    """Recurrent calls of this level in the documented site order (config order, calls in order)."""
    return [call for entry in level.layers if registry.is_recurrent(entry) for call in level.calls(entry)]


def _initial_state_tensors(level: Level, call: Call) -> list[dict]:
    initial = level.dialect.get_kwarg(call.node, "initial_state")
    return list(level.dialect.iter_tensors(initial)) if initial else []


def _describe(level: Level, call: Call) -> Site:
    return describe_site(level, call, "", ())


def _source_name(level: Level, ref: tuple) -> str:
    """A readable name for the tensor that computes a handed-over state."""
    entry = level.layer(ref[0])
    if registry.is_recurrent(entry):
        base = registry.layer_kind(entry).output_count(entry)
        site = _describe(level, Call(entry, ref[1]))
        if ref[2] >= base and ref[2] - base < len(site.states):
            return site.states[ref[2] - base].output_name
        return site.name if ref[2] == 0 else f"{site.name}[{ref[2]}]"
    name = ref[0] if ref[1] == 0 else f"{ref[0]}__{ref[1]}"
    return name if ref[2] == 0 else f"{name}[{ref[2]}]"


def split_config(model_config: dict, family: str = "keras3") -> tuple[dict, dict, SplitPlan]:
    """(encoder config, decoder step config, plan) from a serialized training model.

    Pure: the input config is not modified. Raises NotSupportedError when the model has no
    recurrent layer whose initial state is computed from another recurrent layer.
    """
    dialect = dialect_for(family)
    level = Level(top_level_entry(model_config), dialect)
    input_names = [ref[0] for ref in _refs(level.config["input_layers"])]
    output_refs = _refs(level.config["output_layers"])

    calls = _recurrent_calls(level)
    handover_calls: list[Call] = []
    looked = []
    for call in calls:
        tensors = _initial_state_tensors(level, call)
        site = _describe(level, call)
        if not tensors:
            looked.append(f"{site.name} (no initial_state)")
            continue
        refs = [dialect.ref_of(t) for t in tensors]
        feeding = _upstream(level, refs)
        if any(_is_recurrent_node(level, key) for key in feeding):
            handover_calls.append(call)
        else:
            looked.append(f"{site.name} (initial_state from {', '.join(sorted({r[0] for r in refs}))})")
    if not handover_calls:
        found = "; ".join(looked) if looked else "the model has no recurrent layer at its top level"
        raise NotSupportedError(
            "no encoder->decoder state hand-over found: looked for a recurrent layer whose initial_state "
            f"is computed from another recurrent layer's returned states; recurrent calls: {found}"
        )

    handover_keys = frozenset((c.layer_name, c.index) for c in handover_calls)
    cut_tensors = [t for c in handover_calls for t in _initial_state_tensors(level, c)]
    encoder_nodes = _upstream(level, [dialect.ref_of(t) for t in cut_tensors])
    circular = sorted(encoder_nodes & handover_keys)
    if circular:
        raise NotSupportedError(
            f"the initial state handed to a decoder layer depends on the decoder layer {circular[0][0]!r} "
            "itself; cannot separate an encoder from the decoder"
        )
    decoder_nodes = _upstream(level, output_refs, cut=handover_keys)
    shared = [key for key in sorted(decoder_nodes & encoder_nodes) if _is_recurrent_node(level, key)]
    if shared:
        raise NotSupportedError(
            f"the decoder side reads {shared[0][0]!r} (an encoder recurrent layer) other than through the "
            "initial state (attention over encoder outputs, or an output computed from the encoder); "
            "only a pure state hand-over can be split into an encoder and a decoder step model"
        )

    decoder_calls: list[Call] = []
    for call in calls:
        key = (call.layer_name, call.index)
        if key not in decoder_nodes:
            continue
        site = _describe(level, call)
        if key not in handover_keys and _initial_state_tensors(level, call):
            raise NotSupportedError(
                f"decoder-side recurrent layer {site.path!r} takes its initial state from the graph but not "
                "from an encoder; a step model would reset it at every step"
            )
        if site.go_backwards or site.class_name.startswith("Bidirectional"):
            raise NotSupportedError(
                f"decoder-side recurrent layer {site.path!r} ({site.class_name}"
                f"{', go_backwards' if site.go_backwards else ''}) reads its sequence backwards: "
                "it cannot be run one step at a time"
            )
        decoder_calls.append(call)
    for key in sorted(decoder_nodes):
        entry = level.layer(key[0])
        if is_model_entry(entry) and _has_recurrent_inside(level, entry):
            raise NotSupportedError(
                f"the decoder side calls nested model {key[0]!r}, which holds recurrent layers; "
                "split-seq2seq supports recurrent decoder layers at the top level of the model only"
            )

    encoder_inputs = tuple(n for n in input_names if (n, 0) in encoder_nodes)
    decoder_inputs = tuple(n for n in input_names if (n, 0) in decoder_nodes)
    if not decoder_inputs:
        raise NotSupportedError("the decoder side reads no model input: there is nothing to feed it step by step")

    decoder_config, decoder_plan, handover_names = _decoder_config(
        model_config, dialect, decoder_calls, handover_keys, decoder_inputs, encoder_inputs, output_refs
    )
    encoder_config, handovers = _encoder_config(
        model_config, dialect, handover_calls, handover_names, encoder_inputs
    )
    encoder_plan = RewirePlan(
        outputs=tuple(StateTensor(h.name, h.site, h.role, h.shape, h.dtype) for h in handovers),
        inputs=(), skipped=(), original_outputs=0, original_inputs=len(encoder_inputs),
        weights_layout_changed=True,
    )
    zero_start = tuple(
        _describe(level, call).name for call in decoder_calls if (call.layer_name, call.index) not in handover_keys
    )
    plan = SplitPlan(
        encoder_inputs=encoder_inputs,
        decoder_inputs=decoder_inputs,
        original_outputs=tuple(ref[0] for ref in output_refs),
        handovers=tuple(handovers),
        decoder_sites=tuple(_describe(level, call).name for call in decoder_calls),
        zero_start=zero_start,
        encoder_plan=encoder_plan,
        decoder_plan=decoder_plan,
    )
    return encoder_config, decoder_config, plan


def _decoder_config(model_config, dialect, decoder_calls, handover_keys, decoder_inputs, encoder_inputs,
                    output_refs):
    level = Level(top_level_entry(model_config), dialect)
    state_inputs, state_outputs, in_refs, out_refs = [], [], [], []
    handover_names: dict = {}  # (layer, call) -> [state input names]
    for original_call in decoder_calls:
        entry = level.layer(original_call.layer_name)
        call = Call(entry, original_call.index)
        site = _describe(level, call)
        kind = registry.layer_kind(entry)
        base = kind.output_count(entry)
        policy = plain_policy(entry["config"].get("dtype", "float32"))
        tensors, names = [], []
        for k, state in enumerate(site.states):
            require_known_shape(site, state)
            ensure_free(level, state.input_name)
            ref = level.add_input(state.input_name, state.shape, state.dtype)
            in_refs.append(ref)
            tensors.append(dialect.tensor(ref, (None, *state.shape), state.dtype))
            names.append(state.input_name)
            state_inputs.append(StateTensor(state.input_name, site.name, state.role, state.shape, state.dtype))
            ensure_free(level, state.output_name)
            level.add_layer(dialect.identity_layer(
                state.output_name, policy, dialect.tensor((call.layer_name, call.index, base + k),
                                                          (None, *state.shape), state.dtype)))
            out_refs.append((state.output_name, 0, 0))
            state_outputs.append(StateTensor(state.output_name, site.name, state.role, state.shape, state.dtype))
        dialect.set_initial_state(call.node, kind.state_structure(entry, tensors))
        if not kind.returns_states(entry):
            entry["config"] = kind.enable_states(entry)["config"]
        make_stateless(entry)
        if (call.layer_name, call.index) in handover_keys:
            handover_names[(call.layer_name, call.index)] = names
    # One step at a time: a decoder-only sequence input must accept any time length.
    for name in decoder_inputs:
        if name in encoder_inputs:
            continue
        shape = level.layer(name)["config"].get("batch_shape")
        dtype = str(level.layer(name)["config"].get("dtype", "float32"))
        is_sequence = shape and (len(shape) >= 3 or (len(shape) == 2 and "int" in dtype))
        if is_sequence and shape[1] is not None:
            shape[1] = None
    level.config["input_layers"] = [[n, 0, 0] for n in decoder_inputs] + [list(r) for r in in_refs]
    level.config["output_layers"] = [list(r) for r in output_refs] + [list(r) for r in out_refs]
    plan = RewirePlan(
        outputs=tuple(state_outputs), inputs=tuple(state_inputs), skipped=(),
        original_outputs=len(output_refs), original_inputs=len(decoder_inputs), weights_layout_changed=True,
    )
    return level.entry, plan, handover_names


def _encoder_config(model_config, dialect, handover_calls, handover_names, encoder_inputs):
    level = Level(top_level_entry(model_config), dialect)
    original = Level(top_level_entry(model_config), dialect)
    handovers, outputs = [], []
    for original_call in handover_calls:
        call = Call(original.layer(original_call.layer_name), original_call.index)
        site = _describe(original, call)
        policy = plain_policy(call.entry["config"].get("dtype", "float32"))
        tensors = _initial_state_tensors(original, call)
        names = handover_names[(call.layer_name, call.index)]
        if len(tensors) != len(site.states):
            raise NotSupportedError(
                f"{site.path!r} gets {len(tensors)} initial-state tensor(s) but has {len(site.states)} state(s)"
            )
        for tensor, state, name in zip(tensors, site.states, names):
            ensure_free(level, name)
            source = dialect.tensor(dialect.ref_of(tensor), (None, *state.shape), state.dtype)
            level.add_layer(dialect.identity_layer(name, policy, source))
            outputs.append([name, 0, 0])
            handovers.append(Handover(name, site.name, state.role, _source_name(original, dialect.ref_of(tensor)),
                                      state.shape, state.dtype))
    refs = [[n, 0, 0] for n in encoder_inputs]
    # One input stays a single tensor (not a list of one), as in a single-input training model.
    level.config["input_layers"] = refs[0] if len(refs) == 1 else refs
    level.config["output_layers"] = outputs
    return level.entry, handovers


# --------------------------------------------------------------------------------------------
# live models
