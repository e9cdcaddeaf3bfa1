"""Test helpers: real reference models, and a corpus of malicious model files built from them.

`build_reference_models(directory)` saves small real models with Keras 3 and tf_keras
(imported lazily; building them is the slow part, so callers share one directory per
session). `build_malicious_corpus(directory, weights_source)` writes hand-crafted `.keras`
zips and `.h5` files whose configs carry Lambdas, foreign modules, TFSMLayers and
non-modelling API references. Where the payload can be real it is: the Lambda bytecode
is a genuine marshalled Python function that writes the case's canary file when run.
"""

from __future__ import annotations

import base64
import json
import marshal
import os
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

# ----------------------------------------------------------------------------------------
# Real reference models

REFERENCE_FILES = {
    "k3_keras": "k3_functional.keras",
    "k3_h5": "k3_functional.h5",
    "k3_weights": "k3_functional.weights.h5",
    "k3_sequential": "k3_sequential.keras",
    "k3_export": "k3_export_savedmodel",
    "tk_h5": "tk_lstm.h5",
    "tk_keras": "tk_lstm.keras",
    "tk_savedmodel": "tk_sequential_savedmodel",
    "tk_savedmodel_no_traces": "tk_lstm_savedmodel_no_traces",
}


def build_reference_models(directory: Path) -> dict[str, Path]:
    """Save the reference models once into `directory`; returns name -> path."""
    paths = {name: directory / filename for name, filename in REFERENCE_FILES.items()}
    done = directory / ".complete"
    if not done.exists():
        directory.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        _save_keras3_models(paths)
        _save_tf_keras_models(paths)
        done.write_text("ok")
    return paths


