"""split-seq2seq: a teacher-forced encoder-decoder becomes an encoder and a decoder *step* model.

The split is found from the graph itself, never from layer indices:

- A **hand-over site** is a call of a recurrent layer whose `initial_state` is computed from
  another recurrent layer (its returned states, or any tensor derived from a recurrent layer:
  a Dense "bridge", a Concatenate of Bidirectional states, ...).
- The **encoder** is everything upstream of those initial-state tensors: its inputs are the model
  inputs they depend on, its outputs are the initial states themselves, one per decoder state,
  in decoder-site order (the documented site order) and named like the decoder state input
  they feed: `<site>_<role>_in`.
- The **decoder step** model is everything upstream of the original outputs once the hand-over
  edges are cut. Every recurrent call on that side gets state inputs `<site>_<role>_in` (the
  hand-over sites in place of their original initial state; other decoder-side recurrent
  layers, which started from zeros, too) and state outputs `<site>_<role>`, in the same order,
  after the original inputs and outputs. Fed one time step at a time with the states it
  returned, it reproduces the teacher-forced outputs of the training model.

Both are config surgery on the model's own serialization (the engine's Level/dialect view),
then `expose.build_from_config` + `expose.transfer_weights`. Keras keeps only the part of the
graph that connects each model's inputs to its outputs.
"""

from __future__ import annotations

import concurrent.futures
import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from surgery.io import formats, saving

from surgery.graph import registry

from surgery.check import tolerance
from surgery.errors import NotSupportedError, UsageError, VerificationError
from surgery.graph.level import Call, Level, dialect_for, is_model_entry, top_level_entry
from surgery.io.quiet import import_keras, quiet
from surgery.graph.rewire import (
    RewirePlan,
    StateTensor,
    _ensure_free,
    _make_stateless,
    _plain_policy,
    _require_known_shape,
)
from surgery.graph.sites import Site, describe_site, iter_level_sites

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
        policy = _plain_policy(entry["config"].get("dtype", "float32"))
        tensors, names = [], []
        for k, state in enumerate(site.states):
            _require_known_shape(site, state)
            _ensure_free(level, state.input_name)
            ref = level.add_input(state.input_name, state.shape, state.dtype)
            in_refs.append(ref)
            tensors.append(dialect.tensor(ref, (None, *state.shape), state.dtype))
            names.append(state.input_name)
            state_inputs.append(StateTensor(state.input_name, site.name, state.role, state.shape, state.dtype))
            _ensure_free(level, state.output_name)
            level.add_layer(dialect.identity_layer(
                state.output_name, policy, dialect.tensor((call.layer_name, call.index, base + k),
                                                          (None, *state.shape), state.dtype)))
            out_refs.append((state.output_name, 0, 0))
            state_outputs.append(StateTensor(state.output_name, site.name, state.role, state.shape, state.dtype))
        dialect.set_initial_state(call.node, kind.state_structure(entry, tensors))
        if not kind.returns_states(entry):
            entry["config"] = kind.enable_states(entry)["config"]
        _make_stateless(entry)
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
        policy = _plain_policy(call.entry["config"].get("dtype", "float32"))
        tensors = _initial_state_tensors(original, call)
        names = handover_names[(call.layer_name, call.index)]
        if len(tensors) != len(site.states):
            raise NotSupportedError(
                f"{site.path!r} gets {len(tensors)} initial-state tensor(s) but has {len(site.states)} state(s)"
            )
        for tensor, state, name in zip(tensors, site.states, names):
            _ensure_free(level, name)
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


@dataclass
class Seq2SeqSplit:
    """`encoder, decoder = split_seq2seq(model)` unpacks the two models."""

    encoder: object
    decoder: object
    plan: SplitPlan

    def __iter__(self):
        return iter((self.encoder, self.decoder))


