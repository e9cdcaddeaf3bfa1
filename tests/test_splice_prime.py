"""splice --mode prime: A's final state on --data becomes B's built-in initial state.

Independent references: the captured state is recomputed with Keras (A's layer with
return_state) and the NumPy oracle; B(x, initial_state=captured) is computed with the
engine's expose-state --inputs model built from B's own file.
"""

import json
import zipfile

import numpy as np
import pytest
from conftest import FIXTURES

from surgery.errors import UsageError
from surgery.io.safety import scan_config
from surgery.ops.splice import plan, splice


@pytest.fixture
def seq(tmp_path):
    path = tmp_path / "seq.npy"
    np.save(path, np.random.default_rng(3).standard_normal((10, 3)).astype("float32"))
    return path


def captured_state(keras, a_path, a_site, data):
    from surgery.ops.expose import expose_state

    a = keras.saving.load_model(a_path)
    exposed = expose_state(a, layers=[a_site], outputs=True)
    return [np.asarray(s) for s in exposed(data[None])[len(a.outputs):]]


def b_with_state(keras, b_path, b_site, x, states):
    from surgery.ops.expose import expose_state

    b = keras.saving.load_model(b_path)
    exposed = expose_state(b, layers=[b_site], outputs=False, inputs=True)
    rows = x.shape[0]
    return np.asarray(exposed([x, *[s if s.shape[0] == rows else np.repeat(s, rows, axis=0) for s in states]]))


def test_primed_b_equals_b_with_the_captured_state(seq, tmp_path, keras):
    a, b = FIXTURES / "lstm_sequential.keras", FIXTURES / "lstm_functional.keras"
    out = tmp_path / "primed.keras"
    result = splice(a, b, "prime", data=seq, output=out)
    assert result.verification["ok"]
    assert result.verification["primed_vs_b_with_captured_state_max_abs_diff"] == [0.0]
    assert max(result.verification["capture"]["oracle_max_abs_diff"].values()) < 1e-5
    primed = keras.saving.load_model(out, safe_mode=True)
    assert [t.name for t in primed.inputs] == [t.name for t in keras.saving.load_model(b).inputs]
    x = np.random.default_rng(9).standard_normal((4, 10, 3)).astype("float32")
    x[1, -3:] = 0
    states = captured_state(keras, a, "lstm", np.load(seq))
    assert np.array_equal(np.asarray(primed(x)), b_with_state(keras, b, "encoder_lstm", x, states))
    manifest = json.loads(result.manifest.read_text())
    assert [s["role"] for s in manifest["primed_states"]] == ["h", "c"]
    assert np.allclose(manifest["primed_states"][0]["values"], states[0].reshape(-1))


def test_written_model_is_safe_and_lambda_free(seq, tmp_path):
    out = tmp_path / "primed.keras"
    splice(FIXTURES / "lstm_masking.keras", FIXTURES / "lstm_masking.keras", "prime", data=seq, output=out,
           keep_override=True, verify=False)
    config = json.loads(zipfile.ZipFile(out).read("config.json"))
    assert scan_config(config) == []
    assert "Lambda" not in json.dumps(config)
    classes = {layer["class_name"] for layer in config["config"]["layers"]}
    # NotEqual/Any: the explicit mask edges the engine gives a Sequential model's Masking
    assert classes <= {"InputLayer", "Masking", "NotEqual", "Any", "LSTM", "Dense", "Rescaling", "ReLU", "Reshape",
                       "Dot", "Multiply", "Add"}


