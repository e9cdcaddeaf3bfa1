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

Modules: plan (tensor kinds, StreamPlan) -> config (the config rewrite) -> step (build the step
model) -> stateful (internal state) -> verify (stream and compare) -> write (stream_file);
session.py is StreamSession over the external step model.
"""

from surgery.ops.stream.plan import (  # noqa: F401
    SEQ,
    STEP,
    STATIC,
    STATE,
    STATE_MODES,
    UNROLL_MAX_STEPS,
    RANK_AGNOSTIC,
    SEQUENCE_PER_STEP,
    per_step_layers,
    is_declared_per_step,
    undeclared_layers,
    AXIS_LAYERS,
    MERGE_LAYERS,
    ACROSS_TIME,
    ELEMENTWISE_OPS,
    REDUCE_OPS,
    StreamPlan,
    ref_list,
    replace_refs,
    where_text,
    refuse_error,
    rank_of,
    WalkContext,
)
from surgery.ops.stream.config import (  # noqa: F401
    step_config,
    sequence_config,
)
from surgery.ops.stream.step import (  # noqa: F401
    serialize_model,
    build_step_model,
    build_full_step_model,
    build_sequence_model,
    build_any_length,
    to_step_model,
    compiled_call,
)
from surgery.ops.stream.stateful import (  # noqa: F401
    StatefulStepModel,
)
from surgery.ops.stream.verify import (  # noqa: F401
    VERIFY_LENGTH,
    VERIFY_STEPS,
    VERIFY_BATCHES,
    StreamReport,
    stream_inputs,
    initial_states,
    stream_through,
    verify_streaming,
    verify_backend,
    raise_if_failed,
    saved_external,
    saved_internal,
    tflite_internal,
    verify_internal,
)
from surgery.ops.stream.write import (  # noqa: F401
    StreamResult,
    stream_file,
)