def split_seq2seq(model, *, custom_objects=None) -> Seq2SeqSplit:
    """Split a trained encoder-decoder Keras model into an encoder and a decoder step model.

    The input model is not modified; the new models get copies of its weights.
    """
    from surgery.ops.expose import build_from_config, transfer_weights

    keras = import_keras()
    if not isinstance(model, keras.Model):
        raise NotSupportedError(
            f"split-seq2seq works on Keras {keras.__version__.split('.')[0]} models; received a "
            f"{type(model).__module__}.{type(model).__name__}"
        )
    with quiet():
        # Through JSON so the live config has the exact shape of a saved one (lists, not tuples).
        config = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    encoder_config, decoder_config, plan = split_config(config, "keras3")
    encoder = build_from_config(encoder_config, custom_objects=custom_objects)
    decoder = build_from_config(decoder_config, custom_objects=custom_objects)
    transfer_weights(model, encoder)
    transfer_weights(model, decoder)
    return Seq2SeqSplit(encoder, decoder, plan)


def input_names(model) -> list[str]:
    return [t.name.split(":")[0] for t in model.inputs]


def _as_list(outputs) -> list:
    if isinstance(outputs, dict):
        return list(outputs.values())
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    return [outputs]


def _run(model, values: list) -> list[np.ndarray]:
    with quiet():
        out = model(values if len(values) > 1 else values[0], training=False)
    return [np.asarray(v) for v in _as_list(out)]


# --------------------------------------------------------------------------------------------
# the check: encoder, then the decoder one step at a time, against teacher forcing

@dataclass
class StepReport:
    """Stepped vs teacher-forced outputs, each judged by the tolerance policy (surgery.check.tolerance)."""

    checks: dict[str, tolerance.Comparison] = field(default_factory=dict)
    steps: int = 0
    batch: int = 0

    @property
    def output_diffs(self) -> dict[str, float]:
        return {name: c.max_abs_diff for name, c in self.checks.items()}

    @property
    def tolerances(self) -> dict[str, tolerance.Bound]:
        return {name: c.bound for name, c in self.checks.items()}

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks.values())

    def summary(self) -> str:
        verdict = "verified" if self.ok else "VERIFICATION FAILED"
        check = tolerance.worst(self.checks.values())
        return (f"{verdict}: encoder, then the decoder step model run {self.steps} step(s) one token at a time, "
                f"reproduce the teacher-forced outputs (batch {self.batch}): {check.describe()}")

    def as_dict(self) -> dict:
        return {"ok": self.ok, "output_max_abs_diff": self.output_diffs,
                "tolerance": {name: b.describe() for name, b in self.tolerances.items()},
                "checks": {name: c.as_dict() for name, c in self.checks.items()},
                "steps": self.steps, "batch": self.batch}


def sample_inputs(original, decoder, *, batch: int = 4, seed: int = 0) -> list[np.ndarray]:
    """verify.random_inputs for the training model, without padding on the decoder-only inputs.

    A masked (padded) decoder step repeats the previous output in a teacher-forced run but has
    no previous output in a one-step call; states are carried either way.
    """
    from surgery.check.verify import random_inputs

    values = random_inputs(original, batch=batch, seed=seed)
    fill = random_inputs(original, batch=batch, seed=seed + 1)
    stepped = set(input_names(decoder))
    for i, name in enumerate(input_names(original)):
        value = values[i]
        if name in stepped and value.ndim >= 2 and value.shape[0] > 1 and value.shape[1] >= 4:
            value[1, -2:] = fill[i][0, -2:]
    return values


