"""Is streaming right? Stream random inputs chunk by chunk (external or internal state, live,
SavedModel or TFLite) and compare every chunk and the carried states with the full-sequence
model: `verify_streaming`, `verify_backend`, `verify_internal`, `StreamReport`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from surgery.check import tolerance as tol_policy
from surgery.check.report import CheckReport, raise_if_failed  # noqa: F401  (raise_if_failed re-exported)
from surgery.errors import UsageError
from surgery.io.quiet import import_tensorflow, quiet
from surgery.check.verify import input_id_limits
from surgery.ops.stream.plan import SEQ, STATIC, STEP, StreamPlan
from surgery.ops.stream.config import sequence_config
from surgery.ops.stream.step import (
    build_any_length,
    serialize_model,
    build_full_step_model,
    build_step_model,
    compiled_call,
)


VERIFY_LENGTH = 500
VERIFY_STEPS = (1, 4, 16)
VERIFY_BATCHES = (1, 8)


@dataclass
class StreamReport(CheckReport):
    """Streaming against the full-sequence model (surgery.check.report.CheckReport): `checks`
    holds the worst comparison per compared value, all under one bound (`tolerance`).

    runs: one entry per (steps, batch, initial state): `outputs` (every step vs the
    full-sequence model with the same initial state), `states` (after chunks at checkpoints
    vs the full-sequence model's final states on that prefix), `original` (zero initial
    state: vs the untouched original model on prefixes); each max |diff| per name.
    backends: the same comparisons for exported artifacts (SavedModel, TFLite), and
    against the Keras step model for TFLite.
    """

    length: int = 0
    tolerance: tol_policy.Bound | float = 0.0  # the policy's bound; a float is a fixed absolute bound
    runs: list[dict] = field(default_factory=list)
    backends: dict[str, dict] = field(default_factory=dict)
    checks_label: str = "compared value(s)"

    def __post_init__(self):
        self.tolerance = tol_policy.as_bound(self.tolerance)
        self.what = self.what or f"streaming against the full-sequence model (T={self.length})"

    def check(self, key: str, got, want, bound: tol_policy.Bound | None = None) -> float:
        """Compare elementwise under the report's bound (or `bound`), keep the worst per key; max |diff|."""
        result = tol_policy.compare(got, want, bound or self.tolerance)
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

    def configurations(self) -> str:
        steps = sorted({r["steps"] for r in self.runs})
        batches = sorted({r["batch"] for r in self.runs})
        inits = sorted({r["initial_state"] for r in self.runs}, reverse=True)
        return (f"T={self.length}, K {', '.join(map(str, steps))}, batch {', '.join(map(str, batches))}, "
                f"{' and '.join(inits)} initial state")

    def detail_lines(self) -> list[str]:
        lines = [f"  runs: {self.configurations()}"] if self.runs else []
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
        bad = [key for key, c in self.checks.items() if not c.ok]
        if bad:
            lines.append("  out of bound: " + "; ".join(self.checks[k].describe(k) for k in bad))
        return lines

    def details(self) -> dict:
        return {
            "length": self.length,
            "tolerance": self.tolerance.describe(),
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
    from surgery.check.verify import random_value

    rng = np.random.default_rng(seed)
    values = []
    limits = list(limits or []) + [None] * len(plan.original_inputs)
    for tensor, name, limit in zip(model_inputs[: plan.states.original_inputs], plan.original_inputs, limits):
        sequence = name in plan.sequence_inputs
        rest = [d if d is not None else 1 for d in tensor.shape[2 if sequence else 1:]]
        shape = [batch, length, *rest] if sequence else [batch, *rest]
        value = random_value(rng, shape, np.dtype(str(tensor.dtype)), limit)
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
    _family, config = serialize_model(model)
    sequence_model, seq_plan = build_full_step_model(model, custom_objects=custom_objects)
    original = build_any_length(sequence_config(config, "keras3"), model, custom_objects)
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

    for batch, inputs, refs, init_key, init in _cases(sequence_model, seq_plan, sequence_fn, original_fn, batches,
                                                       length, seed):
        for k in steps:
            streamed, states_at = stream_through(step_for, inputs, init, seq_plan, steps=k, length=length,
                                                 checkpoints=_checkpoints(k, length))
            result = _compare_run(refs, init_key, init, streamed, states_at, report.check)
            report.runs.append({"steps": k, "batch": batch, "initial_state": init_key, **result})
    return report


def _fold_run(result: dict, report: StreamReport, name: str, refs, init_key, init, streamed, states_at,
              bound: tol_policy.Bound | None = None) -> None:
    """Compare one streamed run of backend `name` (checked into the report) and keep the worst
    error per output and state in `result`."""
    compared = _compare_run(refs, init_key, init, streamed, states_at,
                            lambda key, got, want: report.check(f"{name}: {key}", got, want, bound))
    for key in ("outputs", "states"):
        for out_name, err in compared[key].items():
            result[key][out_name] = max(result[key].get(out_name, 0.0), err)


def _cases(sequence_model, seq_plan, sequence_fn, original_fn, batches, length: int, seed: int):
    """(batch, inputs, references, "zero"|"random", initial states) of every streamed check: the
    same seeded inputs and initial states for the Keras step models and for exported backends."""
    for batch in batches:
        inputs = stream_inputs(sequence_model.inputs, seq_plan, batch=batch, length=length, seed=seed + batch,
                               limits=input_id_limits(sequence_model))
        refs = _References(sequence_fn, original_fn, seq_plan, inputs, length)
        for init_key in ("zero", "random"):
            yield batch, inputs, refs, init_key, initial_states(seq_plan, batch=batch, random=init_key == "random",
                                                                seed=seed + 7 * batch)


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

    def only(fn):
        def chunk(size):
            if size != k:
                raise UsageError(f"{name} runs chunks of {k} steps, asked for {size}")
            return fn
        return chunk

    for batch, inputs, refs, init_key, init in _cases(sequence_model, seq_plan, sequence_fn, None, batches,
                                                       length, seed):
        streamed, states_at = stream_through(only(step_fn), inputs, init, seq_plan, steps=k, length=length,
                                             checkpoints=_checkpoints(k, length))
        expected = None
        if keras_step is not None:
            expected, _ = stream_through(only(keras_step), inputs, init, seq_plan, steps=k, length=length)
        bound = _backend_bound(report.tolerance, refs, init_key, init, streamed, states_at, expected,
                               seed=seed + batch)
        _fold_run(result, report, name, refs, init_key, init, streamed, states_at, bound)
        for out_name, got, want in zip(seq_plan.original_outputs, streamed, expected or []):
            result["vs_keras_step"][out_name] = max(
                result["vs_keras_step"].get(out_name, 0.0),
                report.check(f"{name} vs Keras step model: {out_name}", got, want, bound))
    report.backends[name] = result
    return result


def _backend_bound(plain: tol_policy.Bound, refs: _References, init_key, init, streamed, states_at, expected,
                   *, seed: int) -> tol_policy.Bound:
    """`plain`, or, where this run exceeds it, `plain` plus the full-sequence model's measured
    amplification of one float32 rounding of its inputs and initial states.

    An exported backend computes with kernels of its own (TFLite: other fused ops and
    summation orders), so it rounds differently from Keras; a trained recurrence over T
    steps, and the layers after it, amplify those roundings like any other (a GRU with a
    dense head: 7e-4 on a softmax output, while TFLite and Keras are each 2e-4 from a float64
    run). The term is the policy's (surgery/check/tolerance.py), capped there.
    """
    fits = []

    def judge(_key, got, want) -> float:
        fits.append(tol_policy.compare(got, want, plain).ok)
        return 0.0

    _compare_run(refs, init_key, init, streamed, states_at, judge)
    for got, want in zip(streamed, expected or []):
        judge(None, got, want)
    if all(fits):
        return plain
    rng = np.random.default_rng(seed)
    return tol_policy.with_sensitivity(plain, refs.full(init_key, init),
                                       lambda: refs.sequence_fn(_nudged(refs.inputs, rng) + _nudged(init, rng)))


def _nudged(values: list, rng) -> list:
    """Each floating array one ulp up or down (random sign per element); ids unchanged."""
    out = []
    for value in values:
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.floating):
            direction = rng.choice((-np.inf, np.inf), size=value.shape).astype(value.dtype)
            value = np.nextafter(value, direction).astype(value.dtype)
        out.append(value)
    return out


# --------------------------------------------------------------------------------------
# File to file: `lstm-surgery stream`
# --------------------------------------------------------------------------------------


def saved_external(directory: Path, plan: StreamPlan) -> Callable[[list], list]:
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


def saved_internal(directory: Path, plan: StreamPlan) -> _InternalDriver:
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


def tflite_internal(content: bytes, plan: StreamPlan) -> _InternalDriver:
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
    for _batch, inputs, refs, init_key, init in _cases(sequence_model, seq_plan, sequence_fn, None, [batch],
                                                        length, seed):
        driver.start(init)
        streamed, states_at = stream_through(lambda _k: driver, inputs, init, seq_plan, steps=k, length=length,
                                             checkpoints=_checkpoints(k, length))
        bound = _backend_bound(report.tolerance, refs, init_key, init, streamed, states_at, None, seed=seed + batch)
        _fold_run(result, report, name, refs, init_key, init, streamed, states_at, bound)
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
