"""Keras 2-era semantics: the oracle and the translation follow the family that wrote a file
(Keras 2 hard_sigmoid), old Keras 2 config forms are read (GRU without reset_after,
list-style Sequential, Keras 1 argument names), tf_keras custom layers load through
--custom-objects, and channels_first ConvLSTM runs on CPUs without NCHW kernels."""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tf_keras

from surgery.graph import keras2_compat, translate
from surgery.check import oracle
from surgery.check import activations
from surgery.ops.convert import convert_file
from surgery.errors import NotSupportedError
from surgery.ops.expose import expose_state_file
from surgery.io.formats import read_artifact
from surgery.ops.inspect import inspect
from surgery.io.loading import load_custom_objects, load_model
from surgery.ops.splice import splice

ROOT = Path(__file__).resolve().parent.parent
BATCH, TIME, FEATURES = 3, 6, 3


def _x(shape=(BATCH, TIME, FEATURES), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32") * 2.0


def _float32_bound(reference):
    # float32 evaluation of the same recurrence: a few ulps of the values involved.
    return 1e-6 + 1e-6 * np.abs(reference)


def _rewrite_h5_config(path, edit):
    with h5py.File(path, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        handle.attrs["model_config"] = json.dumps(edit(config))


def _randomized(model, seed=1):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(scale=0.6, size=w.shape).astype("float32") for w in model.get_weights()])
    return model


# --------------------------------------------------------------------------------------
# hard_sigmoid: the oracle follows the family


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "GRU_reset_before", "SimpleRNN"])
def test_oracle_keras2_hard_sigmoid_matches_tf_keras(cell):
    make = {
        "LSTM": lambda: tf_keras.layers.LSTM(5, recurrent_activation="hard_sigmoid", return_sequences=True,
                                             return_state=True),
        "GRU": lambda: tf_keras.layers.GRU(5, recurrent_activation="hard_sigmoid", return_sequences=True,
                                           return_state=True),
        "GRU_reset_before": lambda: tf_keras.layers.GRU(5, recurrent_activation="hard_sigmoid", reset_after=False,
                                                        activation="hard_sigmoid", return_sequences=True,
                                                        return_state=True),
        "SimpleRNN": lambda: tf_keras.layers.SimpleRNN(5, activation="hard_sigmoid", return_sequences=True,
                                                       return_state=True),
    }[cell]
    layer = make()
    x = _x()
    layer(x)
    weights = [np.random.default_rng(2).normal(scale=0.8, size=w.shape).astype("float32")
               for w in layer.get_weights()]
    layer.set_weights(weights)
    result = [np.asarray(r) for r in layer(x)]
    config = json.loads(json.dumps(tf_keras.layers.serialize(layer)))
    ours, states = oracle.run_layer(config, weights, x, family="keras2")
    for got, want in zip([ours, *states], result):
        assert np.all(np.abs(got - want) <= _float32_bound(want))
    # The Keras 3 meaning of the same name is a different function: far outside that bound.
    keras3, _ = oracle.run_layer(config, weights, x, family="keras3")
    assert np.max(np.abs(keras3 - result[0])) > 1e-3


def test_keras2_hard_sigmoid_definition():
    x = np.array([-3.0, -2.5, -1.0, 0.0, 1.0, 2.5, 3.0])
    assert np.allclose(activations.activation("hard_sigmoid", "keras2")(x), [0, 0, 0.3, 0.5, 0.7, 1, 1])
    assert np.allclose(activations.activation("hard_sigmoid", "keras3")(x), np.clip(x / 6 + 0.5, 0, 1))
    with pytest.raises(ValueError):
        activations.activation("hard_silu", "keras2")  # a Keras 3 name tf_keras never had


