"""Streaming: run a full-sequence recurrent model a few timesteps at a time, carrying state.

A *step model* is the original model rewired so that every recurrent site's initial state
is an input and its final state an output (the shared engine: `rewire.rewire_states` with
inputs and outputs), with the time axis of every sequence input fixed to `steps` (K).
Feeding K timesteps plus the states the previous call returned gives exactly the outputs
the full-sequence model gives for those K timesteps.

Config edits on top of the rewiring, all decided by a walk over the model's graph that
classifies each tensor as *sequence* (has a time axis), *per-step* (the value of one step:
the output of a `return_sequences=False` recurrent layer and what is computed from it),
*static* (does not depend on time) or *state* (a final state):

- every recurrent layer returns its sequence (`return_sequences=True`), so a layer that
  returned only its last step yields its output at each step; the per-step layers after it
  run on every step (rank-agnostic ones such as Dense as they are, the others wrapped in
  `TimeDistributed`, axes moved past the new time axis);
- a masked recurrent call gets its skipped steps right: Keras returns zeros for a masked
  step that opens a call, where the full sequence would repeat the previous output (the
  carried `h`), so the step model selects the incoming `h` there (built-in ops only);
- recurrent layers are unrolled for small fixed K (no while loop: faster, and TFLite gets
  plain builtin ops).

Layers that look across time (Bidirectional, go_backwards, pooling, attention, Flatten or a
fixed-length Reshape of the time axis, convolutions over time, ...) cannot stream: they
raise NotSupportedError naming the layer and the reason.

`state="internal"` keeps the states in variables of a `tf.Module` around the step model
(`reset_state`, `get_state`, `set_state`; SavedModel signatures `serving_default`, `reset`,
`read_state`, `assign_state`).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from surgery.graph import registry
from surgery.check import tolerance as tol_policy
from surgery.errors import NotSupportedError, UsageError, VerificationError
from surgery.graph.level import Level, dialect_for, is_model_entry, top_level_entry
from surgery.io.quiet import import_keras, import_tensorflow, quiet
from surgery.graph.rewire import RewirePlan, StateTensor, rewire_states
from surgery.graph.sites import find_sites
from surgery.check.verify import input_id_limits

SEQ = "sequence"      # has a time axis (batch, time, ...)
STEP = "per-step"     # one step's value (batch, ...) in the original; (batch, K, ...) when streaming
STATIC = "static"     # independent of time
STATE = "state"       # a recurrent layer's final state

STATE_MODES = ("external", "internal")
UNROLL_MAX_STEPS = 32

# Per-timestep layers that act elementwise or on the last axis whatever the rank: they work
# unchanged on (batch, K, ...) and on what used to be (batch, ...).
_RANK_AGNOSTIC = frozenset({
    "Dense", "Dropout", "GaussianNoise", "GaussianDropout", "AlphaDropout", "Activation",
    "ReLU", "LeakyReLU", "ELU", "Identity", "ActivityRegularization", "Rescaling",
})
# Per-timestep on a sequence (they never mix time steps).
_SEQUENCE_PER_STEP = _RANK_AGNOSTIC | {"Masking", "Embedding", "TimeDistributed", "SpatialDropout1D"}
# Layers the user declared as acting on each timestep (`stream --per-step LAYER`): a layer name,
# a class name or a registered name. A context variable, so every config the verification
# builds (step, full-sequence, any-length) sees the same declaration without a new argument.
_DECLARED_PER_STEP: contextvars.ContextVar[frozenset] = contextvars.ContextVar("per_step", default=frozenset())


@contextlib.contextmanager
def per_step_layers(names: Iterable[str]):
    """Within the block, streaming treats these layers (by layer, class or registered name) as
    acting on each timestep separately, as it does Dense or Masking."""
    token = _DECLARED_PER_STEP.set(frozenset(names))
    try:
        yield
    finally:
        _DECLARED_PER_STEP.reset(token)


def _declared_per_step(entry: dict) -> bool:
    declared = _DECLARED_PER_STEP.get()
    return bool(declared) and bool({Level.name_of(entry), entry.get("class_name"),
                                    entry.get("registered_name")} & declared)


def undeclared_layers(model_config, names: Iterable[str]) -> list[str]:
    """The names that match no layer, class or registered name anywhere in the config."""
    seen: set = set()

    def walk(value):
        if isinstance(value, dict):
            if "class_name" in value:
                seen.update({value.get("class_name"), value.get("registered_name"),
                             (value.get("config") or {}).get("name") if isinstance(value.get("config"), dict) else None})
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(model_config)
    return [name for name in names if name not in seen]
# Per-timestep unless their axis is the batch or time axis.
_AXIS_LAYERS = {"LayerNormalization": "axis", "BatchNormalization": "axis", "UnitNormalization": "axis",
                "Softmax": "axis", "Normalization": "axis"}
# Multi-input layers that combine tensors step by step.
_MERGE_LAYERS = frozenset({"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"})

# Layers that mix time steps, with the reason given to the user.
_ACROSS_TIME = {
    "Bidirectional": "it reads the sequence in both directions, so its output at a step depends on later steps",
    "GlobalAveragePooling1D": "it pools across all time steps",
    "GlobalMaxPooling1D": "it pools across all time steps",
    "GlobalAveragePooling2D": "it pools across the time axis",
    "GlobalMaxPooling2D": "it pools across the time axis",
    "AveragePooling1D": "it pools neighbouring time steps",
    "MaxPooling1D": "it pools neighbouring time steps",
    "Attention": "it attends across time steps",
    "AdditiveAttention": "it attends across time steps",
    "MultiHeadAttention": "it attends across time steps",
    "GroupedQueryAttention": "it attends across time steps",
    "Flatten": "it flattens the time axis into features, so it needs the whole sequence",
    "Conv1D": "it convolves across time steps",
    "SeparableConv1D": "it convolves across time steps",
    "DepthwiseConv1D": "it convolves across time steps",
    "Conv1DTranspose": "it convolves across time steps",
    "LocallyConnected1D": "it mixes neighbouring time steps",
    "Cropping1D": "it crops the time axis",
    "ZeroPadding1D": "it pads the time axis",
    "UpSampling1D": "it resamples the time axis",
    "RepeatVector": "it creates a time axis from a single vector",
    "Lambda": "it runs arbitrary code that may mix time steps",
}

# keras.ops layers found in functional configs (mask computations and the like).
_ELEMENTWISE_OPS = frozenset({
    "NotEqual", "Equal", "Greater", "GreaterEqual", "Less", "LessEqual", "LogicalAnd", "LogicalOr",
    "LogicalNot", "LogicalXor", "Cast", "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum",
    "Minimum", "Abs", "Negative", "Exp", "Log", "Sqrt", "Square", "Tanh", "Sigmoid", "Relu", "Where",
    "Clip", "Power", "Sign", "Round", "Floor", "Ceil",
})
_REDUCE_OPS = frozenset({"Any", "All", "Sum", "Mean", "Max", "Min", "Prod", "Argmax", "Argmin", "ExpandDims",
                         "Squeeze", "Softmax", "LogSoftmax"})


@dataclass(frozen=True)
class StreamPlan:
    """What the step model is: its signature names, which tensors carry state, what changed."""

    steps: int | None
    batch_size: int | None
    states: RewirePlan                  # state inputs (`<site>_<role>_in`) and outputs (`<site>_<role>`)
    sequence_inputs: tuple[str, ...]    # original inputs with a time axis
    static_inputs: tuple[str, ...]      # original inputs without one
    output_kinds: tuple[str, ...]       # per original output: SEQ, STEP or STATIC
    per_step_sites: tuple[str, ...]     # recurrent layers switched to return_sequences=True
    wrapped: tuple[str, ...]            # layers wrapped in TimeDistributed
    masked: tuple[str, ...]             # masked recurrent calls given the skipped-step fix
    unrolled: bool
    input_names: tuple[str, ...] = ()   # signature keys: original inputs, then state inputs
    output_names: tuple[str, ...] = ()  # signature keys: original outputs, then state outputs
    input_ranks: tuple[int, ...] = ()   # rank (with batch and time) of each original input
    input_shapes: tuple[tuple, ...] = ()   # every input of the step model, batch included
    output_shapes: tuple[tuple, ...] = ()  # every output of the step model, batch included

    @property
    def original_inputs(self) -> tuple[str, ...]:
        return self.input_names[: self.states.original_inputs]

    @property
    def original_outputs(self) -> tuple[str, ...]:
        return self.output_names[: self.states.original_outputs]

    @property
    def state_inputs(self) -> tuple[StateTensor, ...]:
        return self.states.inputs

    @property
    def state_outputs(self) -> tuple[StateTensor, ...]:
        return self.states.outputs

    def state_pairs(self) -> list[tuple[StateTensor, StateTensor]]:
        """(state input, state output) of each state, in state-output order."""
        by_key = {(s.site, s.role): s for s in self.states.inputs}
        return [(by_key[(s.site, s.role)], s) for s in self.states.outputs]

    def as_dict(self) -> dict:
        return {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "inputs": list(self.original_inputs),
            "outputs": list(self.original_outputs),
            "sequence_inputs": list(self.sequence_inputs),
            "static_inputs": list(self.static_inputs),
            "output_kinds": dict(zip(self.original_outputs, self.output_kinds)),
            "state_inputs": [s.as_dict() for s in self.states.inputs],
            "state_outputs": [s.as_dict() for s in self.states.outputs],
            "per_step_sites": list(self.per_step_sites),
            "wrapped_in_time_distributed": list(self.wrapped),
            "masked_sites": list(self.masked),
            "unrolled": self.unrolled,
        }


# --------------------------------------------------------------------------------------
# Config level: which tensors have a time axis, and the edits that make the model step
# --------------------------------------------------------------------------------------


def _ref_list(structure) -> list[tuple]:
    if isinstance(structure, list) and len(structure) == 3 and isinstance(structure[0], str):
        return [tuple(structure)]
    if isinstance(structure, dict):
        return [tuple(v) for v in structure.values()]
    return [tuple(item) for item in structure or []]


def _replace_refs(structure, old: tuple, new: tuple):
    if isinstance(structure, list) and len(structure) == 3 and isinstance(structure[0], str):
        return list(new) if tuple(structure) == old else structure
    if isinstance(structure, dict):
        return {k: _replace_refs(v, old, new) for k, v in structure.items()}
    return [_replace_refs(item, old, new) for item in structure]


def _where(path: tuple, name: str) -> str:
    return "/".join((*path, name))


def _refuse(path: tuple, entry: dict, reason: str) -> NotSupportedError:
    from surgery.graph.sites import describe_class

    return NotSupportedError(
        f"cannot stream layer {_where(path, Level.name_of(entry))!r} ({describe_class(entry)}): {reason}"
    )


def _rank_of(dialect, tensor) -> int | None:
    shape = dialect.tensor_shape(tensor)
    return len(shape) if shape is not None else None


@dataclass
class _Context:
    steps: int | None
    unroll: bool
    relax: bool = False  # only free the time axis (the original model at any length)
    per_step_sites: list = field(default_factory=list)
    wrapped: list = field(default_factory=list)
    masked: list = field(default_factory=list)


class _LevelStream:
    """Classifies the tensors of one level and edits it into a step level, in place."""

    def __init__(self, level: Level, context: _Context, path: tuple):
        self.level = level
        self.dialect = level.dialect
        self.context = context
        self.path = path
        self.kinds: dict[tuple, object] = {}  # (layer, call) -> kind, or {index: kind}
        self.layer_mode: dict[str, str] = {}  # layer -> "as-is" | "wrap" (must agree across calls)
        self.fixes: list = []  # masked recurrent calls to fix after the walk

    # -- kinds ---------------------------------------------------------------------------------
    def kind(self, ref: tuple) -> str | None:
        value = self.kinds.get((ref[0], ref[1]))
        if isinstance(value, dict):
            return value.get(ref[2], value.get("*"))
        return value

    def tensors(self, value) -> list[dict]:
        return list(self.dialect.iter_tensors(value))

    # -- the walk ------------------------------------------------------------------------------
    def run(self, input_kinds: list[str]) -> list[str]:
        level = self.level
        inputs = _ref_list(level.config["input_layers"])
        if len(input_kinds) != len(inputs):
            raise NotSupportedError(
                f"model {_where(self.path, level.name)!r} is called with {len(input_kinds)} inputs "
                f"but declares {len(inputs)}"
            )
        for ref, kind in zip(inputs, input_kinds):
            self.kinds[(ref[0], ref[1])] = kind
            if kind == SEQ:
                self._set_input_time(level.layer(ref[0]))
        pending = [(entry, index) for entry in level.layers if entry.get("class_name") != "InputLayer"
                   for index in range(len(entry.get("inbound_nodes", [])))]
        while pending:
            waiting = []
            for entry, index in pending:
                node = entry["inbound_nodes"][index]
                refs = [self.dialect.ref_of(t) for t in self.tensors(node)]
                if all(self.kind(ref) is not None for ref in refs):
                    self.kinds[(Level.name_of(entry), index)] = self.classify(entry, index, node)
                else:
                    waiting.append((entry, index))
            if len(waiting) == len(pending):
                names = ", ".join(sorted({Level.name_of(e) for e, _ in waiting}))
                raise NotSupportedError(f"cannot order the layers of {level.name!r} for streaming: {names}")
            pending = waiting
        for fix in self.fixes if not self.context.relax else []:
            self._fix_masked_call(*fix)
        out_kinds = [self.kind(ref) for ref in _ref_list(level.config["output_layers"])]
        self.finish()
        return out_kinds

    def _set_input_time(self, entry: dict) -> None:
        shape = list(self.dialect.input_layer_shape(entry) or [])
        if len(shape) < 2:
            raise _refuse(self.path, entry, f"a sequence input needs a time axis, its shape is {tuple(shape)!r}")
        shape[1] = self.context.steps
        entry["config"]["batch_shape"] = shape
        entry["config"].pop("batch_input_shape", None)

    def classify(self, entry: dict, index: int, node: dict):
        class_name = entry.get("class_name")
        if is_model_entry(entry):
            return self._nested(entry, index, node)
        if registry.is_recurrent(entry):
            return self._recurrent(entry, index, node)
        # The mask a layer is given follows its input; the other tensors are its arguments.
        mask = self.dialect.get_kwarg(node, "mask")
        mask_ids = {id(t) for t in self.tensors(mask)} if mask is not None else set()
        arg_kinds = [self.kind(self.dialect.ref_of(t)) for t in self.tensors(node) if id(t) not in mask_ids]
        mask_kinds = {self.kind(self.dialect.ref_of(t)) for t in self.tensors(mask)} if mask is not None else set()
        if mask_kinds - {SEQ, STATIC} or (SEQ in mask_kinds and SEQ not in arg_kinds):
            raise _refuse(self.path, entry, "its mask and its input do not share a time axis")
        timed = {k for k in arg_kinds if k in (SEQ, STEP)}
        if STATE in arg_kinds:
            if class_name == "Identity" and len(arg_kinds) == 1:
                return STATE
            source = next(self.dialect.ref_of(t)[0] for t in self.tensors(node)
                          if self.kind(self.dialect.ref_of(t)) == STATE)
            raise _refuse(self.path, entry, f"it uses the final state of {source!r}, which a step model only "
                                            "has once per call (the states are carried as state outputs)")
        if not timed:
            return STATIC
        if len(timed) > 1:
            raise _refuse(self.path, entry, "it combines a sequence with the per-step output of a recurrent "
                                            "layer that returns only its last step")
        kind = timed.pop()
        if STATIC in arg_kinds:
            static = [self.dialect.ref_of(t)[0] for t in self.tensors(node)
                      if self.kind(self.dialect.ref_of(t)) == STATIC]
            raise _refuse(self.path, entry, f"it combines per-timestep values with {static[0]!r}, which has no "
                                            "time axis")
        module = entry.get("module") or ""
        if module.startswith(("keras.src.ops", "keras.ops")):
            return self._op(entry, node, kind)
        if class_name in _ACROSS_TIME and (kind == SEQ or class_name == "RepeatVector"):
            raise _refuse(self.path, entry, _ACROSS_TIME[class_name])
        if class_name in _MERGE_LAYERS:
            return self._merge(entry, node, kind)
        if kind == SEQ and _declared_per_step(entry):  # the user said so (--per-step)
            self._mode(entry, "as-is")
            return SEQ
        if len(arg_kinds) != 1:
            raise _refuse(self.path, entry, "a layer with several inputs that is not known to act on each time "
                                            "step separately")
        if kind == SEQ:
            return self._sequence_layer(entry, node)
        return self._step_layer(entry)

    # -- layer rules ---------------------------------------------------------------------------
    def _mode(self, entry: dict, mode: str) -> None:
        name = Level.name_of(entry)
        previous = self.layer_mode.setdefault(name, mode)
        if previous != mode:
            raise _refuse(self.path, entry, "it is shared between a sequence and the per-step output of a "
                                            "recurrent layer that returns only its last step")

    def _sequence_layer(self, entry: dict, node: dict) -> str:
        class_name = entry.get("class_name")
        rank = _rank_of(self.dialect, self.dialect.first_input(node))
        if class_name in _SEQUENCE_PER_STEP:
            self._mode(entry, "as-is")
            return SEQ
        if class_name in _AXIS_LAYERS:
            axes = entry["config"].get(_AXIS_LAYERS[class_name], -1)
            for axis in axes if isinstance(axes, (list, tuple)) else [axes]:
                if axis is None or (rank is not None and axis % rank in (0, 1)) or axis in (0, 1):
                    raise _refuse(self.path, entry, f"it normalizes over axis {axis!r}, which includes the time axis")
            self._mode(entry, "as-is")
            return SEQ
        if class_name == "Reshape":
            return self._sequence_reshape(entry, node)
        if class_name == "Permute":
            dims = list(entry["config"].get("dims", []))
            if not dims or dims[0] != 1:
                raise _refuse(self.path, entry, f"it moves the time axis (dims {tuple(dims)!r})")
            self._mode(entry, "as-is")
            return SEQ
        raise _refuse(self.path, entry, "it is not known to act on each time step separately "
                                        "(wrap per-step layers in TimeDistributed, or declare it: --per-step "
                                        f"{class_name})")

    def _sequence_reshape(self, entry: dict, node: dict) -> str:
        target = list(entry["config"].get("target_shape", []))
        shape = self.dialect.tensor_shape(self.dialect.first_input(node))
        step_shape = list(shape[2:]) if shape is not None else None
        per_step = (
            len(target) >= 1 and step_shape is not None and None not in step_shape
            and (target[0] == -1 or target[0] == shape[1])
            and -1 not in target[1:]
            and math.prod(target[1:]) == math.prod(step_shape)
        )
        if not per_step:
            raise _refuse(self.path, entry, f"it is a fixed-length Reshape over time (target shape {tuple(target)!r} "
                                            f"from input shape {tuple(shape) if shape else None!r})")
        entry["config"]["target_shape"] = [self.context.steps if self.context.steps is not None else -1, *target[1:]]
        self._mode(entry, "as-is")
        return SEQ

    def _step_layer(self, entry: dict) -> str:
        """A layer applied to one step's value: rank-agnostic ones stay, the others are wrapped."""
        if entry.get("class_name") in _RANK_AGNOSTIC:
            self._mode(entry, "as-is")
        else:
            self._mode(entry, "wrap")
        return STEP

    def _merge(self, entry: dict, node: dict, kind: str) -> str:
        if entry.get("class_name") == "Concatenate":
            axis = entry["config"].get("axis", -1)
            rank = _rank_of(self.dialect, self.dialect.first_input(node))
            position = axis % rank if rank else axis
            if position == 0 or (kind == SEQ and position == 1):
                raise _refuse(self.path, entry, f"it concatenates along axis {axis!r}, "
                                                f"the {'batch' if position == 0 else 'time'} axis")
            if kind == STEP and axis >= 0:
                self._mode(entry, f"axis:{axis + 1}")
                return kind
        self._mode(entry, "as-is")
        return kind

    def _op(self, entry: dict, node: dict, kind: str) -> str:
        class_name = entry.get("class_name")
        if class_name in _ELEMENTWISE_OPS:
            return kind
        if class_name in _REDUCE_OPS:
            axis = entry["config"].get("axis")
            rank = _rank_of(self.dialect, self.dialect.first_input(node))
            axes = axis if isinstance(axis, (list, tuple)) else [axis]
            if any(a is None for a in axes):
                raise _refuse(self.path, entry, "it reduces over every axis, the time axis included")
            positions = [a % rank if rank else a for a in axes]
            if kind == SEQ and any(p in (0, 1) for p in positions):
                raise _refuse(self.path, entry, f"it works along axis {axis!r}, the time axis")
            if kind == STEP and not self.context.relax:
                if any(p == 0 for p in positions):
                    raise _refuse(self.path, entry, f"it works along axis {axis!r}, the batch axis")
                moved = [a + 1 if a >= 0 else a for a in axes]
                entry["config"]["axis"] = moved if isinstance(axis, (list, tuple)) else moved[0]
            return kind
        raise _refuse(self.path, entry, "an operation not known to act on each time step separately")

    def _recurrent(self, entry: dict, index: int, node: dict):
        inner = entry["config"]
        class_name = entry.get("class_name")
        if class_name in _ACROSS_TIME:
            raise _refuse(self.path, entry, _ACROSS_TIME[class_name])
        if inner.get("go_backwards"):
            raise _refuse(self.path, entry, "it has go_backwards=True: it reads the sequence from its end, so its "
                                            "output at a step depends on later steps")
        args = self.tensors(node.get("args", []))
        if not args:
            raise _refuse(self.path, entry, "its call has no sequence argument")
        sequence_kind = self.kind(self.dialect.ref_of(args[0]))
        if sequence_kind != SEQ:
            raise _refuse(self.path, entry, "it reads a tensor without a time axis "
                                            f"(from {self.dialect.ref_of(args[0])[0]!r})")
        mask = self.dialect.get_kwarg(node, "mask")
        mask_tensors = self.tensors(mask) if mask is not None else []
        if any(self.kind(self.dialect.ref_of(t)) != SEQ for t in mask_tensors):
            raise _refuse(self.path, entry, "its mask has no time axis")
        name = Level.name_of(entry)
        if not inner.get("return_sequences"):
            if not inner.get("_stream_flipped"):
                self.context.per_step_sites.append(_where(self.path, name))
            inner["_stream_flipped"] = True
        out_kind = SEQ if (inner.get("return_sequences") and not inner.get("_stream_flipped")) else STEP
        if mask_tensors:
            self.fixes.append((entry, index, node))
        kind = registry.layer_kind(entry)
        return {0: out_kind, "*": STATE} if kind.output_count(entry) == 1 else {"*": STATE}

    def _nested(self, entry: dict, index: int, node: dict) -> list:
        args = node.get("args", [])
        tensors = self.tensors(args[0] if args else [])
        kinds = [self.kind(self.dialect.ref_of(t)) for t in tensors]
        if STEP in kinds:
            raise _refuse(self.path, entry, "a nested model applied to the per-step output of a recurrent layer "
                                            "that returns only its last step is not supported")
        if STATE in kinds:
            raise _refuse(self.path, entry, "it is given the final state of a recurrent layer")
        name = Level.name_of(entry)
        seen = entry.get("_stream_kinds")
        if seen is None:
            nested = Level(entry, self.dialect)
            out_kinds = _LevelStream(nested, self.context, (*self.path, name)).run(kinds)
            entry["_stream_kinds"] = {"in": kinds, "out": out_kinds}
        elif seen["in"] != kinds:
            raise _refuse(self.path, entry, "it is shared between calls on inputs of different kinds "
                                            f"({seen['in']} and {kinds})")
        out_kinds = entry["_stream_kinds"]["out"]
        return {i: k for i, k in enumerate(out_kinds)} | {"*": STATIC}

    # -- edits ---------------------------------------------------------------------------------
    def _fix_masked_call(self, entry: dict, index: int, node: dict) -> None:
        """Masked steps at the start of a call repeat the incoming h, as the full sequence does."""
        dialect, level = self.dialect, self.level
        name = Level.name_of(entry)
        initial = dialect.get_kwarg(node, "initial_state")
        state_tensors = self.tensors(initial) if initial is not None else []
        if not state_tensors:
            return  # no carried state (cannot happen after rewiring)
        cells = registry.layer_kind(entry).cells(entry)
        offset = sum(len(registry.cell_kind(cell).roles) for _p, cell, _c in cells[:-1])
        h_in = state_tensors[offset]
        h_shape = tuple((dialect.tensor_shape(h_in) or (None, None))[1:])  # without the batch axis
        out_rank = len(h_shape) + 2  # (batch, time, *state)
        mask = copy.deepcopy(self.tensors(dialect.get_kwarg(node, "mask"))[0])
        h_in = copy.deepcopy(h_in)
        output_ref = (name, index, 0)
        steps = self.context.steps
        new_name = level.unique_name

        def add(class_name, module, base, args, extra=None):
            layer_name = new_name(f"{name}_{base}")
            level.add_layer({
                "module": module, "class_name": class_name, "config": {"name": layer_name, **(extra or {})},
                "registered_name": class_name, "name": layer_name,
                "inbound_nodes": [{"args": args, "kwargs": {}}],
            })
            return layer_name

        def t(ref_name, shape, dtype):
            return dialect.tensor((ref_name, 0, 0), shape, dtype)

        seen = mask
        if steps != 1:
            cast = add("Cast", "keras.src.ops.core", "stream_cast", [mask], {"dtype": "int32"})
            total = add("Cumsum", "keras.src.ops.numpy", "stream_cumsum", [t(cast, [None, steps], "int32")],
                        {"axis": 1, "dtype": None})
            seen = t(add("Greater", "keras.src.ops.numpy", "stream_seen", [t(total, [None, steps], "int32"), 0]),
                     [None, steps], "bool")
        for k in range(out_rank - 2):
            seen = t(add("ExpandDims", "keras.src.ops.numpy", "stream_seen_axis", [seen], {"axis": -1}),
                     [None, steps, *[1] * (k + 1)], "bool")
        h_step = t(add("ExpandDims", "keras.src.ops.numpy", "stream_h_in", [h_in], {"axis": 1}),
                   [None, 1, *h_shape], "float32")
        out = dialect.tensor(output_ref, [None, steps, *h_shape], "float32")
        fixed = add("Where", "keras.src.ops.numpy", "stream_output", [seen, out, h_step])
        # Everything that read the recurrent output now reads the fixed one.
        for other in level.layers:
            if Level.name_of(other) == fixed:
                continue
            for other_node in other.get("inbound_nodes", []):
                for tensor in self.tensors(other_node):
                    if dialect.ref_of(tensor) == output_ref:
                        tensor["config"]["keras_history"] = [fixed, 0, 0]
        level.config["output_layers"] = _replace_refs(level.config["output_layers"], output_ref, (fixed, 0, 0))
        self.context.masked.append(_where(self.path, name) + (f"__{index}" if index else ""))

    def finish(self) -> None:
        """Apply the per-layer decisions and drop recorded shapes that no longer hold."""
        for entry in self.level.layers:
            name = Level.name_of(entry)
            entry.pop("build_config", None)
            inner = entry.get("config", {})
            if self.context.relax:
                inner.pop("_stream_flipped", None)
                entry.pop("_stream_kinds", None)
                if registry.is_recurrent(entry):
                    inner["stateful"] = False
                continue
            if inner.pop("_stream_flipped", False):
                inner["return_sequences"] = True
            if registry.is_recurrent(entry):
                inner["unroll"] = bool(self.context.unroll)
            if is_model_entry(entry):
                entry.pop("_stream_kinds", None)
            mode = self.layer_mode.get(name, "as-is")
            if mode == "wrap":
                _wrap_time_distributed(entry)
                self.context.wrapped.append(_where(self.path, name))
            elif mode.startswith("axis:"):
                inner["axis"] = int(mode.split(":", 1)[1])