def test_override_input_passes_a_state_and_flag_zero_means_primed(seq, tmp_path, keras):
    a, b = FIXTURES / "lstm_masking.keras", FIXTURES / "lstm_nested.keras"
    out = tmp_path / "primed.keras"
    result = splice(a, b, "prime", data=seq, output=out, keep_override=True)
    assert result.verification["override_vs_b_with_passed_state_max_abs_diff"] == [0.0]
    primed = keras.saving.load_model(out)
    names = [t.name for t in primed.inputs]
    original = keras.saving.load_model(b).inputs[0].name
    assert names == [original, "inner__inner_lstm_h_in", "inner__inner_lstm_c_in", "inner__inner_lstm_use_state_in"]
    x = np.random.default_rng(1).standard_normal((2, 10, 3)).astype("float32")
    mine = [np.full((2, 6), 0.25, "float32"), np.full((2, 6), -0.5, "float32")]
    flags = np.array([[1.0], [0.0]], "float32")
    got = np.asarray(primed([x, *mine, flags]))
    states = captured_state(keras, a, "lstm_1", np.load(seq))
    per_row = [np.concatenate([m[:1], s]) for m, s in zip(mine, states)]  # row 0 mine, row 1 primed
    assert np.array_equal(got, b_with_state(keras, b, "inner/inner_lstm", x, per_row))


@pytest.mark.parametrize("store,trainable", [("constant", False), ("variable", True)])
def test_store_decides_whether_the_primed_state_trains(store, trainable, seq, tmp_path, keras):
    out = tmp_path / "primed.keras"
    splice(FIXTURES / "lstm_sequential.keras", FIXTURES / "lstm_functional.keras", "prime", data=seq,
           output=out, store=store, verify=False)
    primed = keras.saving.load_model(out)
    for role in ("h", "c"):
        assert primed.get_layer(f"encoder_lstm_{role}_primed").trainable is trainable


def test_stateful_site_becomes_stateless_and_starts_primed(seq, tmp_path, keras):
    result = splice(FIXTURES / "lstm_masking.keras", FIXTURES / "stateful.keras", "prime", data=seq,
                    output=tmp_path / "p.keras")
    assert result.verification["ok"]
    assert keras.saving.load_model(tmp_path / "p.keras").get_layer("stateful_lstm").stateful is False


def test_convlstm_and_stacked_cells_with_override(tmp_path):
    conv = tmp_path / "conv.npy"
    np.save(conv, np.random.default_rng(0).standard_normal((5, 8, 8, 2)).astype("float32"))
    result = splice(FIXTURES / "convlstm2d.keras", FIXTURES / "convlstm2d.keras", "prime", data=conv,
                    output=tmp_path / "c.keras", keep_override=True)
    assert result.verification["ok"]
    seq = tmp_path / "s.npz"
    np.savez(seq, x=np.random.default_rng(0).standard_normal((1, 10, 3)).astype("float32"))
    result = splice(FIXTURES / "rnn_stacked_cells.keras", FIXTURES / "rnn_stacked_cells.keras", "prime", data=seq,
                    output=tmp_path / "s.keras", keep_override=True)
    assert result.verification["ok"]


def test_data_must_be_one_sequence_of_the_right_shape(tmp_path):
    a, b = FIXTURES / "lstm_sequential.keras", FIXTURES / "lstm_functional.keras"
    many = tmp_path / "many.npy"
    np.save(many, np.zeros((5, 10, 3), "float32"))
    with pytest.raises(UsageError, match="holds 5 sequences"):
        splice(a, b, "prime", data=many, output=tmp_path / "o.keras")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((10, 4), "float32"))
    with pytest.raises(UsageError, match=r"shape \(1, 10, 4\)"):
        splice(a, b, "prime", data=wrong, output=tmp_path / "o.keras")
    with pytest.raises(UsageError, match="needs --data"):
        plan(a, b, "prime")
    assert not (tmp_path / "o.keras").exists()


def test_keras2_b_is_translated_then_primed(seq, tmp_path):
    from surgery.io.quiet import import_keras, quiet

    import_keras()
    with quiet():
        import tf_keras as k2

        inputs = k2.Input((10, 3))
        k2.Model(inputs, k2.layers.Dense(2)(k2.layers.LSTM(8, name="dec")(inputs))).save(tmp_path / "b.h5")
    result = splice(FIXTURES / "lstm_sequential.keras", tmp_path / "b.h5", "prime", data=seq,
                    output=tmp_path / "p.keras")
    assert result.verification["ok"] and "translated from Keras 2" in result.summary
    assert json.loads(result.manifest.read_text())["family"] == "keras3"