@pytest.fixture(scope="module")
def hard_sigmoid_h5(tmp_path_factory):
    """A tf_keras functional model: LSTM and GRU with hard_sigmoid gates, Dense head."""
    tf_keras.backend.clear_session()
    inputs = tf_keras.Input((TIME, FEATURES))
    seq = tf_keras.layers.LSTM(5, recurrent_activation="hard_sigmoid", return_sequences=True, name="lstm")(inputs)
    seq = tf_keras.layers.Bidirectional(
        tf_keras.layers.GRU(4, recurrent_activation="hard_sigmoid", activation="hard_sigmoid",
                            return_sequences=True), name="bigru")(seq)
    out = tf_keras.layers.GRU(3, recurrent_activation="hard_sigmoid", reset_after=False, name="gru")(seq)
    out = tf_keras.layers.Dense(2, activation="hard_sigmoid", name="head")(out)
    model = _randomized(tf_keras.Model(inputs, out))
    path = tmp_path_factory.mktemp("k2") / "hard_sigmoid.h5"
    model.save(path)
    return path, model


def test_convert_hard_sigmoid_reproduces_tf_keras(hard_sigmoid_h5, tmp_path):
    path, original = hard_sigmoid_h5
    result = convert_file(path, tmp_path / "out.keras")
    assert result.verified and result.max_abs_diff is not None and result.max_abs_diff < 1e-5
    assert any("hard_sigmoid" in note for note in result.notes)
    # The written file is plain Keras 3 (no custom objects): Keras 3's own hard_sigmoid on
    # scaled gate inputs computes the Keras 2 function.
    import keras

    written = keras.saving.load_model(tmp_path / "out.keras", compile=False)
    x = _x()
    want = np.asarray(original(x))
    got = np.asarray(written(x))
    assert np.max(np.abs(got - want)) < 1e-5
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(written)))
    assert "hard_sigmoid" in json.dumps(config)


def test_expose_keras2_hard_sigmoid_verifies_against_keras2_oracle(hard_sigmoid_h5, tmp_path):
    path, _ = hard_sigmoid_h5
    result = expose_state_file(path, tmp_path / "exposed.h5")
    assert result.report.ok, result.report.summary()
    translated = expose_state_file(path, tmp_path / "exposed.keras", to="keras3")
    assert translated.report.ok, translated.report.summary()
    assert read_artifact(tmp_path / "exposed.keras").family == "keras3"


def test_unfoldable_keras2_activation_is_refused():
    import keras

    # LSTM applies `activation` to its cell state too: no weight feeds it.
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "LSTM", "config": {"name": "l", "units": 2, "activation": "hard_sigmoid",
                                          "batch_input_shape": [None, 3, 2]}}]}}
    with pytest.raises(NotSupportedError, match="hard_sigmoid"):
        translate.translate_config(config, keras.layers)
    activation_layer = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "Activation", "config": {"name": "a", "activation": "hard_sigmoid",
                                                "batch_input_shape": [None, 3]}}]}}
    with pytest.raises(NotSupportedError, match="Keras 2 family"):
        translate.translate_config(activation_layer, keras.layers)


# --------------------------------------------------------------------------------------
# Old Keras 2 config forms


def _drop_reset_after(config):
    text = json.dumps(config).replace('"reset_after": false, ', "").replace(', "reset_after": false', "")
    assert "reset_after" not in text
    return json.loads(text)


@pytest.fixture(scope="module")
def old_gru_h5(tmp_path_factory):
    """A Keras 2.0-style GRU file: GRU(reset_after=False) with the key deleted."""
    tf_keras.backend.clear_session()
    model = _randomized(tf_keras.Sequential([
        tf_keras.layers.GRU(4, reset_after=False, recurrent_activation="hard_sigmoid", input_shape=(TIME, FEATURES),
                            return_sequences=True, name="gru"),
        tf_keras.layers.Dense(2, name="dense"),
    ]))
    path = tmp_path_factory.mktemp("k2") / "old_gru.h5"
    model.save(path)
    _rewrite_h5_config(path, _drop_reset_after)
    return path, model


def _gru_config(artifact):
    (gru,) = [layer for layer in artifact.model_config["config"]["layers"] if layer["class_name"] == "GRU"]
    return gru["config"]


