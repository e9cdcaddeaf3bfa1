"""Regressions found by the real-model suite (tests/real), on small models built here:
cuDNN layers verified on a CPU through stand-ins, ids reaching an Embedding inside a
TimeDistributed nested model, list-style Sequential converted, tf_keras custom classes
refused by convert (and a Keras 3 definition used), refusals naming the command's own
option, and splice's plan trusting --custom-objects."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import tf_keras

from surgery.check import cudnn_cpu, tolerance
from surgery.ops.convert import convert_file
from surgery.errors import NotSupportedError
from surgery.ops.expose import expose_state_file
from surgery.io.loading import load_custom_objects, load_model
from surgery.ops.splice import splice
from surgery.check.verify import input_id_limits, random_inputs, verify_files

ROOT = Path(__file__).resolve().parent.parent
CUDNN = ROOT / "fixtures" / "models" / "keras2" / "k2_cudnn_lstm.h5"
NO_GPU = cudnn_cpu.cannot_run({"class_name": "CuDNNLSTM", "config": {}}) is not None


# 1. cuDNN layers where TensorFlow sees no GPU -------------------------------------------

def test_cudnn_expose_state_is_checked_on_a_cpu_standin(tmp_path):
    result = expose_state_file(CUDNN, tmp_path / "exposed.h5", inputs=True)
    assert result.report.ok, result.report.summary()
    assert result.report.checks, "no state checked against the oracle"
    if NO_GPU:
        assert "CPU stand-in" in result.report.summary()
    again = verify_files(CUDNN, tmp_path / "exposed.h5")
    assert again.ok and again.checks, again.summary()


def test_cudnn_splice_weights_is_checked_on_a_cpu_standin(tmp_path):
    b = tmp_path / "b.h5"
    shutil.copyfile(CUDNN, b)
    with h5py.File(b, "r+") as handle:
        for name in handle["model_weights"].attrs["layer_names"]:
            group = handle["model_weights"][name]
            for weight in group.attrs.get("weight_names", []):
                group[weight][...] = 0.1 * np.ones(group[weight].shape)
    result = splice(CUDNN, b, "weights", [], output=tmp_path / "spliced.h5")
    assert result.verification["ok"], result.summary
    if NO_GPU:
        assert "CPU stand-in" in result.summary


def test_standin_computes_the_cudnn_semantics():
    model = load_model(CUDNN)
    twin = cudnn_cpu.standin(model)
    layer = next(l for l in twin.layers if type(l).__name__ == "LSTM")
    assert layer.get_config()["recurrent_activation"] == "sigmoid"
    assert [w.shape for w in layer.get_weights()][-1][0] * 2 == model.get_layer(layer.name).get_weights()[-1].shape[0]


def test_tolerance_scale_floors_small_states_at_the_recurrence_magnitude():
    tight = tolerance.compare([0.30005], [0.3], tolerance.bound_for("float32"))
    floored = tolerance.compare([0.30005], [0.3], tolerance.bound_for("float32", scale=24.0))
    assert not tight.ok and floored.ok
    # a semantic slip (>= 1e-3) is still caught at |c| ~ 25
    assert not tolerance.compare([0.301], [0.3], tolerance.bound_for("float32", scale=25.0)).ok


# 2. ids through a TimeDistributed nested model ------------------------------------------

def _timedistributed_embedding(path):
    chars = tf_keras.Input((4,), name="chars")
    inner = tf_keras.layers.Reshape((12,))(tf_keras.layers.Embedding(9, 3, name="chars_embeddings")(chars))
    # Same name as the outer model and its input: the real rnnmorph model does this.
    nested = tf_keras.Model(chars, inner, name="model_1")
    outer_in = tf_keras.Input((5, 4), name="chars")
    seq = tf_keras.layers.TimeDistributed(nested)(outer_in)
    out = tf_keras.layers.LSTM(3, name="lstm")(seq)
    tf_keras.Model(outer_in, out, name="model_1").save(path)


def test_embedding_inside_timedistributed_model_gets_valid_ids(tmp_path):
    path = tmp_path / "td.h5"
    _timedistributed_embedding(path)
    model = load_model(path)
    assert input_id_limits(model) == [9]
    values = random_inputs(model)
    assert values[0].min() >= 0 and values[0].max() < 9
    result = expose_state_file(path, tmp_path / "exposed.h5")
    assert result.report.ok, result.report.summary()


# 3. list-style Sequential ----------------------------------------------------------------

def _list_sequential(path):
    model = tf_keras.Sequential([
        tf_keras.layers.Embedding(20, 4, input_length=6, batch_input_shape=(None, 6)),
        tf_keras.layers.Bidirectional(tf_keras.layers.GRU(3, reset_after=False, return_sequences=True)),
        tf_keras.layers.LSTM(2),
        tf_keras.layers.Dense(2, activation="softmax"),
    ])
    model.save(path)

    def list_form(config):
        config["config"] = config["config"]["layers"]  # Keras <= 2.2.2 form

    _edit_model_config(path, list_form)


def _edit_model_config(path, edit) -> None:
    """Rewrite the model_config attribute of a Keras 2 .h5 in place through `edit(config)`."""
    with h5py.File(path, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        edit(config)
        handle.attrs["model_config"] = json.dumps(config)


def test_list_style_sequential_converts(tmp_path):
    path = tmp_path / "listseq.h5"
    _list_sequential(path)
    result = convert_file(path, tmp_path / "listseq.keras")
    assert result.verified and result.max_abs_diff is not None, result.check


def _moduleless_functional(path):
    """A Functional model as Keras <= 2.12 wrote it (no "module" in any layer config; the
    real nakdimon 0.1.2 model): Embedding with batch_input_shape, Bidirectional(LSTM)."""
    ids = tf_keras.Input((None,))
    x = tf_keras.layers.Embedding(10, 4, mask_zero=True)(ids)
    x = tf_keras.layers.Bidirectional(tf_keras.layers.LSTM(3, return_sequences=True), merge_mode="sum")(x)
    tf_keras.Model(ids, [tf_keras.layers.Dense(2, name="N")(x), tf_keras.layers.Dense(3, name="D")(x)]).save(path)

    def strip(value):
        if isinstance(value, dict):
            value.pop("module", None)
            value.pop("registered_name", None)
        for child in value.values() if isinstance(value, dict) else value if isinstance(value, list) else ():
            strip(child)

    def without_modules(config):
        strip(config)
        assert "batch_input_shape" in json.dumps(config["config"]["layers"][1])  # on the Embedding

    _edit_model_config(path, without_modules)


def test_moduleless_functional_with_a_wrapper_converts(tmp_path):
    path = tmp_path / "nomodule.h5"
    _moduleless_functional(path)
    result = convert_file(path, tmp_path / "nomodule.keras")
    assert result.verified and result.max_abs_diff is not None, result.check
    assert "2 output(s) vs the Keras 2 original" in result.check


def _own_loss(y_true, y_pred):
    import keras

    return keras.ops.mean(keras.ops.square(y_true - y_pred))


def test_a_training_loss_of_its_own_does_not_stop_a_trusted_model(tmp_path):
    """Keras 3 saves a plain-function loss by name only (module "builtins"): a model to compute
    with is built without it (the real ao-compensation-model GRU was exit 5 with --unsafe)."""
    import keras

    x = keras.Input((5, 2))
    model = keras.Model(x, keras.layers.Dense(1)(keras.layers.GRU(3)(x)))
    model.compile(optimizer="adam", loss=_own_loss)
    path = tmp_path / "own_loss.keras"
    model.save(path)
    for output in ("exposed.keras", "exposed.h5", "exposed_savedmodel"):
        result = expose_state_file(path, tmp_path / output, unsafe=True)
        assert result.report.ok and result.report.checks, result.report.summary()


def test_a_training_loss_of_its_own_needs_no_opt_in(tmp_path):
    """Nothing here compiles a model and Keras 3 finds a loss saved by name only among the
    user's custom objects: the file is not refused (it was exit 3, "foreign_module ...
    'builtins'", for every Keras 3 model trained with a loss of its own); inspect lists it."""
    import keras

    from surgery.ops.inspect import inspect

    x = keras.Input((5, 2))
    model = keras.Model(x, keras.layers.Dense(1)(keras.layers.GRU(3)(x)))
    model.compile(optimizer="adam", loss=_own_loss)
    path = tmp_path / "own_loss.keras"
    model.save(path)
    report = inspect(path)
    assert report["unsafe"] == [] and [f["path"] for f in report["training_only"]] == ["compile_config.loss"]
    result = expose_state_file(path, tmp_path / "exposed.keras")
    assert result.report.ok and result.report.checks, result.report.summary()


