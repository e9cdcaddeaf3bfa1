"""Streaming: step models checked step by step against the full-sequence model.

Every number here comes from running the step model chunk by chunk with carried state and
comparing with the untouched model run on the whole sequence (or the NumPy oracle).
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import FIXTURES, ROOT

TOL = 1e-5

# Fixtures that stream, with what they exercise.
STREAMABLE = [
    "lstm_stacked.keras",         # three stacked LSTMs, the last returns only its last step
    "gru.keras",
    "simple_rnn.keras",
    "convlstm1d.keras",           # spatial state; Flatten after a last-step ConvLSTM
    "convlstm2d.keras",
    "lstm_nested.keras",          # LSTM inside a nested functional model
    "lstm_shared.keras",          # one LSTM called on two inputs
    "lstm_masking.keras",         # Masking: masked steps carry the state
    "lstm_embedding_mask.keras",  # int tokens, Embedding(mask_zero=True)
    "rnn_stacked_cells.keras",    # RNN(StackedRNNCells[LSTMCell, GRUCell])
    "stateful.keras",             # stateful=True, fixed batch 4 in the original
    "timedistributed.keras",
]


@pytest.fixture(scope="module")
def load():
    from surgery.io.loading import load_model

    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = load_model(FIXTURES / name)
        return cache[name]

    return get


def _assert_verified(report):
    assert report.runs, "no run was made"
    for run in report.runs:
        assert run["outputs"], run
        assert run["states"], run
    # Every comparison (each output, state and original-model prefix of every run) is judged
    # elementwise by the tolerance policy's bound.
    assert report.checks
    for key, check in report.checks.items():
        assert check.ok, check.describe(key)
    assert report.ok


def test_streaming_fixture_full_check(load):
    """The issue's check: T=500, K in {1, 4, 16}, batch 1 and 8, zero and non-zero initial state."""
    from surgery.ops.stream import verify_streaming

    report = verify_streaming(load("streaming.keras"))
    assert report.length == 500
    assert {(r["steps"], r["batch"], r["initial_state"]) for r in report.runs} == {
        (k, b, i) for k in (1, 4, 16) for b in (1, 8) for i in ("zero", "random")}
    _assert_verified(report)
    # Every output and every state has a reported error; the zero-state runs were also
    # compared with the untouched original model.
    assert set(report.output_errors) == {"time_distributed"}
    assert set(report.state_errors) == {"lstm_h", "lstm_c", "lstm_1_h", "lstm_1_c"}
    assert all(r["original"] for r in report.runs if r["initial_state"] == "zero")
    assert "max |err|" in report.summary() and "lstm_1_c" in report.summary()


@pytest.mark.parametrize("name", STREAMABLE)
def test_fixture_streams_like_the_full_sequence(load, name):
    from surgery.ops.stream import verify_streaming

    # K=3 does not divide 40: the last chunk is shorter, so chunk sizes compose too.
    report = verify_streaming(load(name), length=40, steps=(1, 3))
    _assert_verified(report)


@pytest.mark.slow
@pytest.mark.parametrize("name", STREAMABLE)
def test_fixture_full_length(load, name):
    from surgery.ops.stream import verify_streaming

    _assert_verified(verify_streaming(load(name)))


def test_the_check_can_fail(load):
    """Dropping the carried state between chunks must show up as a large error."""
    from surgery.ops import stream

    model = load("streaming.keras")
    step, plan = stream.build_step_model(model, steps=4)
    full, full_plan = stream.build_full_step_model(model)
    run = stream.compiled_call(step)

    def forgetful(values):
        count = plan.states.original_inputs
        return run(values[:count] + [np.zeros_like(v) for v in values[count:]])

    inputs = stream.stream_inputs(full.inputs, full_plan, batch=2, length=40, seed=0)
    init = stream.initial_states(full_plan, batch=2, random=False, seed=0)
    good, _ = stream.stream_through(lambda k: run, inputs, init, plan, steps=4, length=40)
    bad, _ = stream.stream_through(lambda k: forgetful, inputs, init, plan, steps=4, length=40)
    reference = stream.compiled_call(full)(inputs + init)[0]
    assert np.max(np.abs(good[0] - reference)) <= TOL
    assert np.max(np.abs(bad[0] - reference)) > 1e-3


