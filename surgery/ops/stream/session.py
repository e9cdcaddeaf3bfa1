"""StreamSession: feed a recurrent model one step (or K steps) at a time; it keeps the state.

    session = StreamSession(model)             # a full-sequence Keras model (or a model file)
    y = session.step(x_t)                      # x_t: (batch, features) or (batch, K, features)
    session.state                              # {"lstm_h": array, "lstm_c": array, ...}
    session.set_state({...}); session.reset()

The session builds the external step model (surgery.ops.stream.step) and runs it on the fastest
backend that works here, in this order: the TFLite/LiteRT interpreter (builtin ops, tensors
bound by signature name), a traced tf.function, plain Keras. Each candidate is checked
against the Keras step model on a random chunk and random state before it is used; one that
fails to build or to match falls back to the next (see `session.fallbacks`).

On TFLite at a fixed batch (every tensor shape static) the states stay in the interpreter's
input tensors between steps (tflite.CarriedStep): a step copies the input in, invokes, copies
the output out and each state output onto its input. With one input stepped one timestep per
call, `step(x)` for x of exactly (batch, features) goes straight to that, with no other
Python work.
"""

from __future__ import annotations

import numpy as np

from surgery.errors import UsageError
from surgery.io.quiet import quiet

BACKENDS = ("tflite", "function", "keras")


class _ArrayCarrier:
    """The states as arrays between calls of a backend's run(inputs + states) -> outputs + states."""

    def __init__(self, run, specs, count: int):
        self._run, self._specs, self._count = run, specs, count
        self._states: list = []
        self.batch: int | None = None

    def start(self, batch: int) -> None:
        self._states = [np.zeros((batch, *s.shape), dtype=s.dtype) for s in self._specs]
        self.batch = batch

    def load(self, states: list) -> None:
        self._states = list(states)
        self.batch = states[0].shape[0] if states else self.batch

    def clear(self) -> None:
        self._states, self.batch = [], None

    def states(self) -> list[np.ndarray]:
        return [np.array(v) for v in self._states]

    def carry(self, values: list) -> list:
        outputs = self._run(values + self._states)
        self._states = outputs[self._count:]
        return outputs[:self._count]


