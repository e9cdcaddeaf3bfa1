"""TFLite export of step models: conversion with named signatures, an op report, and a
step function that binds every tensor by its signature name.

Conversion goes through concrete functions whose input specs carry the signature names
(`<input>`, `<site>_<role>_in`) and which return dicts keyed by output names (`<output>`,
`<site>_<role>`), so the converted model's `serving_default` signature uses exactly the
names of the SavedModel signature. The Keras weights are tracked as raw variables so that
the converter freezes them into constants (tracked only through the Keras model they stay
resource variables, which the interpreter leaves uninitialized).

Builtin ops are tried first; only if that fails are TensorFlow (Flex) ops allowed, and the
report says which ones were needed.

An unrolled step model is traced *lean* (see `lean_trace`, `external_functions`): the same
arithmetic in the same order, without the layout ops Keras adds around a short unrolled loop or
for a batch of one, so that at a fixed batch the graph is as small as the same step written by
hand.
"""

from __future__ import annotations

import contextlib
import io
import threading
import warnings
from dataclasses import dataclass, field

import numpy as np

from surgery.errors import NotSupportedError, UsageError
from surgery.io.quiet import import_keras, import_tensorflow, quiet

# Ops that run a whole recurrent layer in one kernel.
FUSED_RECURRENT_OPS = frozenset({
    "UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "LSTM",
    "UNIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_RNN", "RNN",
})
LOOP_OPS = frozenset({"WHILE"})
VARIABLE_OPS = frozenset({"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"})