def test_tf_keras_alone_refuses_gru_without_reset_after(old_gru_h5):
    path, _ = old_gru_h5
    with pytest.raises(Exception):
        tf_keras.models.load_model(path, compile=False)


def test_gru_without_reset_after_loads_exposes_converts(old_gru_h5, tmp_path):
    path, original = old_gru_h5
    artifact = read_artifact(path)
    assert _gru_config(artifact)["reset_after"] is False and artifact.normalized
    assert inspect(path)["sites"][0]["weights"]["bias"] == [12]
    x = _x()
    loaded = load_model(path)
    assert np.array_equal(np.asarray(loaded(x)), np.asarray(original(x)))
    exposed = expose_state_file(path, tmp_path / "exposed.h5")
    assert exposed.report.ok, exposed.report.summary()
    assert _gru_config(read_artifact(tmp_path / "exposed.h5"))["reset_after"] is False
    converted = convert_file(path, tmp_path / "converted.keras")
    assert converted.verified and converted.max_abs_diff < 1e-5


def test_gru_without_reset_after_splices(old_gru_h5, tmp_path):
    path, original = old_gru_h5
    tf_keras.backend.clear_session()
    target = tf_keras.Sequential([
        tf_keras.layers.GRU(4, reset_after=False, recurrent_activation="hard_sigmoid", input_shape=(TIME, FEATURES),
                            return_sequences=True, name="gru"),
        tf_keras.layers.Dense(2, name="dense"),
    ])
    target.save(tmp_path / "b.h5")
    result = splice(path, tmp_path / "b.h5", mode="weights", output=tmp_path / "spliced.h5")
    assert result is not None
    spliced = load_model(tmp_path / "spliced.h5")
    assert np.array_equal(spliced.get_layer("gru").get_weights()[2], original.get_layer("gru").get_weights()[2])


def test_list_style_sequential_is_read_and_exposed(old_gru_h5, tmp_path):
    path, original = old_gru_h5
    listed = tmp_path / "listed.h5"
    listed.write_bytes(path.read_bytes())

    def as_list(config):
        return {**config, "config": config["config"]["layers"]}

    _rewrite_h5_config(listed, as_list)
    with h5py.File(listed, "r") as handle:
        assert isinstance(json.loads(handle.attrs["model_config"])["config"], list)
    report = inspect(listed)
    assert [site["layer"] for site in report["sites"]] == ["gru"]
    assert isinstance(read_artifact(listed).model_config["config"], dict)
    result = expose_state_file(listed, tmp_path / "exposed.h5")
    assert result.report.ok, result.report.summary()
    x = _x()
    assert np.array_equal(np.asarray(load_model(listed)(x)), np.asarray(original(x)))


def test_keras1_argument_names_and_merge_are_normalized():
    config = {"class_name": "Model", "config": {"name": "m", "layers": [
        {"class_name": "LSTM", "name": "l", "config": {"name": "l", "output_dim": 4, "inner_activation": "hard_sigmoid",
                                                       "init": "glorot_uniform", "W_regularizer": None,
                                                       "dropout_U": 0.0, "consume_less": "gpu"}},
        {"class_name": "Merge", "name": "m", "config": {"name": "m", "mode": "concat", "concat_axis": -1}},
        {"class_name": "Dense", "name": "d", "config": {"name": "d", "units": 1, "kernel_initializer": {
            "class_name": "VarianceScaling", "config": {"scale": 1.0, "mode": "fan_in", "distribution": "normal"}}}},
    ]}}
    frozen = json.dumps(config)
    new, notes = keras2_compat.normalize(config)
    assert json.dumps(config) == frozen, "the input is never mutated"
    lstm, merge, dense = new["config"]["layers"]
    assert lstm["config"] == {"name": "l", "units": 4, "recurrent_activation": "hard_sigmoid",
                              "kernel_initializer": "glorot_uniform", "kernel_regularizer": None,
                              "recurrent_dropout": 0.0, "implementation": 2}
    assert merge["class_name"] == "Concatenate" and merge["config"] == {"name": "m", "axis": -1}
    assert dense["config"]["kernel_initializer"]["config"]["distribution"] == "truncated_normal"
    assert len(notes) == 8