def _wrap_time_distributed(entry: dict) -> None:
    inner = {k: copy.deepcopy(v) for k, v in entry.items() if k not in ("inbound_nodes", "name")}
    inner.pop("build_config", None)
    name = Level.name_of(entry)
    policy = copy.deepcopy(entry.get("config", {}).get("dtype", "float32"))
    nodes = entry.get("inbound_nodes", [])
    entry.clear()
    entry.update({
        "module": "keras.layers",
        "class_name": "TimeDistributed",
        "config": {"name": name, "trainable": inner.get("config", {}).get("trainable", True),
                   "dtype": policy, "layer": inner},
        "registered_name": None,
        "name": name,
        "inbound_nodes": nodes,
    })


def _input_dependencies(level: Level, refs: list[tuple], memo: dict) -> set[int]:
    """Indices of a level's inputs that the given tensors depend on, not counting initial states."""
    dialect = level.dialect
    inputs = _ref_list(level.config["input_layers"])
    position = {(r[0], r[1]): i for i, r in enumerate(inputs)}
    found: set[int] = set()
    queue = list(refs)
    visited = set()
    while queue:
        ref = tuple(queue.pop())
        if ref in visited:
            continue
        visited.add(ref)
        key = (ref[0], ref[1])
        if key in position:
            found.add(position[key])
            continue
        if not level.has_layer(ref[0]):
            continue
        entry = level.layer(ref[0])
        nodes = entry.get("inbound_nodes", [])
        if ref[1] >= len(nodes):
            continue
        node = nodes[ref[1]]
        if registry.is_recurrent(entry):
            follow = list(dialect.iter_tensors(node.get("args", [])))[:1]
            mask = dialect.get_kwarg(node, "mask")
            follow += list(dialect.iter_tensors(mask)) if mask is not None else []
        elif is_model_entry(entry):
            nested = _nested_level(entry, dialect, memo)
            out_refs = _ref_list(nested.config["output_layers"])
            inner = _input_dependencies(nested, [out_refs[ref[2]]] if ref[2] < len(out_refs) else out_refs, memo)
            args = list(dialect.iter_tensors(node.get("args", [])[:1]))
            follow = [args[i] for i in sorted(inner) if i < len(args)]
        else:
            follow = list(dialect.iter_tensors(node))
        queue.extend(dialect.ref_of(t) for t in follow)
    return found