def test_masked_steps_need_the_carry_fix(load, monkeypatch):
    """Without selecting the incoming h at masked steps, Keras' zero output would leak out."""
    from surgery.ops import stream

    monkeypatch.setattr(stream.config._LevelStream, "_fix_masked_call", lambda self, *args: None)
    report = stream.verify_streaming(load("lstm_masking.keras"), length=40, steps=(1,), batches=(2,))
    assert not report.ok
    assert max(r["original"]["dense"] for r in report.runs if r["original"]) > 1e-3


def test_step_model_signature_and_shapes(load):
    from surgery import to_step_model
    from surgery.ops.stream import build_step_model

    model = load("streaming.keras")
    step, plan = build_step_model(model, steps=4, batch_size=8)
    assert plan.input_names == ("input_layer", "lstm_h_in", "lstm_c_in", "lstm_1_h_in", "lstm_1_c_in")
    assert plan.output_names == ("time_distributed", "lstm_h", "lstm_c", "lstm_1_h", "lstm_1_c")
    assert [tuple(t.shape) for t in step.inputs] == [(8, 4, 4)] + [(8, 16)] * 4
    assert tuple(step.outputs[0].shape) == (8, 4, 2)
    assert plan.unrolled and plan.sequence_inputs == ("input_layer",)
    assert to_step_model(model, steps=1).inputs[0].shape[1] == 1


def test_last_step_layer_yields_its_output_at_every_step(load):
    """lstm_stacked ends in LSTM(return_sequences=False) -> Dense: each step gives Dense(h_t),
    which is what the original model returns on the prefix up to that step."""
    from surgery.ops import stream

    model = load("lstm_stacked.keras")
    step, plan = stream.build_step_model(model, steps=5)
    assert plan.per_step_sites == ("lstm_2",) and plan.output_kinds == ("per-step",)
    assert tuple(step.outputs[0].shape) == (None, 5, 2)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 10, 3)).astype("float32")
    zeros = [np.zeros((3, *s.shape), "float32") for s in plan.state_inputs]
    run = stream.compiled_call(step)
    first = run([x[:, :5]] + zeros)
    second = run([x[:, 5:]] + first[1:])
    per_step = np.concatenate([first[0], second[0]], axis=1)
    # The untouched model takes exactly 10 steps; shorter prefixes go through the same model
    # with a free time axis.
    assert np.max(np.abs(per_step[:, -1] - np.asarray(model(x, training=False)))) <= TOL
    any_length = stream.build_sequence_model(model)
    for t in (1, 4, 7, 10):
        expected = np.asarray(any_length(x[:, :t], training=False))
        assert np.max(np.abs(per_step[:, t - 1] - expected)) <= TOL


def test_input_model_is_not_modified(load, keras):
    from surgery.ops.stream import to_step_model

    model = load("lstm_masking.keras")
    before = json.dumps(keras.saving.serialize_keras_object(model), sort_keys=True, default=str)
    weights = [w.copy() for w in model.get_weights()]
    to_step_model(model, steps=4)
    to_step_model(model, state="internal")
    assert json.dumps(keras.saving.serialize_keras_object(model), sort_keys=True, default=str) == before
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))


def _tiny(keras, body):
    layers = keras.layers
    x = keras.Input((10, 3), name="x")
    return keras.Model(x, body(layers, x))