class StreamSession:
    """Step a recurrent model through time with carried state.

    model:      a Keras model (the full-sequence model) or a path to a model file.
    steps:      timesteps per call (K).
    batch_size: fixed batch (default 1, the fastest); None accepts any batch, set by the
                first step or by reset(batch_size=...).
    backend:    "auto" (fastest that works), or one of "tflite", "function", "keras".
    """

    def __init__(self, model, *, steps: int = 1, batch_size: int | None = 1, backend: str = "auto",
                 check: bool = True, num_threads: int = 1, unsafe: bool = False, custom_objects=None):
        from surgery.ops import stream

        if backend != "auto" and backend not in BACKENDS:
            raise UsageError(f"unknown backend {backend!r}; choose auto, {', '.join(BACKENDS)}")
        if not hasattr(model, "layers"):
            from surgery.io.loading import load_model

            model = load_model(model, unsafe=unsafe, custom_objects=custom_objects)
        self.step_model, self.plan = stream.build_step_model(model, steps=steps, batch_size=batch_size,
                                                             custom_objects=custom_objects)
        self.steps = steps
        self.batch_size = batch_size
        self.fallbacks: list[tuple[str, str]] = []
        self.tflite_report = None
        self._count = len(self.plan.original_outputs)
        self._names_out = list(self.plan.original_outputs)
        self._state_names = [s.name for s in self.plan.state_outputs]
        self._state_specs = list(self.plan.state_inputs)
        self._ranks = list(self.plan.input_ranks)
        self._sequence = [n in self.plan.sequence_inputs for n in self.plan.original_inputs]
        self._dtypes = [np.dtype(str(t.dtype)) for t in self.step_model.inputs]
        self._reference = None
        self.check_report = None  # CheckReport: the chosen backend against the Keras step model
        candidates = BACKENDS if backend == "auto" else (backend,)
        self._run = self._loop = None
        for name in candidates:
            try:
                run = self._make(name, num_threads)
                checked = self._check(name, run) if check and name != "keras" else None
                loop = self._carrier(name, run)  # after run's last call: it may take the tensors over
                if checked is not None and name == "tflite":
                    self._check_carrier(name, loop, *checked[:3])
            except Exception as error:  # a backend that does not work here: try the next one
                if backend != "auto":
                    raise
                self.fallbacks.append((name, " ".join(f"{type(error).__name__}: {error}".split())[:300]))
                continue
            self.backend, self._run, self._loop = name, run, loop
            self.check_report = checked[3] if checked is not None else None
            break
        if self._run is None:
            raise UsageError("no streaming backend works here: " + "; ".join(f"{n}: {r}" for n, r in self.fallbacks))
        self.reset()
        self._fast, self._fast_shape = self._fast_step()

    # -- backends ------------------------------------------------------------------------------
    def _make(self, name: str, num_threads: int):
        from surgery.ops import stream
        from surgery.io import tflite

        if name == "tflite":
            converted = tflite.convert(self.step_model, self.plan, allow_flex=True)
            self.tflite_report = converted.report
            interpreter = tflite.load_interpreter(converted.content, num_threads=num_threads,
                                                  needs_flex=converted.flex_needed)
            return tflite.SignatureStep(interpreter, self.plan.input_names, self.plan.output_names)
        if name == "function":
            return stream.compiled_call(self.step_model)
        model, count = self.step_model, len(self.step_model.inputs)

        def keras_call(values):
            with quiet():
                outputs = model(values if count > 1 else values[0], training=False)
            outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
            return [np.asarray(v) for v in outputs]

        return keras_call

    def _check(self, name: str, run):
        """The backend must reproduce the Keras step model on a random chunk and state.

        Returns (inputs, states, outputs) of that run, for `_check_carrier`, and the report."""
        from surgery.ops import stream
        from surgery.check import tolerance
        from surgery.check.report import CheckReport
        from surgery.check.verify import input_id_limits

        if self._reference is None:
            self._reference = self._make("keras", 1)
        batch = self.batch_size or 2
        inputs = stream.stream_inputs(self.step_model.inputs, self.plan, batch=batch, length=self.steps or 1, seed=1,
                                      limits=input_id_limits(self.step_model))
        states = stream.initial_states(self.plan, batch=batch, random=True, seed=2)
        values = inputs + states
        got, want = run(values), self._reference(values)
        bound = tolerance.widest(tolerance.bound_for(s.dtype, steps=self.steps or 1) for s in self._state_specs)
        report = CheckReport(what=f"the {name} backend against the Keras step model", batch=batch,
                             checks={out: tolerance.compare(g, w, bound)
                                     for out, g, w in zip(self.plan.output_names, got, want)},
                             checks_label="step output(s)")
        if not report.ok:  # this backend is not used; the next one is tried
            raise UsageError(f"{name} backend differs from the Keras step model: {report.summary()}")
        return inputs, states, got, report

    @staticmethod
    def _check_carrier(name: str, loop, inputs: list, states: list, expected: list) -> None:
        """States carried in the interpreter's tensors must give exactly what its own call gave."""
        loop.load([np.array(s) for s in states])
        got = loop.carry(inputs) + loop.states()
        if len(got) != len(expected) or not all(np.array_equal(g, e) for g, e in zip(got, expected)):
            raise UsageError(f"{name} backend: stepping with the states carried differs from its own call")

    def _carrier(self, name: str, run):
        """What keeps the states between steps: the interpreter's tensors on TFLite when every
        shape is static, else arrays."""
        from surgery.io import tflite

        if name == "tflite" and tflite.CarriedStep.fits(run.interpreter):  # every shape static: a fixed batch
            return tflite.CarriedStep(run.interpreter, self.plan.input_names, self.plan.output_names,
                                      carried=len(self._state_specs))
        return _ArrayCarrier(run, self._state_specs, self._count)

    def _fast_step(self):
        """(step for x of exactly (batch, features), that shape) when the states stay in the
        TFLite interpreter (every shape static: a fixed batch) and one input is stepped one
        timestep per call; else (None, None)."""
        from surgery.io import tflite

        loop = self._loop
        if not (isinstance(loop, tflite.CarriedStep) and self.steps == 1 and self._sequence == [True]):
            return None, None
        x_view = loop.inputs[0][:, 0]
        outputs = [v if kind == "static" else v[:, 0] for v, kind in zip(loop.outputs, self.plan.output_kinds)]
        copyto, invoke, pass_states = np.copyto, loop.invoke, loop.pass_states
        if self._count == 1:
            (y_view,) = outputs

            def step(x):
                copyto(x_view, x, casting="unsafe")
                invoke()
                y = y_view.copy()
                pass_states()
                return y
        else:
            names = self._names_out

            def step(x):
                copyto(x_view, x, casting="unsafe")
                invoke()
                ys = {name: view.copy() for name, view in zip(names, outputs)}
                pass_states()
                return ys

        return step, x_view.shape

    # -- state ---------------------------------------------------------------------------------
    def reset(self, batch_size: int | None = None) -> None:
        """Zero every state. With a dynamic batch, batch_size sets it (else the next step does)."""
        if batch_size is not None and self.batch_size is not None and batch_size != self.batch_size:
            raise UsageError(f"this session has a fixed batch size of {self.batch_size}, received {batch_size}")
        batch = self.batch_size or batch_size
        if batch is None:
            self._loop.clear()
        else:
            self._loop.start(batch)

    @property
    def state(self) -> dict[str, np.ndarray]:
        """The current states by name (`<site>_<role>`), copies."""
        if self._loop.batch is None:
            return {}
        return dict(zip(self._state_names, self._loop.states()))

    def get_state(self) -> dict[str, np.ndarray]:
        return self.state

    def set_state(self, states: dict) -> None:
        """Set every state; keys `<site>_<role>` (or the input names `<site>_<role>_in`)."""
        values = []
        batch = None
        for name, spec in zip(self._state_names, self._state_specs):
            value = states.get(name, states.get(spec.name))
            if value is None:
                raise UsageError(f"set_state: no value for state {name!r}; states: {', '.join(self._state_names)}")
            value = np.array(value, dtype=spec.dtype)
            if value.shape[1:] != tuple(spec.shape) or value.ndim != len(spec.shape) + 1:
                raise UsageError(f"set_state: state {name!r} needs shape (batch, {', '.join(map(str, spec.shape))}),"
                                 f" received {value.shape}")
            batch = batch or value.shape[0]
            if value.shape[0] != batch or (self.batch_size is not None and batch != self.batch_size):
                raise UsageError(f"set_state: state {name!r} has batch {value.shape[0]}, expected "
                                 f"{self.batch_size or batch}")
            values.append(value)
        unknown = set(states) - set(self._state_names) - {s.name for s in self._state_specs}
        if unknown:
            raise UsageError(f"set_state: unknown state {sorted(unknown)[0]!r}; states: {', '.join(self._state_names)}")
        self._loop.load(values)

    # -- stepping ------------------------------------------------------------------------------
    def _inputs(self, x) -> tuple[list[np.ndarray], bool]:
        if isinstance(x, np.ndarray) and len(self._ranks) == 1:
            values = [x]
        elif isinstance(x, dict):
            names = self.plan.original_inputs
            missing = [n for n in names if n not in x]
            if missing:
                raise UsageError(f"missing input {missing[0]!r}; this model takes {', '.join(names)}")
            values = [np.asarray(x[n]) for n in names]
        elif isinstance(x, (list, tuple)) and len(self._ranks) > 1:
            values = [np.asarray(v) for v in x]
        else:
            values = [np.asarray(x)]
        if len(values) != len(self._ranks):
            raise UsageError(f"this model takes {len(self._ranks)} input(s), received {len(values)}")
        squeezed = False
        out = []
        for value, rank, sequence, dtype, shape in zip(values, self._ranks, self._sequence, self._dtypes,
                                                       self.plan.input_shapes):
            if sequence and value.ndim == rank - 1:
                if self.steps != 1:
                    raise UsageError(f"this session steps {self.steps} timesteps at a time: give inputs of shape "
                                     f"(batch, {self.steps}, ...), received {value.shape}")
                value = value[:, None]
                squeezed = True
            elif value.ndim != rank:
                raise UsageError(f"input of shape {value.shape} has rank {value.ndim}; expected {rank}"
                                 + (f" (or {rank - 1} without the time axis)" if sequence and self.steps == 1 else ""))
            elif sequence and value.shape[1] != self.steps:
                raise UsageError(f"this session steps {self.steps} timesteps at a time, received {value.shape[1]}")
            if any(d is not None and d != v for d, v in zip(shape[1:], value.shape[1:])):
                raise UsageError(f"input of shape {value.shape} does not fit the step model's "
                                 f"(batch, {', '.join('None' if d is None else str(d) for d in shape[1:])})")
            if value.dtype != dtype:
                value = value.astype(dtype)
            out.append(value)
        return out, squeezed

    def step(self, x):
        """Run one chunk; returns the output (a dict by name when the model has several)."""
        if self._fast is not None and type(x) is np.ndarray and x.shape == self._fast_shape:
            return self._fast(x)
        values, squeezed = self._inputs(x)
        batch = values[0].shape[0]
        if self._loop.batch is None:
            self._loop.start(batch)
        elif self._loop.batch != batch:
            raise UsageError(f"the state has batch {self._loop.batch} but the input has batch {batch}; "
                             "call reset(batch_size=...) to change it")
        outputs = self._loop.carry(values)
        if squeezed:
            outputs = [o[:, 0] if kind != "static" else o for o, kind in zip(outputs, self.plan.output_kinds)]
        return outputs[0] if self._count == 1 else dict(zip(self._names_out, outputs))

    __call__ = step

    def run(self, sequence):
        """Step through a whole sequence (length a multiple of steps); outputs joined along time."""
        values = [sequence] if isinstance(sequence, np.ndarray) else sequence
        if isinstance(values, dict):
            values = [values[n] for n in self.plan.original_inputs]
        values = [np.asarray(v) for v in values]
        lengths = {v.shape[1] for v, seq in zip(values, self._sequence) if seq}
        if len(lengths) != 1:
            raise UsageError(f"sequence inputs must share one length, received {sorted(lengths)}")
        length = lengths.pop()
        if length % self.steps:
            raise UsageError(f"sequence length {length} is not a multiple of the session's {self.steps} steps")
        pieces = []
        for start in range(0, length, self.steps):
            chunk = [v[:, start:start + self.steps] if seq else v for v, seq in zip(values, self._sequence)]
            result = self.step(chunk if len(chunk) > 1 else chunk[0])
            pieces.append(result if isinstance(result, dict) else {self._names_out[0]: result})
        joined = {name: np.concatenate([p[name] for p in pieces], axis=1) if kind != "static" else pieces[-1][name]
                  for name, kind in zip(self._names_out, self.plan.output_kinds)}
        return joined[self._names_out[0]] if self._count == 1 else joined

    def __repr__(self) -> str:
        return (f"StreamSession(backend={self.backend!r}, steps={self.steps}, batch_size={self.batch_size}, "
                f"states={self._state_names})")