def _save_keras3_models(paths: dict[str, Path]) -> None:
    import keras

    tokens = keras.Input((6,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(20, 4, mask_zero=True, name="embed")(tokens)
    inner_in = keras.Input((6, 4), name="inner_in")
    inner_out = keras.layers.GRU(3, return_sequences=True, name="gru")(inner_in)
    inner = keras.Model(inner_in, inner_out, name="inner")
    x = inner(x)
    x = keras.layers.Bidirectional(
        keras.layers.LSTM(3, return_sequences=True, name="lstm"), name="bidi"
    )(x)
    x = keras.layers.TimeDistributed(
        keras.layers.Dense(2, dtype="mixed_float16", name="dense"), name="td"
    )(x)
    model = keras.Model(tokens, x, name="k3_functional")
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    model.save(paths["k3_keras"])
    model.save(paths["k3_h5"])
    model.save_weights(paths["k3_weights"])

    sequential = keras.Sequential(
        [keras.Input((5, 3)), keras.layers.Masking(), keras.layers.LSTM(4, name="lstm")],
        name="k3_sequential",
    )
    sequential.save(paths["k3_sequential"])
    # model.export() writes a plain SavedModel: no keras_metadata.pb.
    sequential.export(str(paths["k3_export"]), verbose=False)


def _save_tf_keras_models(paths: dict[str, Path]) -> None:
    import tf_keras

    inputs = tf_keras.Input((5, 3))
    x = tf_keras.layers.Masking()(inputs)
    x = tf_keras.layers.Bidirectional(tf_keras.layers.LSTM(4, return_sequences=True))(x)
    x = tf_keras.layers.LSTM(2, name="last_lstm")(x)
    model = tf_keras.Model(inputs, x, name="tk_lstm")
    model.compile("adam", "mse")
    model.save(paths["tk_h5"])
    model.save(paths["tk_keras"])
    # tf_keras 2.21 still writes keras_metadata.pb next to saved_model.pb. Tracing the
    # Bidirectional model's call functions takes ~8 s, so it is saved without traces
    # (keras_metadata.pb is the same either way) and a small Sequential with them.
    model.save(str(paths["tk_savedmodel_no_traces"]), save_format="tf", save_traces=False)
    sequential = tf_keras.Sequential(
        [tf_keras.Input((5, 3)), tf_keras.layers.Masking(), tf_keras.layers.LSTM(2, name="lstm")],
        name="tk_sequential",
    )
    sequential.save(str(paths["tk_savedmodel"]), save_format="tf")


# ----------------------------------------------------------------------------------------
# Payloads


def payload_source(canary: Path) -> str:
    return (
        "def payload(x=None):\n"
        "    import pathlib\n"
        f"    pathlib.Path({str(canary)!r}).write_text('payload ran')\n"
        "    return x\n"
    )


def payload_code(canary: Path) -> types.CodeType:
    module = compile(payload_source(canary), "<payload>", "exec")
    return next(c for c in module.co_consts if isinstance(c, types.CodeType))


def marshalled_payload(canary: Path) -> str:
    """base64 of the marshalled code, exactly as Keras' func_dump writes a lambda."""
    return base64.encodebytes(marshal.dumps(payload_code(canary))).decode("ascii")


def run_marshalled(text: str) -> Any:
    """What Keras' func_load does with such a payload (used to prove payloads are live)."""
    code = marshal.loads(base64.decodebytes(text.encode("ascii")))
    return types.FunctionType(code, {})(None)


# ----------------------------------------------------------------------------------------
# Config building blocks (Keras 3 and Keras 2 serialization)


def k3(class_name: str, config: dict, module: str = "keras.layers", **extra: Any) -> dict:
    return {"module": module, "class_name": class_name, "config": config,
            "registered_name": None, **extra}


def k3_function(name: str, module: str, registered: str | None = None) -> dict:
    return {"module": module, "class_name": "function", "config": name,
            "registered_name": registered if registered is not None else name}


def k3_input(shape: list, name: str = "input_layer") -> dict:
    return k3("InputLayer", {"batch_shape": [None, *shape], "dtype": "float32",
                             "sparse": False, "name": name})


def k3_lstm(name: str = "lstm", **overrides: Any) -> dict:
    config = {
        "name": name, "trainable": True,
        "dtype": k3("DTypePolicy", {"name": "float32"}, module="keras"),
        "units": 4, "activation": "tanh", "recurrent_activation": "sigmoid",
        "return_sequences": True,
        "kernel_initializer": k3("GlorotUniform", {"seed": None}, module="keras.initializers"),
        "recurrent_initializer": k3("Orthogonal", {"seed": None, "gain": 1.0},
                                    module="keras.initializers"),
        "bias_initializer": k3("Zeros", {}, module="keras.initializers"),
    }
    config.update(overrides)
    return k3("LSTM", config)


def k3_lambda(canary: Path, name: str = "lambda") -> dict:
    function = {"class_name": "__lambda__",
                "config": {"code": marshalled_payload(canary), "defaults": None,
                           "closure": None}}
    return k3("Lambda", {"name": name, "trainable": True, "function": function,
                         "arguments": {}})


def k3_sequential(layers: list, name: str = "sequential", **extra: Any) -> dict:
    return k3("Sequential", {"name": name, "trainable": True, "layers": layers},
              module="keras", **extra)


def k3_functional(layers: list, name: str = "functional") -> dict:
    """A Functional config; inbound_nodes chain each layer to the previous one."""
    for previous, layer in zip(layers, layers[1:]):
        layer["name"] = layer["config"]["name"]
        layer["inbound_nodes"] = [{"args": [{"class_name": "__keras_tensor__", "config": {
            "shape": [None, 5, 4], "dtype": "float32",
            "keras_history": [previous["config"]["name"], 0, 0]}}], "kwargs": {}}]
    layers[0]["name"] = layers[0]["config"]["name"]
    layers[0]["inbound_nodes"] = []
    return k3("Functional", {
        "name": name, "trainable": True, "layers": layers,
        "input_layers": [layers[0]["config"]["name"], 0, 0],
        "output_layers": [layers[-1]["config"]["name"], 0, 0],
    }, module="keras.src.models.functional", )


def k2_lambda(canary: Path, name: str = "lambda") -> dict:
    """tf_keras Lambda: base64 marshalled bytecode in config.function."""
    return {"class_name": "Lambda", "config": {
        "name": name, "trainable": True, "dtype": "float32",
        "function": [marshalled_payload(canary), None, None],
        "function_type": "lambda", "module": "__main__",
        "output_shape": None, "output_shape_type": "raw", "output_shape_module": None,
        "arguments": {}}}


def k2_lstm(name: str = "lstm", **overrides: Any) -> dict:
    config = {"name": name, "trainable": True, "dtype": "float32", "units": 4,
              "return_sequences": True, "activation": "tanh",
              "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}}}
    config.update(overrides)
    return {"class_name": "LSTM", "config": config}


def k2_sequential(layers: list, name: str = "sequential") -> dict:
    return {"class_name": "Sequential", "config": {"name": name, "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 5, 3],
                                                "dtype": "float32", "name": "input_1"}},
        *layers]}}


# ----------------------------------------------------------------------------------------
# Writing files