def stepwise_outputs(encoder, decoder, values_by_name: dict, original_outputs: int) -> tuple[list, int]:
    """Run the encoder, then the decoder one time step at a time, teacher-forced with the given inputs.

    Returns (per original output: the list of per-step outputs, number of steps).
    """
    enc_out = _run(encoder, [values_by_name[n] for n in input_names(encoder)])
    states = dict(zip(encoder.output_names, enc_out))
    names = input_names(decoder)
    state_names = [n for n in names if n not in values_by_name]
    stepped = [n for n in names if n in values_by_name and n not in set(input_names(encoder))]
    if not stepped:
        stepped = [n for n in names if n in values_by_name]
    steps = {values_by_name[n].shape[1] for n in stepped}
    if len(steps) != 1:
        raise UsageError(f"decoder inputs {stepped} have different time lengths {sorted(steps)}")
    count = steps.pop()
    batch = values_by_name[stepped[0]].shape[0]
    shapes = {n: t.shape for n, t in zip(names, decoder.inputs)}
    for name in state_names:
        if name not in states:  # a decoder layer that starts from zeros
            states[name] = np.zeros((batch, *shapes[name][1:]), dtype=str(decoder.inputs[names.index(name)].dtype))
    collected: list[list] = [[] for _ in range(original_outputs)]
    for t in range(count):
        feed = []
        for name in names:
            if name in stepped:
                feed.append(values_by_name[name][:, t:t + 1])
            elif name in values_by_name:
                feed.append(values_by_name[name])
            else:
                feed.append(states[name])
        out = _run(decoder, feed)
        for j in range(original_outputs):
            collected[j].append(out[j])
        for name, value in zip(state_names, out[original_outputs:]):
            states[name] = value
    return collected, count


def check_stepwise(original, encoder, decoder, values: list | None = None, *, batch: int = 4,
                   seed: int = 0) -> StepReport:
    """Teacher-forced outputs of `original` vs. encoder + decoder step model run step by step."""
    if values is None:
        values = sample_inputs(original, decoder, batch=batch, seed=seed)
    by_name = dict(zip(input_names(original), values))
    reference = _run(original, values)
    collected, steps = stepwise_outputs(encoder, decoder, by_name, len(reference))
    report = StepReport(steps=steps, batch=values[0].shape[0])
    names = list(original.output_names)
    for j, expected in enumerate(reference):
        per_step = collected[j]
        if expected.ndim >= 2 and per_step[0].ndim == expected.ndim and per_step[0].shape[1] == 1 \
                and expected.shape[1] == steps:
            got = np.concatenate(per_step, axis=1)
        else:  # a last-step-only output
            got = per_step[-1]
        name = names[j] if j < len(names) else f"output_{j}"
        bound = tolerance.bound_for(expected.dtype, steps=steps)
        report.checks[name] = tolerance.compare(got, expected, bound)
    return report


# --------------------------------------------------------------------------------------------
# greedy decoding


def _state_pairs(decoder) -> tuple[list[str], list[tuple[str, str]]]:
    """(token inputs, [(state output, state input)]) of a decoder step model, by the naming rule."""
    names = input_names(decoder)
    outputs = list(decoder.output_names)
    pairs = [(out, f"{out}_in") for out in outputs if f"{out}_in" in names]
    state_inputs = {inp for _, inp in pairs}
    return [n for n in names if n not in state_inputs], pairs


def _encoder_feed(encoder, source):
    """The encoder's input from token ids (batch, T) or (T,), one-hot encoding when it wants floats."""
    if len(encoder.inputs) != 1:
        if not isinstance(source, (list, tuple)) or len(source) != len(encoder.inputs):
            raise UsageError(f"the encoder has {len(encoder.inputs)} inputs: pass a list of {len(encoder.inputs)} arrays")
        return [np.asarray(s) for s in source], False
    spec = encoder.inputs[0]
    rank = len(spec.shape)
    dtype = str(spec.dtype)
    x = np.asarray(source)
    one_hot = rank == 3 and np.issubdtype(x.dtype, np.integer) and "int" not in dtype
    token_rank = rank - 1 if one_hot else rank
    single = x.ndim == token_rank - 1
    if single:
        x = x[None]
    if x.ndim != token_rank:
        raise UsageError(f"source of shape {np.asarray(source).shape} does not fit the encoder input {tuple(spec.shape)}")
    if one_hot:
        depth = spec.shape[-1]
        if x.size and (x.min() < 0 or x.max() >= depth):
            raise UsageError(f"token ids must lie in 0..{depth - 1} for the one-hot encoder input")
        x = np.eye(depth, dtype=dtype)[x]
    else:
        x = x.astype(dtype)
    return [x], single