def _nested_level(entry: dict, dialect, memo: dict) -> Level:
    key = id(entry)
    if key not in memo:
        memo[key] = Level(entry, dialect)
    return memo[key]


def _recurrent_inputs(level: Level, memo: dict) -> set[int]:
    """Indices of a level's inputs that reach the sequence (or mask) of a recurrent call."""
    dialect = level.dialect
    seeds = []
    for entry in level.layers:
        for node in entry.get("inbound_nodes", []):
            if registry.is_recurrent(entry):
                seeds += list(dialect.iter_tensors(node.get("args", [])))[:1]
                mask = dialect.get_kwarg(node, "mask")
                seeds += list(dialect.iter_tensors(mask)) if mask is not None else []
            elif is_model_entry(entry):
                nested = _nested_level(entry, dialect, memo)
                fed = _recurrent_inputs(nested, memo)
                args = list(dialect.iter_tensors(node.get("args", [])[:1]))
                seeds += [args[i] for i in sorted(fed) if i < len(args)]
    return _input_dependencies(level, [dialect.ref_of(t) for t in seeds], memo)


def _refuse_sites(config: dict, family: str) -> None:
    for site in find_sites(config, family):
        if site.class_name.startswith("Bidirectional"):
            raise NotSupportedError(
                f"cannot stream layer {site.path!r} ({site.class_name}): {_ACROSS_TIME['Bidirectional']}"
            )
        if site.go_backwards:
            raise NotSupportedError(
                f"cannot stream layer {site.path!r} ({site.class_name}): it has go_backwards=True: it reads the "
                "sequence from its end, so its output at a step depends on later steps"
            )
        if site.fed_by_graph:
            raise NotSupportedError(
                f"cannot stream layer {site.path!r} ({site.class_name}): its initial state comes from another "
                "layer (an encoder-decoder); split the model into encoder and decoder first"
            )