@pytest.mark.parametrize("body, layer, reason", [
    (lambda L, x: L.GlobalAveragePooling1D()(L.LSTM(4, return_sequences=True)(x)), "global_average_pooling1d",
     "pools across all time steps"),
    (lambda L, x: L.Attention()([L.LSTM(4, return_sequences=True)(x)] * 2), "attention", "attends across time"),
    (lambda L, x: L.Dense(1)(L.Flatten()(L.LSTM(4, return_sequences=True)(x))), "flatten", "flattens the time axis"),
    (lambda L, x: L.LSTM(2)(L.Reshape((5, 6))(x)), "reshape", "fixed-length Reshape over time"),
    (lambda L, x: L.LSTM(2)(L.Conv1D(4, 3)(x)), "conv1d", "convolves across time"),
    (lambda L, x: L.LSTM(2)(L.MaxPooling1D(2)(x)), "max_pooling1d", "pools neighbouring time steps"),
    (lambda L, x: L.LSTM(3)(L.RepeatVector(5)(L.LSTM(4)(x))), "repeat_vector", "creates a time axis"),
])
def test_layers_that_look_across_time_are_refused(keras, body, layer, reason):
    from surgery.errors import NotSupportedError
    from surgery.ops.stream import to_step_model

    model = _tiny(keras, body)
    with pytest.raises(NotSupportedError) as error:
        to_step_model(model)
    assert layer in str(error.value) and reason in str(error.value)
    assert error.value.exit_code == 4


@pytest.mark.parametrize("name, layer, reason", [
    ("bidirectional.keras", "bi1", "both directions"),
    ("go_backwards.keras", "lstm", "go_backwards=True"),
    ("seq2seq.keras", "decoder_lstm", "initial state comes from another layer"),
    ("multi_io.keras", "concatenate", "'aux', which has no time axis"),
])
def test_unstreamable_fixtures_name_the_layer(name, layer, reason):
    """Refused from the config alone, before any Keras model is built."""
    from surgery.errors import NotSupportedError
    from surgery.io.formats import read_artifact
    from surgery.ops.stream import step_config

    artifact = read_artifact(FIXTURES / name)
    with pytest.raises(NotSupportedError) as error:
        step_config(artifact.model_config, artifact.family)
    assert f"'{layer}'" in str(error.value) and reason in str(error.value)


def test_per_step_layers_around_the_recurrence(keras):
    """Embedding(mask_zero) -> Dense -> Dropout -> GRU -> TimeDistributed -> SimpleRNN(last step)
    -> two Dense heads concatenated on axis 1 -> LayerNormalization -> Dense; and a per-step Reshape."""
    from surgery.ops.stream import build_step_model, verify_streaming

    L = keras.layers
    keras.utils.set_random_seed(1)
    tokens = keras.Input((12,), dtype="int32", name="tokens")
    h = L.Dropout(0.3)(L.Dense(5, activation="relu")(L.Embedding(10, 6, mask_zero=True)(tokens)))
    h = L.TimeDistributed(L.Dense(4))(L.GRU(7, return_sequences=True, name="gru_a")(h))
    last = L.SimpleRNN(5, name="srnn")(h)
    joined = L.Concatenate(axis=1)([L.Dense(6)(last), L.Dense(3)(last)])
    model = keras.Model(tokens, L.Dense(2, name="head")(L.LayerNormalization(name="norm")(joined)))
    _step, plan = build_step_model(model, steps=4)
    assert plan.per_step_sites == ("srnn",)
    assert plan.wrapped == ("norm",)
    assert set(plan.masked) == {"gru_a", "srnn"}
    _assert_verified(verify_streaming(model, length=40, steps=(1, 4)))

    x = keras.Input((10, 6))
    reshaped = L.TimeDistributed(L.Flatten())(L.Reshape((10, 2, 3))(x))
    model = keras.Model(x, L.TimeDistributed(L.Dense(2))(L.LSTM(4, return_sequences=True)(reshaped)))
    _assert_verified(verify_streaming(model, length=30, steps=(1, 4)))


