"""`state="internal"`: the step model inside a tf.Module that keeps the states in variables
(`reset_state`, `get_state`, `set_state`; SavedModel signatures `serving_default`, `reset`,
`read_state`, `assign_state`).
"""

from __future__ import annotations


import numpy as np

from surgery.errors import UsageError
from surgery.io.quiet import import_tensorflow, quiet
from surgery.ops.stream.plan import StreamPlan


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