def step_config(model_config: dict, family: str = "keras3", *, steps: int | None = 1,
                batch_size: int | None = None, unroll: bool | None = None) -> tuple[dict, StreamPlan]:
    """(step model config, plan) from a serialized model. The input config is not modified.

    steps: timesteps per call (None: any length, for a full-sequence reference with state inputs).
    unroll: unroll the recurrent loops (default: when steps is at most 32).
    """
    if family != "keras3":
        raise NotSupportedError(f"streaming works on Keras 3 models; this model is {family!r} (tf_keras): "
                                "re-save it with Keras 3 first")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise UsageError(f"steps must be a positive integer, received {steps!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise UsageError(f"batch size must be a positive integer, received {batch_size!r}")
    if unroll is None:
        unroll = steps is not None and steps <= UNROLL_MAX_STEPS
    if unroll and steps is None:
        raise UsageError("unrolling needs a fixed number of steps")
    _refuse_sites(model_config, family)
    # Which original inputs have a time axis: found on the original graph, before state inputs exist.
    original = Level(top_level_entry(model_config), dialect_for(family))
    sequence_positions = _recurrent_inputs(original, {})
    if not sequence_positions:
        raise NotSupportedError("the model has no recurrent layer reading an input sequence: nothing to stream")
    config, plan = rewire_states(model_config, family, outputs=True, inputs=True)
    if plan.skipped:
        site, reason = plan.skipped[0]
        raise NotSupportedError(f"cannot stream recurrent site {site!r}: {reason}")
    dialect = dialect_for(family)
    level = Level(config, dialect)
    inputs = _ref_list(level.config["input_layers"])
    state_names = {s.name for s in plan.inputs}
    kinds = [SEQ if (i in sequence_positions and ref[0] not in state_names) else STATIC
             for i, ref in enumerate(inputs)]
    context = _Context(steps=steps, unroll=bool(unroll))
    top = _LevelStream(level, context, ())
    out_kinds = top.run(kinds)
    for ref in inputs:
        entry = level.layer(ref[0])
        shape = list(dialect.input_layer_shape(entry))
        shape[0] = batch_size
        entry["config"]["batch_shape"] = shape
    config.pop("compile_config", None)
    config.pop("build_config", None)
    original_outputs = out_kinds[: plan.original_outputs]
    if STATE in original_outputs:
        raise NotSupportedError("a model output is the final state of a recurrent layer; a step model carries "
                                "states as its state outputs: drop that output (or expose the states instead)")
    names = [ref[0] for ref in inputs]
    input_ranks = tuple(len(dialect.input_layer_shape(level.layer(ref[0]))) for ref in inputs[: plan.original_inputs])
    stream_plan = StreamPlan(
        steps=steps,
        batch_size=batch_size,
        states=plan,
        sequence_inputs=tuple(n for n, k in zip(names, kinds) if k == SEQ),
        static_inputs=tuple(n for n, k in zip(names[: plan.original_inputs], kinds) if k != SEQ),
        output_kinds=tuple(original_outputs),
        per_step_sites=tuple(context.per_step_sites),
        wrapped=tuple(context.wrapped),
        masked=tuple(context.masked),
        unrolled=bool(unroll),
        input_ranks=input_ranks,
    )
    return config, stream_plan


def sequence_config(model_config: dict, family: str = "keras3") -> dict:
    """The original model, unchanged except that it takes any sequence length and batch size.

    This is the full-sequence model that streaming is checked against.
    """
    if family != "keras3":
        raise NotSupportedError(f"streaming works on Keras 3 models; this model is {family!r}")
    dialect = dialect_for(family)
    level = Level(top_level_entry(model_config), dialect)
    positions = _recurrent_inputs(level, {})
    inputs = _ref_list(level.config["input_layers"])
    kinds = [SEQ if i in positions else STATIC for i in range(len(inputs))]
    _LevelStream(level, _Context(steps=None, unroll=False, relax=True), ()).run(kinds)
    for ref in inputs:
        entry = level.layer(ref[0])
        shape = list(dialect.input_layer_shape(entry))
        shape[0] = None
        entry["config"]["batch_shape"] = shape
    level.entry.pop("compile_config", None)
    return level.entry


# --------------------------------------------------------------------------------------
# Live models
# --------------------------------------------------------------------------------------


def _serialize(model) -> tuple[object, dict]:
    from surgery.io import families

    family = families.of_model(model)
    if family.name != "keras3":
        raise NotSupportedError(f"streaming works on Keras 3 models; this model is {family.name!r} (tf_keras)")
    return family, family.serialize(model)


def _build(config: dict, source, custom_objects=None):
    from surgery.ops.expose import build_from_config, transfer_weights

    try:
        built = build_from_config(config, custom_objects=custom_objects)
    except Exception as error:  # Keras refused the edited graph: say which model, in one line
        message = " ".join(f"{type(error).__name__}: {error}".split())[:400]
        raise NotSupportedError(f"Keras could not build the streaming model: {message}") from None
    with quiet():
        transfer_weights(source, built)
    return built


def build_step_model(model, *, steps: int | None = 1, batch_size: int | None = None, unroll: bool | None = None,
                     custom_objects=None):
    """(external step model, StreamPlan). The input model is not modified."""
    from dataclasses import replace

    from surgery.io import saving

    _family, config = _serialize(model)
    new_config, plan = step_config(config, "keras3", steps=steps, batch_size=batch_size, unroll=unroll)
    step = _build(new_config, model, custom_objects)
    input_names, output_names = saving.signature_names(step, plan.states)
    return step, replace(plan, input_names=tuple(input_names), output_names=tuple(output_names),
                         input_shapes=tuple(tuple(t.shape) for t in step.inputs),
                         output_shapes=tuple(tuple(t.shape) for t in step.outputs))


def build_full_step_model(model, *, custom_objects=None):
    """(model, plan): the step model's graph over the whole sequence at once (any length,
    any batch, states in and out): the reference that streaming is compared with."""
    from dataclasses import replace

    from surgery.io import saving

    _family, config = _serialize(model)
    new_config, plan = step_config(config, "keras3", steps=None, batch_size=None, unroll=False)
    built = _build_any_length(new_config, model, custom_objects)
    input_names, output_names = saving.signature_names(built, plan.states)
    return built, replace(plan, input_names=tuple(input_names), output_names=tuple(output_names))


def build_sequence_model(model, *, custom_objects=None):
    """The original model at any sequence length and batch size (weights shared by copy)."""
    _family, config = _serialize(model)
    return _build_any_length(sequence_config(config, "keras3"), model, custom_objects)


_ANY_LENGTH_TD = "lstm_surgery>TimeDistributedAnyLength"


def _any_length_time_distributed():
    """TimeDistributed that is right for a time axis of unknown length.

    Keras 3.15's TimeDistributed, when the time axis is not static, maps over
    `ops.shape(inputs)[0]` taken before its transpose (the batch size, not the number of
    steps): a full-sequence model with `(None, None, ...)` inputs gives wrong results or
    fails. This subclass folds time into the batch instead (the Keras 2 implementation)
    (also when it is known: one folded call traces faster than one call per step).
    """
    keras = import_keras()
    ops = keras.ops

    class TimeDistributedAnyLength(keras.layers.TimeDistributed):
        def call(self, inputs, training=None, mask=None):
            inner = inputs.shape[2:]
            if any(d is None for d in inner):
                return super().call(inputs, training=training, mask=mask)
            shape = ops.shape(inputs)
            folded = ops.reshape(inputs, (-1, *inner))
            kwargs = {}
            if self.layer._call_has_mask_arg and mask is not None:
                kwargs["mask"] = ops.reshape(mask, (-1, *mask.shape[2:]))
            if self.layer._call_has_training_arg:
                kwargs["training"] = training
            outputs = self.layer.call(folded, **kwargs)
            return ops.reshape(outputs, (shape[0], shape[1], *outputs.shape[1:]))

    return TimeDistributedAnyLength


def _build_any_length(config: dict, source, custom_objects=None):
    """Build a model whose time axes are unknown, with TimeDistributed made right for that."""
    from surgery.graph.level import walk_values

    config = copy.deepcopy(config)
    for value in walk_values(config):
        if isinstance(value, dict) and value.get("class_name") == "TimeDistributed":
            value["registered_name"] = _ANY_LENGTH_TD
    objects = dict(custom_objects or {})
    objects[_ANY_LENGTH_TD] = _any_length_time_distributed()
    return _build(config, source, objects)


def to_step_model(model, state: str = "external", steps: int = 1, batch_size: int | None = None, *,
                  unroll: bool | None = None, custom_objects=None):
    """A model that runs `steps` timesteps per call and carries the recurrent state.

    state="external": a Keras model whose inputs are the original inputs (time axis = steps)
    followed by `<site>_<role>_in`, and whose outputs are the original outputs followed by
    `<site>_<role>`; the caller feeds each call's state outputs to the next call.
    state="internal": a `StatefulStepModel` holding the states in variables (batch_size
    defaults to 1): call it on the inputs, `reset_state()`, `get_state()`, `set_state(...)`.
    The input model is not modified.
    """
    if state not in STATE_MODES:
        raise UsageError(f"state must be 'external' or 'internal', received {state!r}")
    if state == "internal":
        batch_size = batch_size or 1
    step, plan = build_step_model(model, steps=steps, batch_size=batch_size, unroll=unroll,
                                  custom_objects=custom_objects)
    if state == "external":
        return step
    return StatefulStepModel(step, plan)


def compiled_call(model) -> Callable[[list], list]:
    """model(values) as a traced tf.function: list of arrays in, list of numpy arrays out."""
    tf = import_tensorflow()
    count = len(model.inputs)
    signature = [tf.TensorSpec(list(t.shape), t.dtype) for t in model.inputs]

    @tf.function(input_signature=signature)
    def run(*values):
        outputs = model(list(values) if count > 1 else values[0], training=False)
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

    def call(values: list) -> list:
        with quiet():
            return [np.asarray(v) for v in run(*values)]

    return call


def _tensor_spec(tf, tensor, name: str):
    return tf.TensorSpec(list(tensor.shape), tensor.dtype, name=name)


def _stateful_class():
    tf = import_tensorflow()

    class StatefulStepModelImpl(tf.Module):
        def __init__(self, step_model, plan: StreamPlan):
            super().__init__(name="stateful_step_model")
            if plan.batch_size is None:
                raise UsageError("a step model with internal state needs a fixed batch size")
            self.model = step_model
            # The raw variables, tracked directly, so that converters can freeze the weights.
            self.weights_ = [v.value for v in step_model.variables]
            self.plan = plan
            batch = plan.batch_size
            self.state_variables = {
                s.name: tf.Variable(tf.zeros((batch, *s.shape), s.dtype), trainable=False, name=s.name)
                for s in plan.states.outputs
            }
            originals = plan.states.original_inputs
            specs = [_tensor_spec(tf, t, n) for t, n in zip(step_model.inputs[:originals], plan.input_names)]
            by_key = {(s.site, s.role): s.name for s in plan.states.outputs}
            in_order = [by_key[(s.site, s.role)] for s in plan.states.inputs]
            out_order = [s.name for s in plan.states.outputs]
            count = len(plan.original_outputs)
            output_names = list(plan.original_outputs)
            variables = self.state_variables

            def serving_default(*values):
                states = [variables[name].read_value() for name in in_order]
                outputs = step_model(list(values) + states, training=False)
                outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
                for name, value in zip(out_order, outputs[count:]):
                    variables[name].assign(value)
                return {name: tensor for name, tensor in zip(output_names, outputs[:count])}

            def reset():
                for variable in variables.values():
                    variable.assign(tf.zeros_like(variable))
                return {name: variables[name].read_value() for name in out_order}

            def read_state():
                return {name: variables[name].read_value() for name in out_order}

            def assign_state(*values):
                for name, value in zip(out_order, values):
                    variables[name].assign(value)
                return {name: variables[name].read_value() for name in out_order}

            state_specs = [tf.TensorSpec((batch, *s.shape), s.dtype, name=s.name) for s in plan.states.outputs]
            self.serve = tf.function(serving_default, input_signature=specs)
            self.reset = tf.function(reset, input_signature=[])
            self.read_state = tf.function(read_state, input_signature=[])
            self.assign_state = tf.function(assign_state, input_signature=state_specs)

        # -- Python API ------------------------------------------------------------------------
        @property
        def batch_size(self) -> int:
            return self.plan.batch_size

        @property
        def steps(self) -> int | None:
            return self.plan.steps

        def __call__(self, inputs):
            values = _as_input_list(inputs, self.plan)
            dtypes = [np.dtype(str(t.dtype)) for t in self.model.inputs]
            values = [v if v.dtype == d else v.astype(d) for v, d in zip(values, dtypes)]
            with quiet():
                result = self.serve(*values)
            outputs = {name: np.asarray(result[name]) for name in self.plan.original_outputs}
            return next(iter(outputs.values())) if len(outputs) == 1 else outputs

        def reset_state(self) -> None:
            with quiet():
                self.reset()

        def get_state(self) -> dict[str, np.ndarray]:
            with quiet():
                return {name: np.asarray(value) for name, value in self.read_state().items()}

        def set_state(self, states: dict) -> None:
            values = []
            for state in self.plan.states.outputs:
                value = states.get(state.name, states.get(f"{state.name}_in"))
                if value is None:
                    raise UsageError(f"set_state: no value for state {state.name!r}; "
                                     f"states: {', '.join(s.name for s in self.plan.states.outputs)}")
                value = np.asarray(value, dtype=state.dtype)
                expected = (self.plan.batch_size, *state.shape)
                if value.shape != expected:
                    raise UsageError(f"set_state: state {state.name!r} needs shape {expected}, received {value.shape}")
                values.append(value)
            with quiet():
                self.assign_state(*values)

        def signatures(self) -> dict:
            return {
                "serving_default": self.serve.get_concrete_function(),
                "reset": self.reset.get_concrete_function(),
                "read_state": self.read_state.get_concrete_function(),
                "assign_state": self.assign_state.get_concrete_function(),
            }

        def save(self, directory) -> None:
            with quiet():
                tf.saved_model.save(self, str(directory), signatures=self.signatures())

    return StatefulStepModelImpl


_STATEFUL_CLASS = None


def StatefulStepModel(step_model, plan: StreamPlan):  # a factory that reads as a class
    """A step model that keeps its recurrent states in variables (state="internal").

    Call it on one chunk of inputs; `reset_state()`, `get_state()` (dict of arrays),
    `set_state(dict)`; `save(dir)` writes a SavedModel with the signatures `serving_default`
    (the step), `reset`, `read_state` and `assign_state`.
    """
    global _STATEFUL_CLASS
    if _STATEFUL_CLASS is None:
        _STATEFUL_CLASS = _stateful_class()
    return _STATEFUL_CLASS(step_model, plan)


def _as_input_list(inputs, plan: StreamPlan) -> list[np.ndarray]:
    """Inputs given as one array, a list in input order, or a dict by input name."""
    names = list(plan.original_inputs)
    if isinstance(inputs, dict):
        missing = [n for n in names if n not in inputs]
        if missing:
            raise UsageError(f"missing input {missing[0]!r}; the step model takes {', '.join(names)}")
        values = [inputs[n] for n in names]
    elif isinstance(inputs, (list, tuple)):
        values = list(inputs)
    else:
        values = [inputs]
    if len(values) != len(names):
        raise UsageError(f"the step model takes {len(names)} input(s) ({', '.join(names)}), received {len(values)}")
    return [np.asarray(v) for v in values]


# --------------------------------------------------------------------------------------
# Verification: step through a long sequence and compare with the full-sequence model
# --------------------------------------------------------------------------------------

VERIFY_LENGTH = 500
VERIFY_STEPS = (1, 4, 16)
VERIFY_BATCHES = (1, 8)


@dataclass
class StreamReport:
    """Max abs errors of streaming against the full-sequence model.

    runs: one entry per (steps, batch, initial state): `outputs` (every step vs the
    full-sequence model with the same initial state), `states` (after chunks at checkpoints
    vs the full-sequence model's final states on that prefix), `original` (zero initial
    state: vs the untouched original model on prefixes).
    backends: the same comparisons for exported artifacts (SavedModel, TFLite), and
    against the Keras step model for TFLite.
    """

    length: int
    tolerance: tol_policy.Bound | float  # the policy's bound; a float is a fixed absolute bound
    runs: list[dict] = field(default_factory=list)
    backends: dict[str, dict] = field(default_factory=dict)
    checks: dict[str, tol_policy.Comparison] = field(default_factory=dict)  # worst per compared value

    def __post_init__(self):
        self.tolerance = tol_policy.as_bound(self.tolerance)

    def check(self, key: str, got, want) -> float:
        """Compare elementwise under the report's bound, keep the worst per key; max |diff|."""
        result = tol_policy.compare(got, want, self.tolerance)
        self.checks[key] = tol_policy.worst([self.checks[key], result]) if key in self.checks else result
        return result.max_abs_diff

    @staticmethod
    def _worst(dicts: Iterable[dict]) -> dict[str, float]:
        worst: dict[str, float] = {}
        for errors in dicts:
            for name, err in errors.items():
                worst[name] = max(worst.get(name, 0.0), err)
        return worst

    @property
    def output_errors(self) -> dict[str, float]:
        return self._worst([r["outputs"] for r in self.runs] + [r["original"] for r in self.runs])

    @property
    def state_errors(self) -> dict[str, float]:
        return self._worst(r["states"] for r in self.runs)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks.values())

    def configurations(self) -> str:
        steps = sorted({r["steps"] for r in self.runs})
        batches = sorted({r["batch"] for r in self.runs})
        inits = sorted({r["initial_state"] for r in self.runs}, reverse=True)
        return (f"T={self.length}, K {', '.join(map(str, steps))}, batch {', '.join(map(str, batches))}, "
                f"{' and '.join(inits)} initial state")

    def summary(self) -> str:
        verdict = "verified streaming" if self.ok else "STREAMING VERIFICATION FAILED"
        lines = [f"{verdict} ({self.configurations()}) against the full-sequence model, "
                 f"within {self.tolerance.describe()} elementwise:"]
        for name, err in self.output_errors.items():
            lines.append(f"  output {name}: max |err| {err:.3g}")
        for name, err in self.state_errors.items():
            lines.append(f"  state  {name}: max |err| {err:.3g}")
        for backend, result in self.backends.items():
            worst_out = max(result.get("outputs", {}).values(), default=0.0)
            worst_state = max(result.get("states", {}).values(), default=0.0)
            text = f"  {backend} (K={result['steps']}, T={result['length']}): outputs max |err| {worst_out:.3g}, " \
                   f"states max |err| {worst_state:.3g}"
            if "vs_keras_step" in result:
                text += f"; vs Keras step model max |err| {max(result['vs_keras_step'].values(), default=0.0):.3g}"
            lines.append(text)
        if self.checks:
            lines.append("  " + tol_policy.worst(self.checks.values()).describe("nearest its bound"))
        bad = [key for key, c in self.checks.items() if not c.ok]
        if bad:
            lines.append("  out of bound: " + "; ".join(self.checks[k].describe(k) for k in bad))
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "length": self.length,
            "tolerance": self.tolerance.describe(),
            "checks": {key: c.as_dict() for key, c in self.checks.items()},
            "output_max_abs_err": self.output_errors,
            "state_max_abs_err": self.state_errors,
            "runs": self.runs,
            "backends": self.backends,
        }