@dataclass(frozen=True)
class OpReport:
    """Which operators a converted model uses, counted over all its subgraphs."""

    ops: dict[str, int]
    subgraphs: int
    flex: tuple[str, ...] = ()
    custom: tuple[str, ...] = ()
    signatures: dict = field(default_factory=dict)

    @property
    def fused_recurrent(self) -> bool:
        return any(op in FUSED_RECURRENT_OPS for op in self.ops)

    @property
    def loop(self) -> bool:
        return any(op in LOOP_OPS for op in self.ops)

    @property
    def kinds(self) -> list[str]:
        """What the recurrence became: "fused LSTM", "WHILE loop", "unrolled"; plus "Flex"."""
        kinds = []
        if self.fused_recurrent:
            kinds.append("fused LSTM")
        if self.loop:
            kinds.append("WHILE loop")
        if not kinds:
            kinds.append("unrolled")
        if self.flex:
            kinds.append("Flex")
        if any(op in VARIABLE_OPS for op in self.ops):
            kinds.append("resource variables")
        return kinds

    @property
    def builtin_only(self) -> bool:
        return not self.flex and not self.custom

    def summary(self) -> str:
        ops = ", ".join(f"{name} x{count}" if count > 1 else name for name, count in sorted(self.ops.items()))
        text = f"{' + '.join(self.kinds)}; {'builtin ops only' if self.builtin_only else 'needs Flex/custom ops'}"
        if self.flex:
            text += f" (Flex: {', '.join(self.flex)})"
        return f"{text}; {sum(self.ops.values())} ops in {self.subgraphs} subgraph(s): {ops}"

    def as_dict(self) -> dict:
        return {
            "kinds": self.kinds,
            "builtin_only": self.builtin_only,
            "fused_recurrent": self.fused_recurrent,
            "while_loop": self.loop,
            "flex": list(self.flex),
            "custom": list(self.custom),
            "ops": dict(sorted(self.ops.items())),
            "subgraphs": self.subgraphs,
            "signatures": self.signatures,
        }


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # the TensorFlow copy of the same generated module
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def op_report(content: bytes) -> OpReport:
    """Count the operators of a .tflite flatbuffer, every subgraph included (loop bodies too)."""
    schema = _schema()
    model = schema.Model.GetRootAsModel(content, 0)
    names = {value: key for key, value in vars(schema.BuiltinOperator).items() if not key.startswith("_")}
    counts: dict[str, int] = {}
    flex, custom = set(), set()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            code = model.OperatorCodes(subgraph.Operators(o).OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = names.get(builtin, f"OP_{builtin}")
            if builtin == schema.BuiltinOperator.CUSTOM:
                name = (code.CustomCode() or b"custom").decode()
                (flex if name.startswith("Flex") else custom).add(name)
            counts[name] = counts.get(name, 0) + 1
    signatures = {}
    for i in range(model.SignatureDefsLength()):
        sig = model.SignatureDefs(i)
        signatures[sig.SignatureKey().decode()] = {
            "inputs": sorted(sig.Inputs(j).Name().decode() for j in range(sig.InputsLength())),
            "outputs": sorted(sig.Outputs(j).Name().decode() for j in range(sig.OutputsLength())),
        }
    return OpReport(counts, model.SubgraphsLength(), tuple(sorted(flex)), tuple(sorted(custom)), signatures)


# --------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------


def _named(function, name: str):
    function.__name__ = name
    function.__qualname__ = name
    return function


def external_functions(step_model, plan, *, lean: bool = False):
    """(tf.Module keeping the weights alive, [concrete `serving_default`]).

    lean: trace under `lean_trace` (the signature keeps the step model's static shapes)."""
    tf = import_tensorflow()
    module = tf.Module()
    module.model = step_model
    module.weights_ = [v.value for v in step_model.variables]
    specs = [tf.TensorSpec(list(t.shape), t.dtype, name=name) for t, name in zip(step_model.inputs, plan.input_names)]
    output_names = list(plan.output_names)
    count = len(step_model.inputs)
    hide_batch = lean and all(spec.shape.rank and spec.shape[0] is not None for spec in specs)

    def serving_default(*values):
        if hide_batch:
            # Keras traced at batch 1 takes its "looks like a bias" path for h.U (Squeeze and
            # BiasAdd: a RESHAPE and an unfused ADD in TFLite). Traced with the batch unknown,
            # it takes its general path; the converter's shape inference restores the static
            # batch of the signature and folds what the unknown batch added.
            values = [tf.compat.v1.placeholder_with_default(v, [None, *v.shape[1:]]) for v in values]
        outputs = step_model(list(values) if count > 1 else values[0], training=False)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        return {name: tensor for name, tensor in zip(output_names, outputs)}

    function = tf.function(_named(serving_default, "serving_default"), input_signature=specs)
    module.serve = function
    with quiet(), (lean_trace() if lean else contextlib.nullcontext()):
        return module, [function.get_concrete_function()]


_LEAN_LOCK = threading.Lock()
_LEAN_USERS = [0]        # blocks inside lean_trace now
_LEAN_ORIGINAL = [None]  # Keras' own rnn while they are


@contextlib.contextmanager
def lean_trace():
    """Within the block, Keras runs an unrolled recurrence over a fixed number of steps without
    its time-major layout: each step (and its mask) is taken along the time axis, a squeeze for
    one step and an unstack otherwise, and the outputs are put back the same way, instead of
    transposing batch and time, unstacking and stacking; a masked step selects against a scalar
    zero instead of a zeros-like tensor. The step function sees the same values in the same
    order and every selection picks the same values, so the numbers are identical; a one-step
    graph loses its UNPACK, RESHAPE and ZEROS_LIKE ops. Reversed, nested, time-major or
    while-loop recurrences, or ones with constants, run Keras' own.

    Keras' recurrent layers call `keras.src.backend.rnn`, looked up at call time: the block
    swaps that function and puts it back when the last block (of any thread) leaves. Another
    thread tracing a recurrent layer meanwhile gets the same numbers by the same route.
    """
    try:
        from keras.src import backend
    except ImportError:  # a Keras without that layout: trace as it is
        backend = None
    if getattr(backend, "rnn", None) is None:
        yield
        return
    # Nested or concurrent blocks share one swap: the last to leave puts Keras' own back.
    with _LEAN_LOCK:
        if _LEAN_USERS[0] == 0:
            _LEAN_ORIGINAL[0] = backend.rnn
            backend.rnn = _lean_rnn(backend.rnn)
        _LEAN_USERS[0] += 1
    try:
        yield
    finally:
        with _LEAN_LOCK:
            _LEAN_USERS[0] -= 1
            if _LEAN_USERS[0] == 0:
                backend.rnn = _LEAN_ORIGINAL[0]


def _lean_rnn(original):
    """keras.src.backend.tensorflow.rnn.rnn, unrolled and batch-major (see lean_trace)."""
    tf = import_tensorflow()
    tree = import_keras().tree

    def along_time(tensor, steps):
        return [tf.squeeze(tensor, axis=1)] if steps == 1 else tf.unstack(tensor, num=steps, axis=1)

    def broadcastable(mask, like):  # (batch, 1) -> as many axes as `like`, for tf.where to broadcast
        for _ in range(len(like.shape) - len(mask.shape)):
            mask = tf.expand_dims(mask, -1)
        return mask

    def rnn(step_function, inputs, initial_states, go_backwards=False, mask=None, constants=None, unroll=False,
            input_length=None, time_major=False, zero_output_for_mask=False, return_all_outputs=True):
        steps = inputs.shape[1] if tf.is_tensor(inputs) and (inputs.shape.rank or 0) >= 3 else None
        last_only_zeroed = mask is not None and zero_output_for_mask and not return_all_outputs
        if not unroll or not steps or go_backwards or constants or time_major or last_only_zeroed:
            return original(step_function, inputs, initial_states, go_backwards=go_backwards, mask=mask,
                            constants=constants, unroll=unroll, input_length=input_length, time_major=time_major,
                            zero_output_for_mask=zero_output_for_mask, return_all_outputs=return_all_outputs)
        if mask is not None:
            mask = mask if mask.dtype == tf.bool else tf.cast(mask, tf.bool)
            mask = tf.expand_dims(mask, -1) if len(mask.shape) == 2 else mask  # (batch, time, 1)
            masks = along_time(mask, steps)
        states = tuple(initial_states)
        outputs = []
        for t, x in enumerate(along_time(inputs, steps)):
            output, new_states = step_function(x, tuple(states))
            if mask is None:
                states = new_states
            else:  # a masked step keeps the previous output (zeros before the first) and states
                keep = masks[t]
                previous = outputs[-1] if outputs else tf.zeros((), output.dtype)
                output = tf.where(broadcastable(keep, output), output, previous)
                flat = [tf.where(broadcastable(keep, new), new, old)
                        for new, old in zip(tree.flatten(new_states), tree.flatten(states))]
                states = tree.pack_sequence_as(states, flat)
            outputs.append(output)
        last = outputs[-1]
        kept = outputs if return_all_outputs else outputs[-1:]
        stacked = tf.expand_dims(kept[0], 1) if len(kept) == 1 else tf.stack(kept, axis=1)
        if mask is not None and zero_output_for_mask:
            zero = tf.zeros((), last.dtype)
            last = tf.where(broadcastable(masks[-1], last), last, zero)
            stacked = tf.where(broadcastable(mask, stacked), stacked, zero)
        return last, stacked, states

    return rnn


@dataclass(frozen=True)
class Converted:
    content: bytes
    report: OpReport
    flex_needed: bool


def convert(step, plan=None, *, allow_flex: bool = True) -> Converted:
    """Convert an external step model (with its StreamPlan) or a StatefulStepModel.

    Builtin ops only where possible; with allow_flex, falls back to TensorFlow ops. An unrolled
    external step model is traced lean first (`lean_trace`), as Keras traces it if that fails to
    convert.
    """
    tf = import_tensorflow()
    internal = hasattr(step, "signatures") and hasattr(step, "state_variables")
    if not internal and plan is None:
        raise UsageError("converting an external step model needs its StreamPlan")

    def attempt(ops, lean):
        if internal:
            trackable, functions = step, list(step.signatures().values())
        else:
            trackable, functions = external_functions(step, plan, lean=lean)
        converter = tf.lite.TFLiteConverter.from_concrete_functions(functions, trackable)
        converter.target_spec.supported_ops = ops
        if internal:
            converter.experimental_enable_resource_variables = True
        with quiet(), contextlib.redirect_stdout(io.StringIO()):
            return converter.convert()

    # Lean only for unrolled recurrences: a while loop traced at an unknown batch keeps
    # TensorLists of unknown shape, which builtin ops cannot hold.
    traces = (True, False) if not internal and plan.unrolled else (False,)
    builtins = [tf.lite.OpsSet.TFLITE_BUILTINS]
    error = None
    for flex, ops in [(False, builtins)] + ([(True, builtins + [tf.lite.OpsSet.SELECT_TF_OPS])] if allow_flex else []):
        for lean in traces:
            try:
                content = attempt(ops, lean)
            except Exception as failure:  # ConverterError: some op has no builtin kernel
                error = failure
                continue
            return Converted(content, op_report(content), flex)
        if not allow_flex:
            raise NotSupportedError(f"TFLite conversion with builtin ops failed: {_one_line(error)}") from None
    raise NotSupportedError(f"TFLite conversion failed: {_one_line(error)}") from None


def _one_line(error: Exception) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())[:400]


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------