def test_internal_state_model(load, tmp_path):
    from surgery.ops import stream

    model = load("streaming.keras")
    stateful = stream.to_step_model(model, state="internal", steps=4, batch_size=2)
    assert stateful.batch_size == 2 and stateful.steps == 4
    full, plan = stream.build_full_step_model(model)
    inputs = stream.stream_inputs(full.inputs, plan, batch=2, length=24, seed=5)
    init = stream.initial_states(plan, batch=2, random=True, seed=6)
    stateful.set_state({s.name: v for s, v in zip(plan.state_inputs, init)})
    streamed = np.concatenate([stateful(inputs[0][:, t:t + 4]) for t in range(0, 24, 4)], axis=1)
    reference = stream.compiled_call(full)(inputs + init)
    assert np.max(np.abs(streamed - reference[0])) <= TOL
    for state, want in zip(plan.state_outputs, reference[1:]):
        assert np.max(np.abs(stateful.get_state()[state.name] - want)) <= TOL
    stateful.reset_state()
    assert all(not v.any() for v in stateful.get_state().values())
    fresh = stream.compiled_call(full)([inputs[0][:, :4]] + stream.initial_states(plan, batch=2, random=False, seed=0))
    assert np.max(np.abs(stateful(inputs[0][:, :4]) - fresh[0])) <= TOL

    # The SavedModel carries the state between calls and exposes reset as a signature.
    stateful.reset_state()
    stateful.save(tmp_path / "internal")
    driver = stream.saved_internal(tmp_path / "internal", stateful.plan)
    assert set(driver.keep_alive.signatures) == {"serving_default", "reset", "read_state", "assign_state"}
    report = stream.StreamReport(length=24, tolerance=TOL)
    result = stream.verify_internal("savedmodel", driver, model, stateful.plan, report)
    assert report.ok and result["after_reset"] <= TOL and result["states"]


def test_savedmodel_signature_keys_are_state_names(load, tmp_path):
    from surgery.io import saving
    from surgery.io import writers
    from surgery.ops import stream
    from surgery.io.quiet import import_tensorflow

    tf = import_tensorflow()
    model = load("lstm_nested.keras")
    step, plan = stream.build_step_model(model, steps=2)
    writers.export_savedmodel(step, tmp_path / "sm", list(plan.input_names), list(plan.output_names))
    signature = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    assert set(signature.structured_input_signature[1]) == set(plan.input_names)
    assert set(signature.structured_outputs) == set(plan.output_names)
    assert {"inner__inner_lstm_h_in", "outer_lstm_c_in"} <= set(plan.input_names)
    report = stream.StreamReport(length=20, tolerance=TOL)
    stream.verify_backend("savedmodel", stream.saved_external(tmp_path / "sm", plan), model, plan, report)
    assert report.ok and report.backends["savedmodel"]["states"]


def test_tflite_builtin_ops_and_named_binding(load):
    from surgery.ops import stream
    from surgery.io import tflite

    model = load("streaming.keras")
    step, plan = stream.build_step_model(model, steps=1)
    converted = tflite.convert(step, plan)
    report = converted.report
    assert report.builtin_only and not report.loop and not report.fused_recurrent
    assert report.kinds == ["unrolled"]
    assert "FULLY_CONNECTED" in report.ops and "WHILE" not in report.ops
    assert report.signatures["serving_default"]["inputs"] == sorted(plan.input_names)
    runner = tflite.external_step(converted.content, plan)
    # Bound by name: the interpreter's own input order differs from the plan's.
    assert runner.names_in == list(plan.input_names)
    check = stream.StreamReport(length=48, tolerance=TOL)
    result = stream.verify_backend("tflite", runner, model, plan, check, keras_step=stream.compiled_call(step))
    assert check.ok and max(result["vs_keras_step"].values()) <= TOL
    # TensorFlow's own interpreter (the fallback when ai_edge_litert is not installed) agrees.
    tf_runner = tflite.SignatureStep(tflite.load_interpreter(converted.content, needs_flex=True),
                                     plan.input_names, plan.output_names)
    assert type(tf_runner.interpreter).__module__.startswith("tensorflow")
    values = [np.random.default_rng(0).standard_normal((2, 1, 4)).astype("float32")]
    values += [np.full((2, 16), 0.1 * i, "float32") for i in range(4)]
    for got, want in zip(tf_runner(values), runner(values)):
        assert np.max(np.abs(got - want)) <= TOL