def test_verify_across_keras_families_names_the_translation_to_verify_against(tmp_path):
    """A Keras 2 file's --to keras3 result was "differ in structure: dense (dtype)" (exit 1)."""
    path = tmp_path / "listseq.h5"
    _list_sequential(path)
    exposed = tmp_path / "exposed.keras"
    assert expose_state_file(path, exposed, to="keras3").report.ok
    with pytest.raises(NotSupportedError, match="is keras2 and .* is keras3: .*lstm-surgery convert ORIGINAL"):
        verify_files(path, exposed)
    translation = tmp_path / "listseq.keras"
    convert_file(path, translation)
    report = verify_files(translation, exposed)
    assert report.ok and report.checks and report.worst_exact == 0, report.summary()


# 4. tf_keras custom classes in convert ---------------------------------------------------

TF_KERAS_SCALE = """
import tf_keras

class Scale(tf_keras.layers.Layer):
    def call(self, x):
        return 2.0 * x
"""
KERAS3_SCALE = """
import keras

@keras.saving.register_keras_serializable(package="tests", name="Scale")
class Scale3(keras.layers.Layer):
    def call(self, x):
        return 2.0 * x
"""


def _custom_model(tmp_path):
    objects_file = tmp_path / "tf_keras_scale.py"
    objects_file.write_text(TF_KERAS_SCALE)
    scale = load_custom_objects(objects_file)["Scale"]
    x = tf_keras.Input((5, 2))
    y = tf_keras.layers.LSTM(3, return_sequences=True)(scale()(x))
    path = tmp_path / "custom.h5"
    tf_keras.Model(x, tf_keras.layers.Dense(1)(y)).save(path)
    return path, objects_file


