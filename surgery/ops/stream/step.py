"""Build the step model (and the any-length sequence model it is checked against) from a live
model: `build_step_model`, `build_full_step_model`, `build_sequence_model`, `to_step_model`,
`compiled_call`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np

from surgery.errors import NotSupportedError, UsageError
from surgery.io.quiet import import_keras, import_tensorflow, quiet
from surgery.ops.stream.plan import STATE_MODES
from surgery.ops.stream.config import sequence_config, step_config
from surgery.ops.stream.stateful import StatefulStepModel


def serialize_model(model) -> tuple[object, dict]:
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

    from surgery.io import writers

    _family, config = serialize_model(model)
    new_config, plan = step_config(config, "keras3", steps=steps, batch_size=batch_size, unroll=unroll)
    step = _build(new_config, model, custom_objects)
    input_names, output_names = writers.signature_names(step, plan.states)
    return step, replace(plan, input_names=tuple(input_names), output_names=tuple(output_names),
                         input_shapes=tuple(tuple(t.shape) for t in step.inputs),
                         output_shapes=tuple(tuple(t.shape) for t in step.outputs))


def build_full_step_model(model, *, custom_objects=None):
    """(model, plan): the step model's graph over the whole sequence at once (any length,
    any batch, states in and out): the reference that streaming is compared with."""
    from dataclasses import replace

    from surgery.io import writers

    _family, config = serialize_model(model)
    new_config, plan = step_config(config, "keras3", steps=None, batch_size=None, unroll=False)
    built = build_any_length(new_config, model, custom_objects)
    input_names, output_names = writers.signature_names(built, plan.states)
    return built, replace(plan, input_names=tuple(input_names), output_names=tuple(output_names))


def build_sequence_model(model, *, custom_objects=None):
    """The original model at any sequence length and batch size (weights shared by copy)."""
    _family, config = serialize_model(model)
    return build_any_length(sequence_config(config, "keras3"), model, custom_objects)


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


def build_any_length(config: dict, source, custom_objects=None):
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