def test_unsupported_old_forms_are_refused():
    lambda_merge = {"class_name": "Model", "config": {"name": "m", "layers": [
        {"class_name": "Merge", "config": {"name": "m", "mode": {"class_name": "lambda"}}}]}}
    with pytest.raises(NotSupportedError, match="Merge"):
        keras2_compat.normalize(lambda_merge)
    conflicting = {"class_name": "Dense", "config": {"name": "d", "units": 2, "output_dim": 3}}
    with pytest.raises(NotSupportedError, match="output_dim"):
        keras2_compat.normalize(conflicting)


def test_keras1_file_is_refused(old_gru_h5, tmp_path):
    path, _ = old_gru_h5
    old = tmp_path / "keras1.h5"
    old.write_bytes(path.read_bytes())
    with h5py.File(old, "r+") as handle:
        handle.attrs["keras_version"] = "1.2.2"
    with pytest.raises(NotSupportedError, match="Keras 1"):
        read_artifact(old)


# --------------------------------------------------------------------------------------
# --custom-objects with a tf_keras Layer subclass

CUSTOM_LAYER = '''
import tf_keras


class ScaleK2(tf_keras.layers.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@tf_keras.utils.register_keras_serializable(package="k2test")
class OffsetK2(tf_keras.layers.Layer):
    def call(self, x):
        return x + 1.0
'''


def test_custom_objects_collects_tf_keras_layers(tmp_path):
    source = tmp_path / "custom_k2.py"
    source.write_text(CUSTOM_LAYER)
    objects = load_custom_objects(source)
    assert {"ScaleK2", "OffsetK2", "k2test>OffsetK2"} <= set(objects)
    tf_keras.backend.clear_session()
    inputs = tf_keras.Input((TIME, FEATURES))
    seq = objects["ScaleK2"](1.5, name="scale")(inputs)
    seq = objects["OffsetK2"](name="offset")(seq)
    out = tf_keras.layers.LSTM(4, recurrent_activation="hard_sigmoid", name="lstm")(seq)
    model = _randomized(tf_keras.Model(inputs, out))
    model.save(tmp_path / "custom.h5")
    loaded = load_model(tmp_path / "custom.h5", custom_objects=objects)
    x = _x()
    assert np.array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    result = expose_state_file(tmp_path / "custom.h5", tmp_path / "exposed.h5", custom_objects=objects)
    assert result.report.ok, result.report.summary()


# --------------------------------------------------------------------------------------
# channels_first ConvLSTM on a CPU without NCHW kernels (oneDNN off)

CHANNELS_FIRST_SCRIPT = r'''
import json, sys
import numpy as np
import keras
from surgery.check import oracle
from surgery.ops.expose import expose_state_file

layer = keras.layers.ConvLSTM2D(2, (3, 2), strides=2, padding="same", data_format="channels_first",
                                return_sequences=True, return_state=True)
inputs = keras.Input((5, 2, 5, 4))
model = keras.Model(inputs, layer(inputs)[0])
x = np.random.default_rng(0).normal(size=(3, 5, 2, 5, 4)).astype("float32")
try:
    layer(x)
    eager = "ran"
except Exception as error:
    eager = type(error).__name__
model.save(sys.argv[1] + "/cf.keras")
result = expose_state_file(sys.argv[1] + "/cf.keras", sys.argv[1] + "/cf.exposed.keras")
print(json.dumps({"eager": eager, "ok": result.report.ok, "summary": result.report.summary()}))
'''


def test_channels_first_conv_lstm_without_onednn(tmp_path):
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}
    done = subprocess.run([sys.executable, "-c", CHANNELS_FIRST_SCRIPT, str(tmp_path)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # Eagerly, TensorFlow's CPU Conv2D refuses NCHW here; the tool still verifies the model.
    assert result["eager"] in ("UnimplementedError", "ran")
    assert result["ok"], result["summary"]