def greedy_decode(encoder, decoder, source_tokens, start_token: int, end_token: int, max_len: int):
    """Argmax decoding with an encoder and a decoder step model from `split_seq2seq`.

    source_tokens: token ids, one sequence (T,) or a batch (B, T); a one-hot encoder input gets
    them one-hot encoded. The decoder is fed `start_token`, then its own argmax, one step at a
    time, carrying its states, until it emits `end_token` or `max_len` tokens were produced.
    Returns the produced tokens without the end token: a list of ints for one sequence, a list
    of lists for a batch.
    """
    if max_len < 0:
        raise UsageError(f"max_len must be >= 0, received {max_len}")
    feed, single = _encoder_feed(encoder, source_tokens)
    batch = feed[0].shape[0]
    token_inputs, pairs = _state_pairs(decoder)
    if len(token_inputs) != 1:
        raise UsageError(f"greedy_decode needs a decoder with one token input; it has {token_inputs}")
    names = input_names(decoder)
    specs = dict(zip(names, decoder.inputs))
    token_name = token_inputs[0]
    token_spec = specs[token_name]
    states = dict(zip(encoder.output_names, _run(encoder, feed)))
    for _, name in pairs:
        if name not in states:
            states[name] = np.zeros((batch, *specs[name].shape[1:]), dtype=str(specs[name].dtype))
    outputs = list(decoder.output_names)
    positions = {name: outputs.index(out) for out, name in pairs}
    token = np.full((batch,), start_token, dtype=np.int64)
    produced = [[] for _ in range(batch)]
    done = np.zeros(batch, dtype=bool)
    for _ in range(max_len):
        if len(token_spec.shape) == 3:  # one-hot decoder input
            step = np.eye(token_spec.shape[-1], dtype=str(token_spec.dtype))[token][:, None, :]
        else:
            step = token[:, None].astype(str(token_spec.dtype))
        out = _run(decoder, [step if n == token_name else states[n] for n in names])
        probs = out[0]
        token = probs.reshape(batch, -1, probs.shape[-1])[:, -1].argmax(-1)
        for name, position in positions.items():
            states[name] = out[position]
        for row in range(batch):
            if not done[row]:
                if int(token[row]) == end_token:
                    done[row] = True
                else:
                    produced[row].append(int(token[row]))
        if done.all():
            break
    return produced[0] if single else produced


# --------------------------------------------------------------------------------------------
# files


@dataclass(frozen=True)
class SplitResult:
    outdir: Path
    encoder: Path
    decoder: Path
    encoder_manifest: Path
    decoder_manifest: Path
    plan: SplitPlan
    report: StepReport | None
    input_model: object | None = None  # state_io.Plain: state I/O reused, Keras 2 translated