def _tolerance(plan: StreamPlan, length: int) -> tol_policy.Bound:
    """The policy's bound for the states' dtypes over `length` streamed steps."""
    return tol_policy.widest(tol_policy.bound_for(s.dtype, steps=length) for s in plan.states.outputs)


def stream_inputs(model_inputs: list, plan: StreamPlan, *, batch: int, length: int, seed: int,
                  limits: list | None = None) -> list[np.ndarray]:
    """Seeded full-length inputs for every original input of a step model.

    limits: per input, the id range of the Embedding it reaches (verify.input_id_limits):
    such inputs get valid ids whatever their dtype. Row 0 gets a block of all-zero steps in
    the middle and, with batch > 1, row 1 a zero tail: Masking and Embedding(mask_zero=True)
    paths are exercised.
    """
    from surgery.check.verify import _random_value

    rng = np.random.default_rng(seed)
    values = []
    limits = list(limits or []) + [None] * len(plan.original_inputs)
    for tensor, name, limit in zip(model_inputs[: plan.states.original_inputs], plan.original_inputs, limits):
        sequence = name in plan.sequence_inputs
        rest = [d if d is not None else 1 for d in tensor.shape[2 if sequence else 1:]]
        shape = [batch, length, *rest] if sequence else [batch, *rest]
        value = _random_value(rng, shape, np.dtype(str(tensor.dtype)), limit)
        if sequence and length >= 10:
            start = length // 5
            value[0, start:start + 3] = 0
            if batch > 1:
                value[1, -3:] = 0
        values.append(value)
    return values


