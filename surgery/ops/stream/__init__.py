"""Streaming: a sequence model run one chunk of timesteps at a time, its state carried between calls.

plan.py decides what is per-step and builds the step config; step.py builds, runs and verifies the
step model; session.py is StreamSession over it.
"""

from surgery.ops.stream.step import (  # noqa: F401
    STATE_MODES,
    StatefulStepModel,
    StreamPlan,
    StreamReport,
    StreamResult,
    build_full_step_model,
    build_sequence_model,
    build_step_model,
    compiled_call,
    initial_states,
    raise_if_failed,
    sequence_config,
    step_config,
    stream_file,
    stream_inputs,
    stream_through,
    to_step_model,
    verify_backend,
    verify_streaming,
)