def write_keras_file(path: Path, config: dict, weights_source: Path | None,
                     keras_version: str = "3.15.1") -> Path:
    """A .keras zip as Keras writes it: stored members, hand-written config.json."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("metadata.json", json.dumps(
            {"keras_version": keras_version, "date_saved": "2025-01-01@00:00:00"}))
        archive.writestr("config.json", json.dumps(config))
        if weights_source is not None:
            with zipfile.ZipFile(weights_source) as source:
                archive.writestr("model.weights.h5", source.read("model.weights.h5"))
    return path


def write_h5_file(path: Path, config: Any, keras_version: str = "2.21.0",
                  raw_attr: Any = None) -> Path:
    """An HDF5 model file with a hand-written model_config attribute and one weight."""
    with h5py.File(path, "w") as handle:
        handle.attrs["keras_version"] = keras_version
        handle.attrs["backend"] = "tensorflow"
        handle.attrs["model_config"] = raw_attr if raw_attr is not None else json.dumps(config)
        handle.create_dataset("model_weights/lstm/lstm/lstm_cell/kernel:0",
                              data=np.zeros((3, 16), "float32"))
    return path


# ----------------------------------------------------------------------------------------
# The corpus


@dataclass(frozen=True)
class MaliciousCase:
    name: str
    path: Path
    canary: Path  # written by the payload if it ever runs
    expected_path: str  # config path the refusal must name
    expected_kind: str


# name -> (file suffix, config builder(canary, tfsm_dir), expected path, expected kind)
_Builder = Callable[[Path, Path], dict]
CASE_SPECS: dict[str, tuple[str, _Builder, str, str]] = {
    "keras_top_level_lambda": (
        ".keras",
        lambda canary, _: k3_sequential([k3_input([5, 3]), k3_lambda(canary), k3_lstm()]),
        "config.layers[1]", "lambda"),
    "keras_lambda_in_nested_functional": (
        ".keras",
        lambda canary, _: k3_functional([
            k3_input([5, 3]),
            k3_functional([k3_input([5, 3], "inner_input"), k3_lambda(canary, "inner_lambda")],
                          name="inner"),
            k3_lstm()]),
        "config.layers[1].config.layers[1]", "lambda"),
    "keras_lambda_in_bidirectional": (
        ".keras",
        lambda canary, _: k3_sequential([
            k3_input([5, 3]),
            k3("Bidirectional",
               {"name": "bidi", "layer": k3_lambda(canary), "merge_mode": "concat"})]),
        "config.layers[1].config.layer", "lambda"),
    "keras_lambda_in_time_distributed": (
        ".keras",
        lambda canary, _: k3_sequential([
            k3_input([5, 3]), k3("TimeDistributed", {"name": "td", "layer": k3_lambda(canary)})]),
        "config.layers[1].config.layer", "lambda"),
    "keras_lambda_as_rnn_cell": (
        ".keras",
        lambda canary, _: k3_sequential([
            k3_input([5, 3]), k3("RNN", {"name": "rnn", "cell": k3_lambda(canary)})]),
        "config.layers[1].config.cell", "lambda"),
    "keras_builtins_exec_initializer": (
        ".keras",
        lambda canary, _: k3_sequential([
            k3_input([5, 3]),
            k3_lstm(kernel_initializer=k3_function("exec", "builtins", registered=None))]),
        "config.layers[1].config.kernel_initializer", "unsafe_api"),
    "keras_os_module_layer": (
        ".keras",
        lambda canary, _: k3_sequential([
            k3_input([5, 3]),
            k3("system", {"name": "x", "command": f"touch {canary}"}, module="os")]),
        "config.layers[1]", "unsafe_api"),
    "keras_subprocess_module_layer": (
        ".keras",
        lambda canary, _: k3_sequential([
            k3_input([5, 3]),
            k3("Popen", {"name": "x", "args": ["touch", str(canary)]}, module="subprocess")]),
        "config.layers[1]", "unsafe_api"),
    "keras_foreign_package_layer": (
        ".keras",
        lambda canary, _: k3_sequential([
            k3_input([5, 3]),
            k3("EvilLSTM", {"name": "evil", "units": 4}, module="evil_pkg.layers",
               registered_name="evil_pkg>EvilLSTM")]),
        "config.layers[1]", "custom_object"),
    "keras_tensorflow_module_layer": (
        ".keras",
        lambda canary, _: k3_sequential([
            k3_input([5, 3]), k3("LSTM", {"name": "lstm", "units": 4}, module="tensorflow.io")]),
        "config.layers[1]", "foreign_module"),
    "keras_tfsmlayer": (
        ".keras",
        lambda canary, tfsm_dir: k3_sequential([
            k3_input([5, 3]),
            k3("TFSMLayer",
               {"name": "tfsm", "filepath": str(tfsm_dir), "call_endpoint": "serve"})]),
        "config.layers[1]", "tfsmlayer"),
    "keras_enable_unsafe_deserialization": (
        ".keras",
        lambda canary, _: k3_sequential([
            k3_input([5, 3]),
            k3_lstm(activation=k3_function("enable_unsafe_deserialization", "keras.config"))]),
        "config.layers[1].config.activation", "unsafe_api"),
    "keras_get_file_in_compile_config": (
        ".keras",
        lambda canary, _: k3_sequential(
            [k3_input([5, 3]), k3_lstm()],
            compile_config={"optimizer": "adam", "loss": k3_function("get_file", "keras.utils"),
                            "metrics": None}),
        "compile_config.loss", "unsafe_api"),
    "keras_bytecode_in_plain_layer_config": (
        ".keras",
        lambda canary, _: k3_sequential([
            k3_input([5, 3]), k3_lstm(function=[marshalled_payload(canary), None, None])]),
        "config.layers[1].config.function[0]", "lambda"),
    "h5_keras2_top_level_lambda": (
        ".h5",
        lambda canary, _: k2_sequential([k2_lambda(canary), k2_lstm()]),
        "config.layers[1]", "lambda"),
    "h5_keras2_lambda_in_bidirectional": (
        ".h5",
        lambda canary, _: k2_sequential([
            {"class_name": "Bidirectional",
             "config": {"name": "bidi", "layer": k2_lambda(canary)}}]),
        "config.layers[1].config.layer", "lambda"),
    "h5_builtins_exec_initializer": (
        ".h5",
        lambda canary, _: k2_sequential([
            k2_lstm(kernel_initializer=k3_function("exec", "builtins", registered=None))]),
        "config.layers[1].config.kernel_initializer", "unsafe_api"),
    "h5_keras2_custom_object_with_foreign_module": (
        ".h5",
        lambda canary, _: k2_sequential([
            {"class_name": "EvilCell", "module": "evil_pkg", "config": {"name": "evil"}}]),
        "config.layers[1]", "custom_object"),
}


def build_malicious_corpus(directory: Path, weights_source: Path) -> list[MaliciousCase]:
    """Write every CASE_SPECS file into `directory` (weights copied from a real .keras)."""
    directory.mkdir(parents=True, exist_ok=True)
    tfsm_dir = directory / "some_saved_model"
    tfsm_dir.mkdir(exist_ok=True)
    cases = []
    for name, (suffix, build, expected_path, expected_kind) in CASE_SPECS.items():
        canary = directory / f"{name}.canary"
        config = build(canary, tfsm_dir)
        path = directory / f"{name}{suffix}"
        if suffix == ".keras":
            write_keras_file(path, config, weights_source)
        else:
            write_h5_file(path, config)
        cases.append(MaliciousCase(name, path, canary, expected_path, expected_kind))
    return cases


# ----------------------------------------------------------------------------------------
# Genuine small models to tamper with (config-level attacks: file references, op layers)


def save_genuine_config_models(directory: Path) -> dict[str, Path]:
    """Real tf_keras / Keras 3 models whose configs the config-attack tests tamper with."""
    directory.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf
    import tf_keras

    tf_keras.backend.clear_session()  # op layers get their layer names from a session counter
    paths = {name: directory / name for name in (
        "tk_lookup.h5", "tk_ops.h5", "tk_ragged.h5", "k3_lookup.keras", "k3_dense.keras")}
    text = tf_keras.Input((1,), dtype="string", name="text")
    tf_keras.Model(text, tf_keras.layers.StringLookup(
        vocabulary=["alpha", "beta"], name="lookup")(text)).save(paths["tk_lookup.h5"])

    x = tf_keras.Input((4, 3), name="x")
    y = tf.math.add(x, 1.0)  # TFOpLambda "math.add"
    y = y[:, -1]  # SlicingOpLambda "__operators__.getitem"
    tf_keras.Model(x, tf_keras.layers.Dense(2, name="dense")(y)).save(paths["tk_ops.h5"])

    values = tf_keras.Input((), name="v", batch_size=6)
    lengths = tf_keras.Input((), name="l", dtype="int64", batch_size=3)
    ragged = tf.RaggedTensor.from_row_lengths(values, lengths)  # ClassMethod
    tf_keras.Model([values, lengths], ragged.to_tensor()).save(  # InstanceMethod
        paths["tk_ragged.h5"])

    text3 = keras.Input((1,), dtype="string", name="text")
    keras.Model(text3, keras.layers.StringLookup(
        vocabulary=["alpha", "beta"], name="lookup")(text3)).save(paths["k3_lookup.keras"])
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")]).save(
        paths["k3_dense.keras"])
    return paths


def tamper_h5_config(source: Path, target: Path, edit: Callable[[dict], None]) -> Path:
    """A copy of a real HDF5 model whose model_config went through `edit` (in place)."""
    target.write_bytes(source.read_bytes())
    with h5py.File(target, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        edit(config)
        handle.attrs["model_config"] = json.dumps(config)
    return target


def tamper_keras_config(source: Path, target: Path, edit: Callable[[dict], None]) -> Path:
    """A copy of a real .keras zip whose config.json went through `edit` (in place)."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as archive:
        for item in original.infolist():
            data = original.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            archive.writestr(item, data)
    return target