def initial_states(plan: StreamPlan, *, batch: int, random: bool, seed: int) -> list[np.ndarray]:
    """Zero or seeded random states in state-input order."""
    rng = np.random.default_rng(seed)
    out = []
    for state in plan.states.inputs:
        shape = (batch, *state.shape)
        out.append((rng.standard_normal(shape) * 0.5).astype(state.dtype) if random
                   else np.zeros(shape, dtype=state.dtype))
    return out


def stream_through(step_for: Callable[[int], Callable[[list], list]], inputs: list[np.ndarray], states: list,
                   plan: StreamPlan, *, steps: int, length: int, checkpoints: Iterable[int] = ()):
    """Feed `length` timesteps in chunks of `steps` (a shorter last chunk if needed).

    step_for(k) gives the step function for chunks of k steps: list of arrays in model
    input order -> list of arrays in model output order. Returns (per original output: the
    per-step values concatenated along time, or the last value for static outputs;
    {checkpoint t: states after t steps}).
    """
    sequence = [name in plan.sequence_inputs for name in plan.original_inputs]
    count = len(plan.original_outputs)
    pieces: list[list] = [[] for _ in range(count)]
    at = {}
    wanted = set(checkpoints)
    start = 0
    while start < length:
        k = min(steps, length - start)
        feed = [x[:, start:start + k] if seq else x for x, seq in zip(inputs, sequence)]
        outputs = step_for(k)(feed + list(states))
        states = outputs[count:]
        for i, value in enumerate(outputs[:count]):
            pieces[i].append(value)
        start += k
        if start in wanted:
            at[start] = [np.array(s) for s in states]
    joined = []
    for i, kind in enumerate(plan.output_kinds):
        joined.append(np.concatenate(pieces[i], axis=1) if kind != STATIC else pieces[i][-1])
    return joined, at


class _References:
    """Full-sequence results for one input set, cached across step sizes and backends."""

    def __init__(self, sequence_fn, original_fn, plan: StreamPlan, inputs: list, length: int):
        self.sequence_fn = sequence_fn
        self.original_fn = original_fn
        self.plan = plan
        self.inputs = inputs
        self.length = length
        self._full: dict = {}
        self._prefix: dict = {}
        self._original: dict = {}

    def _prefix_inputs(self, t: int) -> list:
        return [x[:, :t] if name in self.plan.sequence_inputs else x
                for x, name in zip(self.inputs, self.plan.original_inputs)]

    def full(self, init_key, init: list) -> list:
        if init_key not in self._full:
            self._full[init_key] = self.sequence_fn(self.inputs + list(init))
        return self._full[init_key]

    def states_at(self, init_key, init: list, t: int) -> list:
        key = (init_key, t)
        if key not in self._prefix:
            outputs = self.sequence_fn(self._prefix_inputs(t) + list(init))
            self._prefix[key] = outputs[len(self.plan.original_outputs):]
        return self._prefix[key]

    def original_at(self, t: int) -> list:
        if t not in self._original:
            self._original[t] = self.original_fn(self._prefix_inputs(t))
        return self._original[t]


def _compare_run(refs: _References, init_key: str, init: list, streamed: list, states_at: dict,
                 check: Callable[[str, object, object], float]) -> dict:
    """Max |diff| per output/state; `check(key, got, want)` judges each under the policy."""
    plan = refs.plan
    count = len(plan.original_outputs)
    full = refs.full(init_key, init)
    outputs = {name: check(f"output {name}", got, want)
               for name, got, want in zip(plan.original_outputs, streamed, full[:count])}
    states = {}
    for t, got_states in states_at.items():
        want_states = refs.states_at(init_key, init, t)
        for state, got, want in zip(plan.states.outputs, got_states, want_states):
            states[state.name] = max(states.get(state.name, 0.0), check(f"state {state.name}", got, want))
    original = {}
    if init_key == "zero" and refs.original_fn is not None:
        length = refs.length
        for i, (name, kind) in enumerate(zip(plan.original_outputs, plan.output_kinds)):
            key = f"output {name} vs the original model"
            if kind == SEQ:
                original[name] = check(key, streamed[i], refs.original_at(length)[i])
            elif kind == STEP:
                worst = 0.0
                for t in _original_points(length):
                    worst = max(worst, check(key, streamed[i][:, t - 1], refs.original_at(t)[i]))
                original[name] = worst
    return {"outputs": outputs, "states": states, "original": original}


