"""splice --mode chain: one composite model, A's final state starting a recurrent layer of B.

The library checks its own output (composite == A then B, A's states vs the NumPy oracle);
the tests also recompute "run A, take its states, feed them to B" from the two original
files with plain Keras and compare with the written composite.
"""

import json
import shutil

import numpy as np
import pytest
from conftest import FIXTURES

from surgery.errors import NotSupportedError, UsageError
from surgery.ops.splice import plan, splice


def a_then_b(keras, a_path, b_path, a_site, b_site, a_values, b_values):
    """Independent reference: A's layer states via return_state, B rebuilt with initial_state."""
    from surgery.ops.expose import expose_state

    a = keras.saving.load_model(a_path)
    b = keras.saving.load_model(b_path)
    a_exposed = expose_state(a, layers=[a_site], outputs=True)
    states = [np.asarray(s) for s in a_exposed(a_values if len(a_values) > 1 else a_values[0])[len(a.outputs):]]
    b_exposed = expose_state(b, layers=[b_site], outputs=False, inputs=True)
    return b_exposed([*b_values, *states])


@pytest.mark.parametrize("a,b,a_site,b_site", [
    ("lstm_sequential.keras", "lstm_functional.keras", "lstm", "encoder_lstm"),
    ("lstm_masking.keras", "lstm_nested.keras", "lstm_1", "inner/inner_lstm"),
    pytest.param("bidirectional.keras", "bidirectional.keras", "bi1", "bi1", marks=pytest.mark.slow),
    ("convlstm2d.keras", "convlstm2d.keras", "conv_lstm2d", "conv_lstm2d"),
])
def test_composite_equals_a_then_b(a, b, a_site, b_site, tmp_path, keras):
    out = tmp_path / "chain.keras"
    mapping = None if a_site in ("lstm", "lstm_1") else [f"{a_site}={b_site}"]
    result = splice(FIXTURES / a, FIXTURES / b, "chain", mapping, output=out)
    report = result.verification
    assert report["ok"] and all(d == 0.0 for d in report["composite_vs_a_then_b_max_abs_diff"])
    assert max(report["a_state_oracle_max_abs_diff"].values()) <= 1e-5
    composite = keras.saving.load_model(out)
    a_model = keras.saving.load_model(FIXTURES / a)
    b_model = keras.saving.load_model(FIXTURES / b)
    assert len(composite.inputs) == len(a_model.inputs) + len(b_model.inputs)
    rng = np.random.default_rng(5)
    values = [rng.standard_normal((3, *t.shape[1:])).astype("float32") for t in composite.inputs]
    n_a = len(a_model.inputs)
    want = a_then_b(keras, FIXTURES / a, FIXTURES / b, a_site, b_site, values[:n_a], values[n_a:])
    got = composite(values)
    assert np.array_equal(np.asarray(got), np.asarray(want))
    manifest = json.loads(result.manifest.read_text())
    assert manifest["mode"] == "chain" and manifest["splice"]["pairs"][0]["dest_path"] == b_site


def test_default_pairing_and_output_name(tmp_path):
    b = tmp_path / "decoder.keras"
    shutil.copy(FIXTURES / "lstm_functional.keras", b)
    result = splice(FIXTURES / "lstm_sequential.keras", b, verify=False)  # mode defaults to chain
    assert result.mode == "chain"
    assert result.output == tmp_path / "decoder.spliced.keras" and result.output.exists()
    pair = result.plan.pairs[0]
    assert (pair.source.name, pair.dest.name, pair.how) == ("lstm", "encoder_lstm", "default")


def test_state_structure_mismatch_is_clear():
    with pytest.raises(UsageError) as error:
        plan(FIXTURES / "lstm_sequential.keras", FIXTURES / "gru.keras", "chain")
    message = str(error.value)
    assert "A:lstm (LSTM)" in message and "B:gru (GRU)" in message and "different state structure" in message
    assert "h (None, 8), c (None, 8)" in message


def test_units_mismatch_is_clear():
    with pytest.raises(UsageError, match=r"h \(None, 8\).*h \(None, 6\).*units differ"):
        plan(FIXTURES / "lstm_sequential.keras", FIXTURES / "lstm_masking.keras", "chain")


def test_a_site_fed_by_another_layer_cannot_receive():
    with pytest.raises(UsageError, match="already takes its initial state from another layer"):
        plan(FIXTURES / "seq2seq.keras", FIXTURES / "seq2seq.keras", "chain", ["encoder_lstm=decoder_lstm"])


def test_nested_model_called_twice_cannot_be_split(tmp_path, keras):
    inner_in = keras.Input((5, 3))
    inner = keras.Model(inner_in, keras.layers.LSTM(8, name="inner_lstm")(inner_in), name="inner")
    x1, x2 = keras.Input((5, 3), name="x1"), keras.Input((5, 3), name="x2")
    keras.Model([x1, x2], keras.layers.Add()([inner(x1), inner(x2)])).save(tmp_path / "twice.keras")
    with pytest.raises(NotSupportedError, match="nested model"):
        splice(FIXTURES / "lstm_sequential.keras", tmp_path / "twice.keras", "chain",
               ["lstm=inner__inner_lstm"], output=tmp_path / "o.keras")


def test_keras2_a_is_translated_to_chain_into_a_keras3_b(tmp_path, keras):
    from surgery.io.quiet import quiet

    with quiet():
        import tf_keras as k2

        inputs = k2.Input((10, 3))
        k2.Model(inputs, k2.layers.LSTM(8, name="enc")(inputs)).save(tmp_path / "a.h5")
    result = splice(tmp_path / "a.h5", FIXTURES / "lstm_functional.keras", "chain", output=tmp_path / "c.keras")
    assert result.verification["ok"] and "translated from Keras 2" in result.summary
    assert all(d == 0.0 for d in result.verification["composite_vs_a_then_b_max_abs_diff"])
    manifest = json.loads(result.manifest.read_text())
    assert manifest["family"] == "keras3" and manifest["notes"]