def _amplifying_gru():
    """GRU -> Dense -> softmax with weights that amplify rounding (as the real waf-brain model's
    GRU(101) -> Dense(20) -> Dense(101, softmax) does: TFLite 7e-4 from Keras on the output)."""
    import keras

    x = keras.Input((None, 8))
    h = keras.layers.GRU(32, name="gru")(x)
    y = keras.layers.Dense(50, activation="softmax", name="head")(keras.layers.Dense(64, name="mid")(h))
    model = keras.Model(x, y)
    rng = np.random.default_rng(3)
    model.set_weights([rng.standard_normal(w.shape).astype("float32") * scale
                       for w, scale in zip(model.get_weights(), (1.0, 0.6, 0.1, 1.0, 0.1, 1.0, 0.1))])
    return model


def test_exported_backend_rounding_differently_is_judged_by_the_measured_amplification():
    from surgery.check import tolerance
    from surgery.ops import stream

    model = _amplifying_gru()
    step, plan = stream.build_step_model(model, steps=1)
    keras_step = stream.compiled_call(step)
    rng = np.random.default_rng(0)

    def rounds_differently(values):  # every input and state one ulp away at every step
        return keras_step([np.nextafter(v, rng.choice((-np.inf, np.inf), size=v.shape).astype(v.dtype)).astype(v.dtype)
                           for v in values])

    def slips(values):  # a semantic slip of 2e-3 on the output
        outputs = keras_step(values)
        return [outputs[0] + np.float32(2e-3)] + outputs[1:]

    plain = tolerance.bound_for("float32", steps=200)
    report = stream.StreamReport(length=200, tolerance=plain)
    stream.verify_backend("tflite", rounds_differently, model, plan, report, keras_step=keras_step)
    # beyond the plain bound anywhere (softmax: |ref| <= 1), within it plus the measured amplification
    assert report.backends["tflite"]["outputs"]["head"] > (plain.atol + plain.rtol) * plain.growth
    assert report.ok, report.summary()
    slipped = stream.StreamReport(length=200, tolerance=plain)
    stream.verify_backend("tflite", slips, model, plan, slipped, keras_step=keras_step)
    assert not slipped.ok and not slipped.checks["tflite: output head"].ok


def test_stateful_backend_rounding_differently_is_judged_by_the_measured_amplification():
    from surgery.check import tolerance
    from surgery.ops import stream

    model = _amplifying_gru()
    step, plan = stream.build_step_model(model, steps=1, batch_size=2)
    keras_step = stream.compiled_call(step)
    count = len(plan.original_outputs)
    rng = np.random.default_rng(0)

    class Carried:  # keeps its own state, like a stateful SavedModel or TFLite model
        def __init__(self, offset):
            self.offset, self.states = np.float32(offset), []

        def start(self, init):
            self.states = [np.array(s) for s in init]

        def reset(self):
            self.states = [np.zeros_like(s) for s in self.states]

        def __call__(self, values):
            moved = [np.nextafter(v, rng.choice((-np.inf, np.inf), size=v.shape).astype(v.dtype)).astype(v.dtype)
                     for v in values[:plan.states.original_inputs] + self.states]
            outputs = keras_step(moved)
            self.states = outputs[count:]
            return [outputs[0] + self.offset] + outputs[1:]

    plain = tolerance.bound_for("float32", steps=200)
    report = stream.StreamReport(length=200, tolerance=plain)
    stream.verify_internal("tflite", Carried(0.0), model, plan, report)
    assert report.backends["tflite"]["outputs"]["head"] > (plain.atol + plain.rtol) * plain.growth
    assert report.ok, report.summary()
    slipped = stream.StreamReport(length=200, tolerance=plain)
    stream.verify_internal("tflite", Carried(2e-3), model, plan, slipped)
    assert not slipped.ok and not slipped.checks["tflite: output head"].ok


def test_tflite_internal_state_uses_resource_variables(load):
    from surgery.ops import stream
    from surgery.io import tflite

    model = load("gru.keras")
    stateful = stream.to_step_model(model, state="internal", steps=2)
    converted = tflite.convert(stateful)
    assert set(converted.report.signatures) == {"serving_default", "reset", "read_state", "assign_state"}
    assert "resource variables" in converted.report.kinds and converted.report.builtin_only
    report = stream.StreamReport(length=20, tolerance=TOL)
    result = stream.verify_internal("tflite", stream.tflite_internal(converted.content, stateful.plan), model,
                                    stateful.plan, report)
    assert report.ok and result["after_reset"] <= TOL


def cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def test_cli_stream_writes_verified_savedmodel_and_tflite(tmp_path):
    out, lite = tmp_path / "streaming.step", tmp_path / "streaming.tflite"
    result = cli("stream", FIXTURES / "streaming.keras", "-o", out, "--tflite", lite, "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    payload = json.loads(result.stdout)
    assert payload["ok"] and payload["verification"]["ok"]
    assert set(payload["verification"]["state_max_abs_err"]) == {"lstm_h", "lstm_c", "lstm_1_h", "lstm_1_c"}
    assert payload["tflite_ops"]["builtin_only"] and payload["tflite_ops"]["kinds"] == ["unrolled"]
    assert payload["verification"]["backends"]["tflite"]["vs_keras_step"]["time_distributed"] <= TOL
    assert (out / "saved_model.pb").exists() and lite.stat().st_size > 0
    manifest = json.loads((tmp_path / "streaming.step.manifest.json").read_text())
    assert manifest["operation"] == "stream" and manifest["state"] == "external"
    assert manifest["signatures"]["serving_default"]["inputs"][1:] == ["lstm_h_in", "lstm_c_in", "lstm_1_h_in",
                                                                       "lstm_1_c_in"]


def test_cli_stream_internal_text_output(tmp_path):
    result = cli("stream", FIXTURES / "gru.keras", "-o", tmp_path / "gru.internal", "--state", "internal",
                 "--steps", "4", "--no-verify")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "internal state, 4 steps per call, batch 1" in result.stdout
    assert "gru_h (1, 8)" in result.stdout and "not verified" in result.stdout


@pytest.mark.parametrize("args, code, text", [
    (["bidirectional.keras"], 4, "Bidirectional"),
    (["lstm_masking.keras", "--state", "internal", "--no-verify", "-o", "x.keras"], 2, "directory"),
])
def test_cli_stream_errors(tmp_path, args, code, text):
    name, *rest = args
    if "-o" not in rest:
        rest += ["-o", tmp_path / "out"]
    rest = [tmp_path / r if r == "x.keras" else r for r in rest]
    result = cli("stream", FIXTURES / name, *rest)
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_tflite_at_a_fixed_batch_is_as_lean_as_a_hand_built_step(keras, tmp_path):
    """`stream --tflite --batch-size 1` of Input -> LSTM(256) -> Dense: no more ops than the same
    step written by hand in TensorFlow (benchmarks/stream_latency.py), both counted from the
    converted flatbuffers, and both compute the same step."""
    from surgery.io import tflite

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import stream_latency

    model = stream_latency.build_model(keras)
    model.save(tmp_path / "lstm256.keras")
    lite = tmp_path / "lstm256.tflite"
    result = cli("stream", tmp_path / "lstm256.keras", "-o", tmp_path / "lstm256.step", "--tflite", lite,
                 "--batch-size", "1")
    assert result.returncode == 0, result.stderr
    exported = tflite.op_report(lite.read_bytes())
    hand_content = stream_latency.hand_built_tflite(model)
    hand = tflite.op_report(hand_content)
    assert exported.builtin_only and hand.builtin_only
    assert sum(exported.ops.values()) <= sum(hand.ops.values()), (exported.summary(), hand.summary())
    # The hand-built graph is the same step: the same outputs and states on the same values.
    rng = np.random.default_rng(0)
    x, h, c = (rng.standard_normal(shape).astype("float32") for shape in [(1, 1, 32), (1, 256), (1, 256)])
    signature = json.loads((tmp_path / "lstm256.step.manifest.json").read_text())["signatures"]["serving_default"]
    ours = tflite.SignatureStep(tflite.load_interpreter(lite.read_bytes()), signature["inputs"],
                                signature["outputs"])([x, h, c])  # x, h, c in; y, h, c out
    theirs = tflite.SignatureStep(tflite.load_interpreter(hand_content), ["x", "h_in", "c_in"],
                                  ["y", "h", "c"])([x, h, c])
    for got, want in zip(ours, theirs):
        assert got.shape == want.shape and np.max(np.abs(got - want)) <= TOL


@pytest.mark.parametrize("name", ["lstm_masking.keras", "lstm_embedding_mask.keras", "rnn_stacked_cells.keras",
                                  "gru.keras", "convlstm2d.keras", "streaming.keras"])
def test_lean_trace_gives_exactly_the_numbers_of_keras_own_trace(load, name):
    """The lean trace TFLite conversion uses (recurrences taken along the time axis, masked steps
    selected against a scalar zero) computes bit for bit what Keras' own unrolled trace does,
    masks in the middle and at the end included."""
    from surgery.check.verify import input_id_limits
    from surgery.io import tflite
    from surgery.io.quiet import import_tensorflow, quiet
    from surgery.ops import stream

    model = load(name)
    for steps, batch in [(1, 1), (6, 3)]:
        step, plan = stream.build_step_model(model, steps=steps, batch_size=batch)
        values = stream.stream_inputs(step.inputs, plan, batch=batch, length=steps, seed=3,
                                      limits=input_id_limits(step))
        if steps > 1:  # zeros (masked where the model masks them) in the middle of row 0, at the end of row 1
            values[0][0, 2:4] = 0
            values[0][1, -2:] = 0
        values += stream.initial_states(plan, batch=batch, random=True, seed=4)
        expected = stream.compiled_call(step)(values)
        with tflite.lean_trace():
            got = stream.compiled_call(step)(values)
        assert all(np.array_equal(g, e) for g, e in zip(got, expected)), (name, steps)
    # And the converted graphs: lean (what convert writes) and as Keras traces it.
    module, functions = tflite.external_functions(step, plan, lean=False)
    with quiet():
        plain = import_tensorflow().lite.TFLiteConverter.from_concrete_functions(functions, module).convert()
    lean = tflite.convert(step, plan)
    assert sum(lean.report.ops.values()) <= sum(tflite.op_report(plain).ops.values())
    for got, want in zip(tflite.external_step(lean.content, plan)(values), tflite.external_step(plain, plan)(values)):
        assert np.array_equal(got, want), name


def test_lean_trace_nested_and_concurrent_blocks_restore_keras_own_rnn():
    """The swap of keras.src.backend.rnn is shared: overlapping blocks (threads) leave Keras'
    own function in place when the last one ends, whatever order they end in."""
    import threading

    from keras.src import backend

    from surgery.io.tflite import lean_trace

    own = backend.rnn
    inside, release = threading.Event(), threading.Event()

    def other_thread():
        with lean_trace():
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=other_thread)
    with lean_trace():
        swapped = backend.rnn
        assert swapped is not own
        worker.start()
        assert inside.wait(10)
        assert backend.rnn is swapped  # the second block shares the swap
    assert backend.rnn is swapped      # the other thread is still inside
    release.set()
    worker.join(10)
    assert backend.rnn is own


def test_a_flex_tflite_model_is_checked_or_refused_in_one_line(tmp_path):
    """A mixed-precision step converts only with TensorFlow (Flex) ops, which TensorFlow's own
    Python interpreter no longer runs in recent builds: that was an internal error (exit 5).
    Where no interpreter can run them the stream is refused (exit 4) and nothing is written;
    where one can, the TFLite model is checked like any other. --no-verify writes it."""
    from surgery.errors import NotSupportedError
    from surgery.io import tflite
    from surgery.ops import stream

    source = FIXTURES / "mixed_precision.keras"
    try:
        result = stream.stream_file(source, tmp_path / "step", tflite_path=tmp_path / "step.tflite")
    except NotSupportedError as error:
        assert "needs TensorFlow ops (Flex" in str(error) and "--no-verify" in str(error)
        assert list(tmp_path.iterdir()) == []
    else:
        assert result.report.ok and "tflite" in result.report.backends
    unchecked = tmp_path / "unchecked"
    stream.stream_file(source, unchecked / "step", tflite_path=unchecked / "step.tflite", verify=False)
    assert tflite.op_report((unchecked / "step.tflite").read_bytes()).flex