def split_seq2seq_file(source, outdir=None, *, force: bool = False, verify: bool = True, unsafe: bool = False,
                       custom_objects: dict | None = None, progress=None) -> SplitResult:
    """Write OUTDIR/encoder.keras and OUTDIR/decoder_step.keras (atomically, with manifests).

    With `verify`, both files are reloaded before they are renamed into place and checked
    step by step against the training model's teacher-forced outputs; nothing is written when
    that check fails.
    """
    from surgery.io.loading import load_model
    from surgery.io.safety import ensure_artifact_safe

    step = progress or (lambda _message: None)
    artifact = formats.read_artifact(source)
    if artifact.weights_only:
        raise UsageError(f"{str(source)!r} holds weights only; split-seq2seq needs a full model file")
    ensure_artifact_safe(artifact, allow_unsafe=unsafe, trusted=(custom_objects or {}).keys())
    outdir = Path(outdir) if outdir is not None else saving.default_output_path(artifact.path, "split", "savedmodel")
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"output {str(outdir)!r} exists and is not a directory")
    saving.check_disjoint(artifact.path, outdir)  # never onto, into or around the input
    targets = [outdir / ENCODER_FILE, outdir / DECODER_FILE]
    if outdir.is_dir():
        for target in targets:
            saving.check_output(artifact.path, target, force, directory=False)
    from surgery.graph import state_io

    # State I/O another command added is taken off; a Keras 2 model is translated (and checked).
    plain = state_io.plain_model(artifact, keras3=True, unsafe=unsafe, custom_objects=custom_objects, progress=step)
    original = plain.model
    step("splitting")
    split = split_seq2seq(original, custom_objects=custom_objects)
    created = saving.make_output_directory(outdir)
    hasher = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    source_hash = hasher.submit(saving.sha256_of, artifact.path)
    hasher.shutdown(wait=False)
    report = None
    plan = split.plan
    try:
        with saving.staged_outputs(force=force) as outputs:
            enc_temp, dec_temp = outputs.temp(targets[0]), outputs.temp(targets[1])
            step("writing")
            saving.save_keras_model(split.encoder, enc_temp, "keras")
            saving.save_keras_model(split.decoder, dec_temp, "keras")
            if verify:
                step("verifying")
                encoder = load_model(enc_temp, unsafe=unsafe, custom_objects=custom_objects)
                decoder = load_model(dec_temp, unsafe=unsafe, custom_objects=custom_objects)
                report = check_stepwise(original, encoder, decoder)
                if not report.ok:
                    raise VerificationError(report.summary())
            manifests = {}
            for target, role, model, rewire_plan in ((targets[0], "encoder", split.encoder, plan.encoder_plan),
                                                     (targets[1], "decoder_step", split.decoder, plan.decoder_plan)):
                manifests[target] = saving.build_manifest(
                    artifact=target, fmt="keras", family="keras3", operation=OPERATION, plan=rewire_plan,
                    source=artifact.path, source_sha256=source_hash.result(),
                    model_inputs=input_names(model), model_outputs=list(model.output_names),
                    extra={"role": role, "split": plan.as_dict(), "input_model": plain.as_dict(),
                           "verification": report.as_dict() if report is not None else None},
                )
            placed = outputs.commit(manifests)  # both manifests, then both models
    except BaseException:
        if created:
            _remove_if_empty(outdir)
        raise
    return SplitResult(outdir, targets[0], targets[1], placed[targets[0]], placed[targets[1]], plan, report, plain)


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass


def format_result(result: SplitResult) -> str:
    """The human-readable report the CLI prints."""
    plan = result.plan
    enc, dec = plan.encoder_plan, plan.decoder_plan

    def states(items):
        return ", ".join(f"{s.name} (None, {', '.join(str(d) for d in s.shape)})" for s in items)

    lines = [
        f"wrote {result.encoder} and {result.encoder_manifest.name}",
        f"wrote {result.decoder} and {result.decoder_manifest.name}",
        *(result.input_model.report_lines() if result.input_model is not None else []),
        f"encoder:      {', '.join(plan.encoder_inputs)} -> {states(enc.outputs)}",
        f"decoder step: {', '.join(plan.decoder_inputs)} + {', '.join(s.name for s in dec.inputs)} "
        f"-> {', '.join(plan.original_outputs)} + {states(dec.outputs)}",
        "hand-over:    " + ", ".join(f"{h.source} -> {h.name}" for h in plan.handovers),
    ]
    if plan.zero_start:
        lines.append(f"note: {', '.join(plan.zero_start)} start(s) from zero states (not handed over by the encoder)")
    lines.append(result.report.summary() if result.report is not None else "not verified (--no-verify)")
    return "\n".join(lines)


def result_dict(result: SplitResult) -> dict:
    return {
        "ok": True,
        "outdir": str(result.outdir),
        "encoder": str(result.encoder),
        "decoder_step": str(result.decoder),
        "manifests": [str(result.encoder_manifest), str(result.decoder_manifest)],
        **result.plan.as_dict(),
        "verification": result.report.as_dict() if result.report is not None else None,
        "input_model": result.input_model.as_dict() if result.input_model is not None else None,
    }


__all__ = [
    "Handover", "SplitPlan", "Seq2SeqSplit", "StepReport", "SplitResult", "split_config", "split_seq2seq",
    "check_stepwise", "stepwise_outputs", "sample_inputs", "greedy_decode", "split_seq2seq_file",
    "format_result", "result_dict", "input_names", "ENCODER_FILE", "DECODER_FILE",
]