def test_convert_refuses_a_tf_keras_custom_class(tmp_path):
    path, objects_file = _custom_model(tmp_path)
    with pytest.raises(NotSupportedError, match="custom layer 'Scale' is a tf_keras class; pass "
                                                "--custom-objects with a Keras 3 definition of it to convert"):
        convert_file(path, tmp_path / "out.keras", custom_objects=load_custom_objects(objects_file))


def test_convert_uses_a_keras3_definition_and_checks_against_the_original(tmp_path):
    path, _ = _custom_model(tmp_path)
    both = tmp_path / "both.py"
    both.write_text(TF_KERAS_SCALE + KERAS3_SCALE)
    result = convert_file(path, tmp_path / "out.keras", custom_objects=load_custom_objects(both))
    assert result.verified and result.max_abs_diff is not None, result.check
    assert "Keras 2 original" in result.check


# 5. refusals name the command's own option -----------------------------------------------

def _unfoldable(path):
    x = tf_keras.Input((4, 2))
    y = tf_keras.layers.LSTM(3, activation="hard_sigmoid")(x)  # applied to c too: cannot fold
    tf_keras.Model(x, y).save(path)


def test_refusal_names_the_option_of_the_command_in_use(tmp_path):
    path = tmp_path / "hard.h5"
    _unfoldable(path)
    with pytest.raises(NotSupportedError) as converting:
        convert_file(path, tmp_path / "out.keras")
    assert "--to keras3" not in str(converting.value) and "convert" in str(converting.value)
    with pytest.raises(NotSupportedError, match="omit --to keras3"):
        expose_state_file(path, tmp_path / "exposed.keras", to="keras3")


# 6. splice's plan trusts --custom-objects ------------------------------------------------

def test_splice_plan_trusts_custom_objects(tmp_path):
    path, objects_file = _custom_model(tmp_path)
    b = tmp_path / "b.h5"
    shutil.copyfile(path, b)
    cmd = [sys.executable, str(ROOT / "cli.py"), "splice", str(path), str(b), "--mode", "weights",
           "-o", str(tmp_path / "spliced.h5"), "--dry-run", "--custom-objects", str(objects_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    refused = subprocess.run(cmd[:-2], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert refused.returncode == 3, refused.stderr
