"""The static safety gate: malicious files are refused before Keras sees them, clean real
models pass without a single finding."""

from __future__ import annotations

import json

import pytest

from surgery.errors import UnsafeContentError
from surgery.io.formats import read_artifact
from surgery.io.safety import Finding, ensure_safe, scan_config

try:
    from tests import malicious
except ImportError:  # tests/ is not a package: pytest put it on sys.path itself
    import malicious


@pytest.fixture(scope="session")
def reference_models(tmp_path_factory):
    return malicious.build_reference_models(tmp_path_factory.getbasetemp() / "reference_models")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, reference_models):
    cases = malicious.build_malicious_corpus(
        tmp_path_factory.mktemp("malicious"), reference_models["k3_sequential"]
    )
    return {case.name: case for case in cases}


# ----------------------------------------------------------------------------------------
# Malicious files


@pytest.mark.parametrize("name", sorted(malicious.CASE_SPECS))
def test_malicious_file_is_refused_before_deserialization(corpus, name):
    case = corpus[name]
    artifact = read_artifact(case.path)

    with pytest.raises(UnsafeContentError) as refused:
        ensure_safe(artifact.model_config)

    message = str(refused.value)
    assert f" at {case.expected_path}: " in message
    assert "--unsafe" in message
    assert "\n" not in message
    assert refused.value.exit_code == 3
    first = scan_config(artifact.model_config)[0]
    assert (first.path, first.kind) == (case.expected_path, case.expected_kind)
    assert not case.canary.exists()


def test_lambda_payloads_in_the_corpus_are_live(tmp_path):
    # The corpus bytecode is a real function: run the way Keras' func_load runs it, it
    # writes its canary. So "the canary does not exist" above means something.
    canary = tmp_path / "proof.canary"
    malicious.run_marshalled(malicious.marshalled_payload(canary))
    assert canary.read_text() == "payload ran"


def test_keras_itself_would_run_the_payload_without_the_gate(tmp_path):
    # Same construction as the corpus' top-level Lambda, with its own canary so the
    # corpus canaries stay untouched.
    import keras

    canary = tmp_path / "keras_load.canary"
    config = malicious.k3_sequential(
        [malicious.k3_input([5, 3]), malicious.k3_lambda(canary), malicious.k3_lstm()],
        build_config={"input_shape": [None, 5, 3]},
    )
    path = malicious.write_keras_file(tmp_path / "lambda.keras", config, None)
    try:
        keras.saving.load_model(path, safe_mode=False)
    except Exception:
        pass  # the weights do not match; the payload ran while the model was built
    assert canary.exists()


@pytest.mark.parametrize("name", sorted(malicious.CASE_SPECS))
def test_allow_unsafe_lets_everything_through(corpus, name):
    artifact = read_artifact(corpus[name].path)
    ensure_safe(artifact.model_config, allow_unsafe=True)


def test_trusted_registered_name_allows_that_custom_object_only(corpus):
    config = read_artifact(corpus["keras_foreign_package_layer"].path).model_config

    ensure_safe(config, trusted=["evil_pkg>EvilLSTM"])
    ensure_safe(config, trusted=["EvilLSTM"])
    with pytest.raises(UnsafeContentError, match="--custom-objects FILE.py"):
        ensure_safe(config, trusted=["other_pkg>Other"])


@pytest.mark.parametrize(
    "name", ["keras_top_level_lambda", "keras_tfsmlayer", "keras_builtins_exec_initializer"]
)
def test_trust_never_allows_code_execution(corpus, name):
    config = read_artifact(corpus[name].path).model_config
    everything = {"Lambda", "__lambda__", "lambda", "TFSMLayer", "exec", "builtins.exec"}
    with pytest.raises(UnsafeContentError):
        ensure_safe(config, trusted=everything)


def test_registered_keras3_custom_objects_need_trust():
    import keras

    @keras.saving.register_keras_serializable(package="mypkg")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2

    @keras.saving.register_keras_serializable(package="mypkg")
    def my_activation(x):
        return x

    model = keras.Sequential(
        [keras.Input((3,)), Doubler(), keras.layers.Dense(2, activation=my_activation)]
    )
    config = keras.saving.serialize_keras_object(model)

    kinds = {finding.kind for finding in scan_config(config)}
    assert kinds == {"custom_object"}
    ensure_safe(config, trusted=["mypkg>Doubler", "mypkg>my_activation"])
    with pytest.raises(UnsafeContentError, match="my_activation"):
        ensure_safe(config, trusted=["mypkg>Doubler"])


# ----------------------------------------------------------------------------------------
# No false positives on real models


@pytest.mark.parametrize(
    "name",
    ["k3_keras", "k3_h5", "k3_sequential", "tk_h5", "tk_keras", "tk_savedmodel",
     "tk_savedmodel_no_traces"],
)
def test_real_model_configs_have_no_findings(reference_models, name):
    config = read_artifact(reference_models[name]).model_config
    assert scan_config(config) == []
    ensure_safe(config)