def _original_points(length: int) -> list[int]:
    """Prefix lengths at which per-step outputs are checked against the original model."""
    points = {1, 2, 3, length // 5 + 1, length // 5 + 3, length // 3, length // 2 + 1, length - 1, length}
    return sorted(p for p in points if 1 <= p <= length)


def _checkpoints(steps: int, length: int) -> list[int]:
    first = min(steps, length)
    middle = max(steps, (length // 2 // steps) * steps)
    return sorted({first, min(middle, length), length})


def verify_streaming(model, *, steps: Iterable[int] = VERIFY_STEPS, batches: Iterable[int] = VERIFY_BATCHES,
                     length: int = VERIFY_LENGTH, seed: int = 0, batch_size: int | None = None,
                     unroll: bool | None = None, custom_objects=None) -> StreamReport:
    """Step through `length` timesteps with step models of each K in `steps`, for each batch
    size, from zero and from random initial states, and compare every step's outputs (and the
    states at checkpoints) with the full-sequence model. With batch_size, only that batch is
    checked (the step model is built for it)."""
    steps = sorted(set(steps))
    batches = [batch_size] if batch_size else sorted(set(batches))
    _family, config = _serialize(model)
    sequence_model, seq_plan = build_full_step_model(model, custom_objects=custom_objects)
    original = _build_any_length(sequence_config(config, "keras3"), model, custom_objects)
    sequence_fn, original_fn = compiled_call(sequence_model), compiled_call(original)
    report = StreamReport(length=length, tolerance=_tolerance(seq_plan, length))
    chunk_models: dict[tuple, Callable] = {}

    def step_for(k: int):
        key = (k, batch_size)
        if key not in chunk_models:
            built, _ = build_step_model(model, steps=k, batch_size=batch_size, unroll=unroll,
                                        custom_objects=custom_objects)
            chunk_models[key] = compiled_call(built)
        return chunk_models[key]

    for batch in batches:
        inputs = stream_inputs(sequence_model.inputs, seq_plan, batch=batch, length=length, seed=seed + batch,
                               limits=input_id_limits(sequence_model))
        refs = _References(sequence_fn, original_fn, seq_plan, inputs, length)
        for init_key in ("zero", "random"):
            init = initial_states(seq_plan, batch=batch, random=init_key == "random", seed=seed + 7 * batch)
            for k in steps:
                streamed, states_at = stream_through(step_for, inputs, init, seq_plan, steps=k, length=length,
                                                     checkpoints=_checkpoints(k, length))
                result = _compare_run(refs, init_key, init, streamed, states_at, report.check)
                report.runs.append({"steps": k, "batch": batch, "initial_state": init_key, **result})
    return report


def verify_backend(name: str, step_fn: Callable[[list], list], model, plan: StreamPlan, report: StreamReport, *,
                   keras_step: Callable[[list], list] | None = None, batches: Iterable[int] = VERIFY_BATCHES,
                   seed: int = 0, custom_objects=None) -> dict:
    """Check an exported step function (SavedModel, TFLite) the same way, over the longest
    whole number of its chunks within the report's length; optionally also against the Keras
    step model at every step. Adds the result to report.backends and returns it."""
    k = plan.steps or 1
    length = (report.length // k) * k
    batches = [plan.batch_size] if plan.batch_size else sorted(set(batches))
    sequence_model, seq_plan = build_full_step_model(model, custom_objects=custom_objects)
    sequence_fn = compiled_call(sequence_model)
    result = {"steps": k, "length": length, "outputs": {}, "states": {}}
    if keras_step is not None:
        result["vs_keras_step"] = {}
    for batch in batches:
        inputs = stream_inputs(sequence_model.inputs, seq_plan, batch=batch, length=length, seed=seed + batch,
                               limits=input_id_limits(sequence_model))
        refs = _References(sequence_fn, None, seq_plan, inputs, length)
        for init_key in ("zero", "random"):
            init = initial_states(seq_plan, batch=batch, random=init_key == "random", seed=seed + 7 * batch)

            def only(fn):
                def chunk(size):
                    if size != k:
                        raise UsageError(f"{name} runs chunks of {k} steps, asked for {size}")
                    return fn
                return chunk

            streamed, states_at = stream_through(only(step_fn), inputs, init, seq_plan, steps=k, length=length,
                                                 checkpoints=_checkpoints(k, length))
            compared = _compare_run(refs, init_key, init, streamed, states_at,
                                    lambda key, got, want: report.check(f"{name}: {key}", got, want))
            for key in ("outputs", "states"):
                for out_name, err in compared[key].items():
                    result[key][out_name] = max(result[key].get(out_name, 0.0), err)
            if keras_step is not None:
                expected, _ = stream_through(only(keras_step), inputs, init, seq_plan, steps=k, length=length)
                for out_name, got, want in zip(seq_plan.original_outputs, streamed, expected):
                    result["vs_keras_step"][out_name] = max(
                        result["vs_keras_step"].get(out_name, 0.0),
                        report.check(f"{name} vs Keras step model: {out_name}", got, want))
    report.backends[name] = result
    return result


def raise_if_failed(report: StreamReport) -> StreamReport:
    if not report.ok:
        raise VerificationError(report.summary())
    return report


# --------------------------------------------------------------------------------------
# File to file: `lstm-surgery stream`
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamResult:
    output: Path
    manifest: Path
    format: str                 # "savedmodel" or "keras"
    state: str                  # "external" or "internal"
    plan: StreamPlan
    report: StreamReport | None
    tflite: Path | None = None
    tflite_report: object | None = None  # tflite.OpReport
    input_model: object | None = None  # state_io.Plain: state I/O reused, Keras 2 translated

    def as_dict(self) -> dict:
        return {
            "input_model": self.input_model.as_dict() if self.input_model is not None else None,
            "ok": True,
            "output": str(self.output),
            "manifest": str(self.manifest),
            "format": self.format,
            "state": self.state,
            "stream": self.plan.as_dict(),
            "signature": {"inputs": list(self.signature_inputs), "outputs": list(self.signature_outputs)},
            "verification": self.report.as_dict() if self.report is not None else None,
            "tflite": str(self.tflite) if self.tflite else None,
            "tflite_ops": self.tflite_report.as_dict() if self.tflite_report is not None else None,
        }

    def lines(self) -> list[str]:
        plan = self.plan
        per_call = f"{plan.steps} step{'s' if plan.steps != 1 else ''} per call"
        batch = f"batch {plan.batch_size}" if plan.batch_size else "any batch"
        out = [f"wrote {self.output} ({self.format}, {self.state} state, {per_call}, {batch}) and {self.manifest.name}"]
        out += self.input_model.report_lines() if self.input_model is not None else []
        shapes_in = dict(zip(plan.input_names, plan.input_shapes))
        shapes_out = dict(zip(plan.output_names, plan.output_shapes))
        if self.state == "internal":
            states = ", ".join(f"{s.name} {_shape_text((plan.batch_size, *s.shape))}" for s in plan.states.outputs)
            out.append("signature serving_default: "
                       + ", ".join(f"{n} {_shape_text(shapes_in[n])}" for n in plan.original_inputs) + " -> "
                       + ", ".join(f"{n} {_shape_text(shapes_out[n])}" for n in plan.original_outputs))
            out.append(f"state variables (reset, read_state, assign_state): {states}")
        else:
            out.append("inputs:  " + ", ".join(f"{n} {_shape_text(shapes_in[n])}" for n in plan.input_names))
            out.append("outputs: " + ", ".join(f"{n} {_shape_text(shapes_out[n])}" for n in plan.output_names))
        changes = []
        if plan.per_step_sites:
            changes.append("per-step output from " + ", ".join(plan.per_step_sites) + " (return_sequences=False)")
        if plan.wrapped:
            changes.append("TimeDistributed around " + ", ".join(plan.wrapped))
        if plan.masked:
            changes.append("masked steps carry h in " + ", ".join(plan.masked))
        if plan.unrolled:
            changes.append("recurrent loops unrolled")
        if changes:
            out.append("step model: " + "; ".join(changes))
        if self.report is not None:
            out.append(self.report.summary())
        else:
            out.append("not verified (--no-verify)")
        if self.tflite is not None:
            out.append(f"wrote {self.tflite}: {self.tflite_report.summary()}")
        return out

    @property
    def signature_inputs(self) -> tuple[str, ...]:
        return self.plan.original_inputs if self.state == "internal" else self.plan.input_names

    @property
    def signature_outputs(self) -> tuple[str, ...]:
        return self.plan.original_outputs if self.state == "internal" else self.plan.output_names


def _shape_text(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _saved_external(directory: Path, plan: StreamPlan) -> Callable[[list], list]:
    tf = import_tensorflow()
    with quiet():
        loaded = tf.saved_model.load(str(directory))
    signature = loaded.signatures["serving_default"]
    names_in, names_out = list(plan.input_names), list(plan.output_names)

    def call(values: list) -> list:
        with quiet():
            result = signature(**{n: tf.constant(v) for n, v in zip(names_in, values)})
        return [np.asarray(result[n]) for n in names_out]

    call.keep_alive = loaded
    return call


class _InternalDriver:
    """Drives a stateful step artifact like an external step function.

    The states passed in by `stream_through` are ignored after `start`: the artifact carries
    its own; the states returned are read back from it, so checkpoints compare what it holds.
    """

    def __init__(self, serve, reset, read, assign, plan: StreamPlan):
        self.serve, self.reset, self.read, self.assign, self.plan = serve, reset, read, assign, plan

    def start(self, init: list) -> None:
        by_key = {(s.site, s.role): v for s, v in zip(self.plan.states.inputs, init)}
        self.reset()
        self.assign([by_key[(s.site, s.role)] for s in self.plan.states.outputs])

    def __call__(self, values: list) -> list:
        count = self.plan.states.original_inputs
        outputs = self.serve(values[:count])
        return list(outputs) + list(self.read())


def _saved_internal(directory: Path, plan: StreamPlan) -> _InternalDriver:
    tf = import_tensorflow()
    with quiet():
        loaded = tf.saved_model.load(str(directory))
    sig = loaded.signatures
    names_in = list(plan.original_inputs)
    out_names = list(plan.original_outputs)
    state_names = [s.name for s in plan.states.outputs]

    def serve(values):
        with quiet():
            result = sig["serving_default"](**{n: tf.constant(v) for n, v in zip(names_in, values)})
        return [np.asarray(result[n]) for n in out_names]

    def read():
        with quiet():
            result = sig["read_state"]()
        return [np.asarray(result[n]) for n in state_names]

    def assign(values):
        with quiet():
            sig["assign_state"](**{n: tf.constant(v) for n, v in zip(state_names, values)})

    def reset():
        with quiet():
            sig["reset"]()

    driver = _InternalDriver(serve, reset, read, assign, plan)
    driver.keep_alive = loaded
    return driver


def _tflite_internal(content: bytes, plan: StreamPlan) -> _InternalDriver:
    from surgery.io import tflite

    interpreter = tflite.load_interpreter(content)
    state_names = [s.name for s in plan.states.outputs]
    serve = tflite.SignatureStep(interpreter, plan.original_inputs, plan.original_outputs, "serving_default")
    read = tflite.SignatureStep(interpreter, [], state_names, "read_state")
    reset = tflite.SignatureStep(interpreter, [], state_names, "reset")
    assign = tflite.SignatureStep(interpreter, state_names, state_names, "assign_state")
    return _InternalDriver(serve, lambda: reset([]), lambda: read([]), assign, plan)


def _internal_live(stateful) -> _InternalDriver:
    plan = stateful.plan
    names = [s.name for s in plan.states.outputs]

    def serve(values):
        with quiet():
            result = stateful.serve(*values)
        return [np.asarray(result[n]) for n in plan.original_outputs]

    def read():
        state = stateful.get_state()
        return [state[n] for n in names]

    return _InternalDriver(serve, stateful.reset_state, read, lambda values: stateful.set_state(dict(zip(names, values))),
                           plan)


def verify_internal(name: str, driver: _InternalDriver, model, plan: StreamPlan, report: StreamReport, *,
                    seed: int = 0, custom_objects=None) -> dict:
    """verify_backend for an artifact that keeps its own state (batch fixed by the plan)."""
    k = plan.steps or 1
    length = (report.length // k) * k
    sequence_model, seq_plan = build_full_step_model(model, custom_objects=custom_objects)
    sequence_fn = compiled_call(sequence_model)
    batch = plan.batch_size
    result = {"steps": k, "length": length, "batch": batch, "outputs": {}, "states": {}}
    inputs = stream_inputs(sequence_model.inputs, seq_plan, batch=batch, length=length, seed=seed + batch,
                           limits=input_id_limits(sequence_model))
    refs = _References(sequence_fn, None, seq_plan, inputs, length)
    for init_key in ("zero", "random"):
        init = initial_states(seq_plan, batch=batch, random=init_key == "random", seed=seed + 7 * batch)
        driver.start(init)
        streamed, states_at = stream_through(lambda _k: driver, inputs, init, seq_plan, steps=k, length=length,
                                             checkpoints=_checkpoints(k, length))
        compared = _compare_run(refs, init_key, init, streamed, states_at,
                                lambda key, got, want: report.check(f"{name}: {key}", got, want))
        for key in ("outputs", "states"):
            for out_name, err in compared[key].items():
                result[key][out_name] = max(result[key].get(out_name, 0.0), err)
    # reset_state really zeroes: the first chunk after a reset matches a fresh zero-state run.
    driver.reset()
    first = driver([x[:, :k] if seq else x for x, seq in
                    zip(inputs, [n in seq_plan.sequence_inputs for n in seq_plan.original_inputs])])
    fresh = sequence_fn([x[:, :k] if n in seq_plan.sequence_inputs else x
                         for x, n in zip(inputs, seq_plan.original_inputs)]
                        + initial_states(seq_plan, batch=batch, random=False, seed=0))
    result["after_reset"] = max((report.check(f"{name}: first chunk after reset", a, b) for a, b in
                                 zip(first[: len(seq_plan.original_outputs)], fresh[: len(seq_plan.original_outputs)])),
                                default=0.0)
    result["outputs"]["(after reset)"] = result["after_reset"]
    report.backends[name] = result
    return result


def stream_file(source, output=None, *, state: str = "external", steps: int = 1, batch_size: int | None = None,
                tflite_path=None, verify: bool = True, force: bool = False, unsafe: bool = False,
                custom_objects=None, progress=None, verify_length: int = VERIFY_LENGTH,
                per_step: Iterable[str] = ()) -> StreamResult:
    """Write a step model of `source` (SavedModel directory, or .keras for external state;
    default <stem>.step beside it), optionally a .tflite beside, verified, atomically, with a
    manifest. per_step: layers (layer, class or registered names) to treat as acting on each
    timestep, e.g. a custom layer streaming would otherwise refuse."""
    with per_step_layers(per_step):
        return _stream_file(source, output, state=state, steps=steps, batch_size=batch_size,
                            tflite_path=tflite_path, verify=verify, force=force, unsafe=unsafe,
                            custom_objects=custom_objects, progress=progress, verify_length=verify_length)


def _stream_file(source, output, *, state, steps, batch_size, tflite_path, verify, force, unsafe,
                 custom_objects, progress, verify_length) -> StreamResult:
    from surgery.io import formats, saving
    from surgery.io.loading import load_model
    from surgery.io.safety import ensure_artifact_safe

    step_msg = progress or (lambda _message: None)
    if state not in STATE_MODES:
        raise UsageError(f"--state must be external or internal, received {state!r}")
    # The rule of every writing command: no -o, a default name beside the input (<stem>.step).
    output = Path(output) if output is not None else saving.default_output_path(source, "step", "savedmodel")
    fmt = {".keras": "keras", ".h5": "h5", ".hdf5": "h5"}.get(output.suffix.lower(), "savedmodel")
    if fmt == "h5":
        raise UsageError(f"a step model is written as a SavedModel directory or a .keras file, not {output.name!r}")
    if fmt == "keras" and state == "internal":
        raise UsageError("internal state lives in variables of a SavedModel: give a directory for -o, not .keras")
    saving.check_output(source, output, force, directory=(fmt == "savedmodel"))
    tflite_path = Path(tflite_path) if tflite_path else None
    if tflite_path is not None:
        saving.check_output(source, tflite_path, force, directory=False)
        if tflite_path.resolve() in (output.resolve(), saving.manifest_path(output).resolve()) or \
                output.resolve() in tflite_path.resolve().parents:
            raise UsageError(f"--tflite {str(tflite_path)!r} collides with -o {str(output)!r} or its manifest")
    artifact = formats.read_artifact(source)
    if artifact.weights_only:
        raise UsageError(f"{str(source)!r} holds weights only; streaming needs a full model file")
    ensure_artifact_safe(artifact, allow_unsafe=unsafe, trusted=(custom_objects or {}).keys())
    unknown = undeclared_layers(artifact.model_config, sorted(_DECLARED_PER_STEP.get()))
    if unknown:
        raise UsageError(f"--per-step {unknown[0]!r}: no layer, class or registered name in the model is called so")
    from surgery.graph import state_io

    # State I/O another command added is taken off here and redone under the same names.
    found = state_io.find_state_io(artifact.model_config, artifact.family, state_io.read_manifest(artifact.path))
    if artifact.family == "keras3":  # refuse what cannot stream before loading anything heavy
        step_config(state_io.strip_state_io(artifact.model_config, artifact.family, found), artifact.family,
                    steps=steps, batch_size=batch_size)
    plain = state_io.plain_model(artifact, keras3=True, unsafe=unsafe, custom_objects=custom_objects,
                                 progress=step_msg)
    model = plain.model
    if state == "internal":
        batch_size = batch_size or 1
    step_msg("building the step model")
    step_model, plan = build_step_model(model, steps=steps, batch_size=batch_size, custom_objects=custom_objects)
    report = None
    if verify:
        step_msg(f"stepping through {verify_length} timesteps against the full-sequence model")
        # The arithmetic of streaming does not depend on a fixed batch: check batch 1 and 8 (and
        # the requested one) with any-batch step models; the written artifacts are checked below.
        batches = sorted({*VERIFY_BATCHES, *([batch_size] if batch_size else [])})
        report = verify_streaming(model, steps=sorted({*VERIFY_STEPS, steps}), batches=batches,
                                  length=verify_length, custom_objects=custom_objects)
        raise_if_failed(report)
    stateful = StatefulStepModel(step_model, plan) if state == "internal" else None
    converted = None
    with saving.staged_outputs(force=force) as outputs:
        temp = outputs.temp(output, directory=(fmt == "savedmodel"))
        step_msg(f"writing {fmt}")
        if stateful is not None:
            stateful.save(temp)
        elif fmt == "savedmodel":
            saving.export_savedmodel(step_model, temp, list(plan.input_names), list(plan.output_names))
        else:
            saving.save_keras_model(step_model, temp, "keras")
        if tflite_path is not None:
            from surgery.io import tflite

            step_msg("converting to TFLite")
            converted = tflite.convert(stateful if stateful is not None else step_model, plan)
            tflite_temp = outputs.temp(tflite_path)
            tflite_temp.write_bytes(converted.content)
        if verify:
            step_msg("verifying what was written")
            _verify_written(temp, fmt, stateful, step_model, model, plan, report, converted, custom_objects)
            raise_if_failed(report)
        extra = {
            "state": state,
            "stream": plan.as_dict(),
            "signatures": _signature_doc(plan, state),
            "verification": report.as_dict() if report is not None else None,
            "tflite": ({"path": tflite_path.name, "ops": converted.report.as_dict()} if converted is not None else None),
        }
        extra["input_model"] = plain.as_dict()
        extra["declared_per_step"] = sorted(_DECLARED_PER_STEP.get())
        manifest = saving.build_manifest(
            artifact=output, fmt=fmt, family="keras3", operation="stream", plan=plan.states, source=artifact.path,
            source_sha256=saving.sha256_of(artifact.path), model_inputs=list(plan.input_names),
            model_outputs=list(plan.output_names), extra=extra,
        )
        # The .tflite is described by this manifest: it is moved in after it, with the model.
        manifest_file = outputs.commit({output: manifest})[output]
    return StreamResult(output, manifest_file, fmt, state, plan, report, tflite_path,
                        converted.report if converted is not None else None, plain)


def _signature_doc(plan: StreamPlan, state: str) -> dict:
    if state == "internal":
        names = [s.name for s in plan.states.outputs]
        return {
            "serving_default": {"inputs": list(plan.original_inputs), "outputs": list(plan.original_outputs)},
            "reset": {"inputs": [], "outputs": names},
            "read_state": {"inputs": [], "outputs": names},
            "assign_state": {"inputs": names, "outputs": names},
        }
    return {"serving_default": {"inputs": list(plan.input_names), "outputs": list(plan.output_names)}}


def _verify_written(temp: Path, fmt: str, stateful, step_model, model, plan: StreamPlan, report: StreamReport,
                    converted, custom_objects) -> None:
    from surgery.io import tflite

    keras_step = compiled_call(step_model)
    if stateful is not None:
        verify_internal("savedmodel", _saved_internal(temp, plan), model, plan, report, custom_objects=custom_objects)
    elif fmt == "savedmodel":
        verify_backend("savedmodel", _saved_external(temp, plan), model, plan, report, custom_objects=custom_objects)
    else:
        from surgery.io.loading import load_model

        reloaded = load_model(temp, custom_objects=custom_objects)
        verify_backend("keras file", compiled_call(reloaded), model, plan, report, custom_objects=custom_objects)
    if converted is not None:
        if stateful is not None:
            verify_internal("tflite", _tflite_internal(converted.content, plan), model, plan, report,
                            custom_objects=custom_objects)
        else:
            verify_backend("tflite", tflite.external_step(converted.content, plan), model, plan, report,
                           keras_step=keras_step, custom_objects=custom_objects)