def interpreter_class(needs_flex: bool = False):
    """The LiteRT interpreter (ai_edge_litert) when installed, else tf.lite's.

    Models with Flex ops need TensorFlow's interpreter, which links the Flex delegate.
    """
    if not needs_flex:
        try:
            from ai_edge_litert.interpreter import Interpreter

            return Interpreter
        except ImportError:
            pass
    tf = import_tensorflow()
    return tf.lite.Interpreter


def load_interpreter(content: bytes, *, num_threads: int = 1, needs_flex: bool | None = None):
    flex = op_report(content).flex if needs_flex is not False else ()
    cls = interpreter_class(bool(needs_flex or flex))
    with quiet(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = cls(model_content=content, num_threads=num_threads)
        try:
            interpreter.allocate_tensors()
        except RuntimeError as error:
            if not flex or "Flex" not in str(error):
                raise
            # TensorFlow's own Python interpreter lost its Flex delegate (TF >= 2.18 builds).
            raise NotSupportedError(
                f"the TFLite model needs TensorFlow ops ({', '.join(flex)}) and no TFLite interpreter here "
                "links the Flex delegate that runs them, so it cannot be run or checked here; stream without "
                "--tflite, or write it with --no-verify and run it where the Flex delegate is linked") from None
        return interpreter


def _signature_indices(interpreter, names_in, names_out, signature_key: str):
    """(subgraph, input tensor indices, output tensor indices, input dtypes), looked up by name."""
    signatures = interpreter.get_signature_list()
    if signature_key not in signatures:
        raise UsageError(f"the TFLite model has no signature {signature_key!r}; it has {sorted(signatures)}")
    runner = interpreter.get_signature_runner(signature_key)
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    unknown = [n for n in names_in if n not in inputs] + [n for n in names_out if n not in outputs]
    if unknown:
        raise UsageError(f"signature {signature_key!r} has no tensor named {unknown[0]!r}; "
                         f"inputs {sorted(inputs)}, outputs {sorted(outputs)}")
    return (runner._subgraph_index, [inputs[n]["index"] for n in names_in], [outputs[n]["index"] for n in names_out],
            [inputs[n]["dtype"] for n in names_in])


class SignatureStep:
    """Runs one signature of a TFLite model, every tensor bound by its signature name.

    `names_in` / `names_out` fix the order of the lists this callable takes and returns;
    each name is looked up in the signature (never a positional tensor index). Inputs are
    resized only when their shape changes (a new batch size).
    """

    def __init__(self, interpreter, names_in, names_out, signature_key: str = "serving_default"):
        self.interpreter = interpreter
        self.names_in = list(names_in)
        self.names_out = list(names_out)
        self._wrapper = interpreter._interpreter
        self._subgraph, self._in, self._out, self._dtypes = _signature_indices(interpreter, names_in, names_out,
                                                                               signature_key)
        self._shapes: list | None = None  # input shapes the tensors are allocated for

    def _resize(self, values) -> None:
        self._shapes = None  # until allocated: a resize that fails is redone by the next call
        for index, value in zip(self._in, values):
            self._wrapper.ResizeInputTensor(index, np.array(value.shape, dtype=np.int32), False, self._subgraph)
        with quiet():  # the XNNPACK delegate announces itself on stderr when tensors are allocated
            self._wrapper.AllocateTensors(self._subgraph)
        self._shapes = [v.shape for v in values]

    def __call__(self, values: list) -> list:
        wrapper, subgraph = self._wrapper, self._subgraph
        if [v.shape for v in values] != self._shapes:
            self._resize(values)
        try:
            for index, value in zip(self._in, values):
                wrapper.SetTensor(index, value, subgraph)
        except ValueError:  # a dtype the signature does not take: convert and retry
            for index, value, dtype in zip(self._in, values, self._dtypes):
                wrapper.SetTensor(index, np.asarray(value, dtype=dtype), subgraph)
        wrapper.Invoke(subgraph)
        return [wrapper.GetTensor(index, subgraph) for index in self._out]


class CarriedStep:
    """Steps one signature of a TFLite model whose every tensor has a static shape, with its
    last `carried` outputs (the recurrent states) fed back as its last `carried` inputs, the
    states kept in the interpreter's own input tensors between calls.

    `carry(values)` copies the given inputs into their tensors, invokes, copies the returned
    outputs out (the only arrays it allocates) and each state output onto its state input,
    through numpy views of the tensors taken once. Holding views across invocations is safe
    only because nothing is ever allocated again: every shape is static (`fits`), and this
    object never resizes. Nothing else may resize or allocate the interpreter's tensors.

    `inputs` / `outputs`: the views of the given inputs and returned outputs. `batch`: the
    batch of the states once started or loaded, else None.
    """

    def __init__(self, interpreter, names_in, names_out, carried: int, signature_key: str = "serving_default"):
        if not 0 <= carried <= min(len(names_in), len(names_out)):
            raise UsageError(f"cannot carry {carried} states between {len(names_out)} outputs and "
                             f"{len(names_in)} inputs")
        subgraph, ins, outs, _dtypes = _signature_indices(interpreter, names_in, names_out, signature_key)
        if not self.fits(interpreter, subgraph):
            raise UsageError("the TFLite model has tensors of dynamic shape: its states cannot stay in place")
        wrapper = interpreter._interpreter
        self.interpreter = interpreter
        self._invoke = wrapper.Invoke
        self._subgraph = subgraph
        inputs = [wrapper.tensor(wrapper, index, subgraph) for index in ins]
        outputs = [wrapper.tensor(wrapper, index, subgraph) for index in outs]
        given, returned = len(ins) - carried, len(outs) - carried
        self.inputs, self._states_in = inputs[:given], inputs[given:]
        self.outputs, self._states_out = outputs[:returned], outputs[returned:]
        self.batch: int | None = None
        # A state input sharing memory with a state output (the arena planner may reuse one
        # for the other) must not overwrite it before it is read: then they are copied out first.
        self._staged = any(np.shares_memory(i, o) for i in self._states_in for o in self._states_out)

    @staticmethod
    def fits(interpreter, subgraph: int = 0) -> bool:
        """Every tensor of the subgraph has a static shape, so that none is ever allocated again."""
        return all(-1 not in details["shape_signature"] for details in interpreter.get_tensor_details(subgraph))

    def _fixed_batch(self, batch) -> None:
        have = self._states_in[0].shape[0] if self._states_in else batch
        if batch != have:
            raise UsageError(f"this TFLite step model has a fixed batch of {have}, received {batch}")

    def start(self, batch: int) -> None:
        """Zero states."""
        self._fixed_batch(batch)
        for view in self._states_in:
            view.fill(0)
        self.batch = batch

    def load(self, states: list) -> None:
        """Set the states (arrays in carried order)."""
        for view, value in zip(self._states_in, states):
            if value.shape != view.shape:
                raise UsageError(f"a state of shape {value.shape} does not fit the TFLite tensor {view.shape}")
        for view, value in zip(self._states_in, states):
            np.copyto(view, value, casting="unsafe")
        self.batch = self._states_in[0].shape[0] if self._states_in else self.batch

    def clear(self) -> None:
        self.batch = None

    def states(self) -> list[np.ndarray]:
        """Copies of the current states."""
        return [np.array(v) for v in self._states_in]

    def invoke(self) -> None:
        """Run the model on what the input tensors hold (then read the outputs, then pass_states)."""
        self._invoke(self._subgraph)

    def pass_states(self) -> None:
        """Copy each state output onto its state input."""
        sources = [np.array(v) for v in self._states_out] if self._staged else self._states_out
        for view, value in zip(self._states_in, sources):
            np.copyto(view, value)

    def carry(self, values: list) -> list[np.ndarray]:
        """The given inputs in, the returned outputs out (new arrays); the states move on."""
        for view, value in zip(self.inputs, values):
            if value.shape != view.shape:
                raise UsageError(f"an input of shape {value.shape} does not fit the TFLite tensor {view.shape}")
        for view, value in zip(self.inputs, values):
            np.copyto(view, value, casting="unsafe")
        self._invoke(self._subgraph)
        outputs = [np.array(v) for v in self.outputs]
        self.pass_states()
        return outputs


def external_step(content: bytes, plan, *, num_threads: int = 1) -> SignatureStep:
    """A step function over a converted external step model, in the plan's name order."""
    interpreter = load_interpreter(content, num_threads=num_threads)
    return SignatureStep(interpreter, plan.input_names, plan.output_names)