def test_broad_keras3_model_has_no_findings():
    import keras

    inputs = keras.Input((6, 4))
    x = keras.layers.Masking()(inputs)
    x = keras.layers.Bidirectional(keras.layers.GRU(
        3, return_sequences=True, kernel_regularizer=keras.regularizers.L1L2(0.01, 0.01),
        kernel_constraint=keras.constraints.MaxNorm(2.0), activation=keras.activations.gelu,
        recurrent_initializer=keras.initializers.Orthogonal(seed=1),
        dtype="mixed_float16"))(x)
    x = keras.layers.TimeDistributed(keras.layers.Dense(4))(x)
    x = keras.layers.LayerNormalization()(x)
    x = keras.layers.Conv1D(2, 3, padding="same", activation="relu")(x)
    x = keras.layers.RNN(keras.layers.StackedRNNCells(
        [keras.layers.LSTMCell(3), keras.layers.SimpleRNNCell(2)]), return_state=False)(x)
    x = keras.layers.Dropout(0.1)(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(), "accuracy", keras.losses.mean_squared_error],
    )
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    assert scan_config(config) == []


def test_broad_tf_keras_model_has_no_findings():
    import tensorflow as tf
    import tf_keras

    inputs = tf_keras.Input((6, 4))
    x = tf_keras.layers.Masking()(inputs)
    x = tf_keras.layers.Bidirectional(tf_keras.layers.LSTM(
        3, return_sequences=True, kernel_regularizer=tf_keras.regularizers.l2(0.01),
        recurrent_constraint=tf_keras.constraints.UnitNorm()))(x)
    x = tf_keras.layers.TimeDistributed(tf_keras.layers.Dense(2))(x)
    x = tf.math.add(x, 1.0)  # becomes a TFOpLambda layer
    x = tf.reshape(x, (-1, 12))
    outputs = tf_keras.layers.Dense(1, dtype=tf_keras.mixed_precision.Policy("mixed_float16"))(x)
    model = tf_keras.Model(inputs, outputs)
    assert scan_config(json.loads(model.to_json())) == []


def test_keras2_builtin_optimizer_registrations_are_not_custom_objects():
    assert scan_config({"class_name": "Custom>Adam", "config": {}}) == []
    findings = scan_config({"class_name": "MyPkg>Thing", "config": {}})
    assert [(f.path, f.kind) for f in findings] == [("(root)", "custom_object")]


# ----------------------------------------------------------------------------------------
# Scanner details


def test_tf_op_lambda_with_side_effects_is_refused():
    def op_layer(function):
        return {"class_name": "TFOpLambda", "config": {"name": "op", "function": function}}

    assert scan_config(op_layer("math.add")) == []
    assert scan_config(op_layer("io.write_file"))[0].kind == "unsafe_api"
    assert scan_config(op_layer("compat.v1.py_func"))[0].kind == "unsafe_api"


def test_dotted_reference_to_unsafe_api_anywhere_is_refused():
    config = {"class_name": "Dense", "config": {"activation": "keras.utils.get_file"}}
    assert scan_config(config) == [
        Finding("config.activation", "unsafe_api", "reference to 'keras.utils.get_file'")
    ]


def test_every_lambda_is_reported_in_document_order(tmp_path):
    layers = [malicious.k3_lambda(tmp_path / "c", name=f"l{i}") for i in range(3)]
    findings = scan_config(malicious.k3_sequential(layers))
    layer_paths = [f.path for f in findings if f.detail.startswith("Lambda layer")]
    assert layer_paths == ["config.layers[0]", "config.layers[1]", "config.layers[2]"]


def test_absurdly_deep_nesting_does_not_overflow_the_stack(tmp_path):
    depth = 100_000
    config: dict = {"class_name": "Lambda", "config": {"name": "deep"}}
    for _ in range(depth):
        config = {"class_name": "Wrapper", "config": {"layer": config}}
    deep_list: list = ["os.system"]
    for _ in range(depth):
        deep_list = [deep_list]

    findings = scan_config({"class_name": "Sequential", "config": config, "extra": deep_list})

    assert [f.kind for f in findings] == ["lambda", "unsafe_api"]
    assert findings[0].path == "config" + ".config.layer" * depth
    assert findings[1].path == "extra" + "[0]" * (depth + 1)
    with pytest.raises(UnsafeContentError) as refused:
        ensure_safe({"class_name": "Sequential", "config": config})
    assert len(str(refused.value)) < 1000  # the path is shortened, not dumped whole


def test_hostile_keys_and_values_cannot_break_the_message_line():
    config = {"class_name": "Sequential", "config": {"la\nyers": [
        {"class_name": "TFOpLambda", "config": {"function": "io.write_file\nmore"}}]}}
    with pytest.raises(UnsafeContentError) as refused:
        ensure_safe(config)
    assert "\n" not in str(refused.value)
    assert "'la\\nyers'" in str(refused.value)


def test_cyclic_python_structure_terminates():
    config: dict = {"class_name": "Sequential", "config": {"layers": []}}
    config["config"]["layers"].append(config)
    assert scan_config(config) == []


def test_error_message_is_one_line_and_names_path_and_value(corpus):
    config = read_artifact(corpus["keras_tfsmlayer"].path).model_config
    with pytest.raises(UnsafeContentError) as refused:
        ensure_safe(config)
    message = str(refused.value)
    assert "config.layers[1]" in message
    assert "some_saved_model" in message
    assert "\n" not in message
