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
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field

import numpy as np

from surgery.errors import NotSupportedError, UsageError
from surgery.io.quiet import import_tensorflow, quiet

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


def external_functions(step_model, plan):
    """(tf.Module keeping the weights alive, [concrete `serving_default`])."""
    tf = import_tensorflow()
    module = tf.Module()
    module.model = step_model
    module.weights_ = [v.value for v in step_model.variables]
    specs = [tf.TensorSpec(list(t.shape), t.dtype, name=name) for t, name in zip(step_model.inputs, plan.input_names)]
    output_names = list(plan.output_names)
    count = len(step_model.inputs)

    def serving_default(*values):
        outputs = step_model(list(values) if count > 1 else values[0], training=False)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        return {name: tensor for name, tensor in zip(output_names, outputs)}

    function = tf.function(_named(serving_default, "serving_default"), input_signature=specs)
    module.serve = function
    with quiet():
        return module, [function.get_concrete_function()]


@dataclass(frozen=True)
class Converted:
    content: bytes
    report: OpReport
    flex_needed: bool


def convert(step, plan=None, *, allow_flex: bool = True) -> Converted:
    """Convert an external step model (with its StreamPlan) or a StatefulStepModel.

    Builtin ops only where possible; with allow_flex, falls back to TensorFlow ops.
    """
    tf = import_tensorflow()
    internal = hasattr(step, "signatures") and hasattr(step, "state_variables")
    if internal:
        trackable, functions = step, list(step.signatures().values())
    else:
        if plan is None:
            raise UsageError("converting an external step model needs its StreamPlan")
        trackable, functions = external_functions(step, plan)

    def attempt(ops):
        converter = tf.lite.TFLiteConverter.from_concrete_functions(functions, trackable)
        converter.target_spec.supported_ops = ops
        if internal:
            converter.experimental_enable_resource_variables = True
        with quiet(), contextlib.redirect_stdout(io.StringIO()):
            return converter.convert()

    try:
        content = attempt([tf.lite.OpsSet.TFLITE_BUILTINS])
        flex = False
    except Exception as builtin_error:  # ConverterError: some op has no builtin kernel
        if not allow_flex:
            raise NotSupportedError(f"TFLite conversion with builtin ops failed: {_one_line(builtin_error)}") from None
        try:
            content = attempt([tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS])
            flex = True
        except Exception as error:
            raise NotSupportedError(f"TFLite conversion failed: {_one_line(error)}") from None
    return Converted(content, op_report(content), flex)


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
    if needs_flex is None:
        needs_flex = bool(op_report(content).flex)
    cls = interpreter_class(needs_flex)
    with quiet(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = cls(model_content=content, num_threads=num_threads)
        interpreter.allocate_tensors()
        return interpreter


class SignatureStep:
    """Runs one signature of a TFLite model, every tensor bound by its signature name.

    `names_in` / `names_out` fix the order of the lists this callable takes and returns;
    each name is looked up in the signature (never a positional tensor index). Inputs are
    resized only when their shape changes (a new batch size).
    """

    def __init__(self, interpreter, names_in, names_out, signature_key: str = "serving_default"):
        signatures = interpreter.get_signature_list()
        if signature_key not in signatures:
            raise UsageError(f"the TFLite model has no signature {signature_key!r}; it has {sorted(signatures)}")
        runner = interpreter.get_signature_runner(signature_key)
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        unknown = [n for n in names_in if n not in inputs] + [n for n in names_out if n not in outputs]
        if unknown:
            raise UsageError(f"signature {signature_key!r} has no tensor named {unknown[0]!r}; "
                             f"inputs {sorted(inputs)}, outputs {sorted(outputs)}")
        self.interpreter = interpreter
        self.runner = runner
        self.names_in = list(names_in)
        self.names_out = list(names_out)
        self._wrapper = interpreter._interpreter
        self._subgraph = runner._subgraph_index
        self._in = [inputs[n]["index"] for n in self.names_in]
        self._out = [outputs[n]["index"] for n in self.names_out]
        self._dtypes = [inputs[n]["dtype"] for n in self.names_in]
        self._shapes: list | None = None  # input shapes the tensors are allocated for

    def _resize(self, values) -> None:
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


def external_step(content: bytes, plan, *, num_threads: int = 1) -> SignatureStep:
    """A step function over a converted external step model, in the plan's name order."""
    interpreter = load_interpreter(content, num_threads=num_threads)
    return SignatureStep(interpreter, plan.input_names, plan.output_names)
