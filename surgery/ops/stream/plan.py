"""What streams and how: the tensor kinds (sequence, per-step, static, state), the layers that
run per step or look across time, and StreamPlan (the step model's inputs, outputs and states).

The walk that classifies every tensor and rewrites the config is in config.py; see the package
doc (surgery/ops/stream/__init__.py) for the whole picture.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable
from dataclasses import dataclass, field


from surgery.errors import NotSupportedError
from surgery.graph.level import Level
from surgery.graph.rewire import RewirePlan, StateTensor


SEQ = "sequence"      # has a time axis (batch, time, ...)
STEP = "per-step"     # one step's value (batch, ...) in the original; (batch, K, ...) when streaming
STATIC = "static"     # independent of time
STATE = "state"       # a recurrent layer's final state

STATE_MODES = ("external", "internal")
UNROLL_MAX_STEPS = 32

# Per-timestep layers that act elementwise or on the last axis whatever the rank: they work
# unchanged on (batch, K, ...) and on what used to be (batch, ...).
RANK_AGNOSTIC = frozenset({
    "Dense", "Dropout", "GaussianNoise", "GaussianDropout", "AlphaDropout", "Activation",
    "ReLU", "LeakyReLU", "ELU", "Identity", "ActivityRegularization", "Rescaling",
})
# Per-timestep on a sequence (they never mix time steps).
SEQUENCE_PER_STEP = RANK_AGNOSTIC | {"Masking", "Embedding", "TimeDistributed", "SpatialDropout1D"}
# Layers the user declared as acting on each timestep (`stream --per-step LAYER`): a layer name,
# a class name or a registered name. A context variable, so every config the verification
# builds (step, full-sequence, any-length) sees the same declaration without a new argument.
DECLARED_PER_STEP: contextvars.ContextVar[frozenset] = contextvars.ContextVar("per_step", default=frozenset())


@contextlib.contextmanager
def per_step_layers(names: Iterable[str]):
    """Within the block, streaming treats these layers (by layer, class or registered name) as
    acting on each timestep separately, as it does Dense or Masking."""
    token = DECLARED_PER_STEP.set(frozenset(names))
    try:
        yield
    finally:
        DECLARED_PER_STEP.reset(token)


def is_declared_per_step(entry: dict) -> bool:
    declared = DECLARED_PER_STEP.get()
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
AXIS_LAYERS = {"LayerNormalization": "axis", "BatchNormalization": "axis", "UnitNormalization": "axis",
                "Softmax": "axis", "Normalization": "axis"}
# Multi-input layers that combine tensors step by step.
MERGE_LAYERS = frozenset({"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"})

# Layers that mix time steps, with the reason given to the user.
ACROSS_TIME = {
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
ELEMENTWISE_OPS = frozenset({
    "NotEqual", "Equal", "Greater", "GreaterEqual", "Less", "LessEqual", "LogicalAnd", "LogicalOr",
    "LogicalNot", "LogicalXor", "Cast", "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum",
    "Minimum", "Abs", "Negative", "Exp", "Log", "Sqrt", "Square", "Tanh", "Sigmoid", "Relu", "Where",
    "Clip", "Power", "Sign", "Round", "Floor", "Ceil",
})
REDUCE_OPS = frozenset({"Any", "All", "Sum", "Mean", "Max", "Min", "Prod", "Argmax", "Argmin", "ExpandDims",
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


def ref_list(structure) -> list[tuple]:
    if isinstance(structure, list) and len(structure) == 3 and isinstance(structure[0], str):
        return [tuple(structure)]
    if isinstance(structure, dict):
        return [tuple(v) for v in structure.values()]
    return [tuple(item) for item in structure or []]


def replace_refs(structure, old: tuple, new: tuple):
    if isinstance(structure, list) and len(structure) == 3 and isinstance(structure[0], str):
        return list(new) if tuple(structure) == old else structure
    if isinstance(structure, dict):
        return {k: replace_refs(v, old, new) for k, v in structure.items()}
    return [replace_refs(item, old, new) for item in structure]


def where_text(path: tuple, name: str) -> str:
    return "/".join((*path, name))


def refuse_error(path: tuple, entry: dict, reason: str) -> NotSupportedError:
    from surgery.graph.sites import describe_class

    return NotSupportedError(
        f"cannot stream layer {where_text(path, Level.name_of(entry))!r} ({describe_class(entry)}): {reason}"
    )


def rank_of(dialect, tensor) -> int | None:
    shape = dialect.tensor_shape(tensor)
    return len(shape) if shape is not None else None


@dataclass
class WalkContext:
    steps: int | None
    unroll: bool
    relax: bool = False  # only free the time axis (the original model at any length)
    per_step_sites: list = field(default_factory=list)
    wrapped: list = field(default_factory=list)
    masked: list = field(default_factory=list)
