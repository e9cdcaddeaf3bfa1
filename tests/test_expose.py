"""expose-state on real files and live models, checked bit-exactly and against the NumPy oracle."""

import hashlib
import json
import zipfile

import numpy as np
import pytest

from conftest import FIXTURES, catalog_files, flip_stored_byte, is_rewirable
from surgery.ops.expose import expose_state, expose_state_file, rebuild_with_states
from surgery.graph.sites import find_sites
from surgery.check.verify import random_inputs, verify

REWIRABLE = catalog_files(is_rewirable)


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def member_sha256(path, member):
    with zipfile.ZipFile(path) as archive:
        return hashlib.sha256(archive.read(member)).hexdigest()


@pytest.mark.parametrize("name", REWIRABLE)
def test_file_surgery_is_verified_and_keeps_weights_byte_identical(name, tmp_path):
    source = FIXTURES / name
    before = sha256(source)
    out = tmp_path / f"out_{name}"
    result = expose_state_file(source, out, inputs=True)
    assert sha256(source) == before, "the input file must never change"
    assert result.fast_path
    assert member_sha256(out, "model.weights.h5") == member_sha256(source, "model.weights.h5")
    report = result.report
    assert report.outputs_identical and report.output_diffs and max(report.output_diffs) == 0.0
    assert set(report.state_errors) == {s.name for s in result.plan.outputs}
    for state in result.plan.outputs:
        assert report.checks[state.name].ok, report.checks[state.name].describe(state.name)
    manifest = json.loads(result.manifest.read_text())
    assert [s["name"] for s in manifest["state_outputs"]] == [s.name for s in result.plan.outputs]
    assert [s["name"] for s in manifest["state_inputs"]] == [s.name for s in result.plan.inputs]
    assert manifest["source"]["sha256"] == before
    assert manifest["verification"]["ok"] is True


def test_float32_states_match_the_oracle_within_1e_5(tmp_path):
    result = expose_state_file(FIXTURES / "lstm_stacked.keras", tmp_path / "s.keras", inputs=True)
    bounds = result.report.tolerances
    assert bounds and {(b.atol, b.rtol, b.dtype) for b in bounds.values()} == {(1e-5, 1e-5, "float32")}
    assert max(result.report.state_errors.values()) <= 1e-5


def test_live_api_returns_a_new_model_and_leaves_the_input_alone(keras):
    model = keras.saving.load_model(FIXTURES / "lstm_nested.keras")
    weights_before = [w.copy() for w in model.get_weights()]
    outputs_before = len(model.outputs)
    exposed = expose_state(model, inputs=True)
    assert exposed is not model
    assert len(model.outputs) == outputs_before
    assert all(np.array_equal(a, b) for a, b in zip(weights_before, model.get_weights()))
    assert exposed.output_names[outputs_before:] == [
        "inner__inner_lstm_h", "inner__inner_lstm_c", "outer_lstm_h", "outer_lstm_c"]
    assert [t.name for t in exposed.inputs][1:] == [
        "inner__inner_lstm_h_in", "inner__inner_lstm_c_in", "outer_lstm_h_in", "outer_lstm_c_in"]


@pytest.mark.parametrize("name", ["lstm_masking.keras", "bidirectional.keras", "rnn_stacked_cells.keras",
                                  "lstm_shared.keras", "convlstm1d.keras", "mixed_precision.keras"])
def test_live_api_round_trip_matches_oracle(keras, name):
    model = keras.saving.load_model(FIXTURES / name)
    rebuilt, plan = rebuild_with_states(model, inputs=True)
    sites = find_sites(keras.saving.serialize_keras_object(rebuilt))
    report = verify(model, rebuilt, plan, sites)
    assert report.ok, report.summary()


def test_zero_initial_states_reproduce_outputs_and_nonzero_states_change_them(keras):
    model = keras.saving.load_model(FIXTURES / "lstm_embedding_mask.keras")
    rebuilt, plan = rebuild_with_states(model, inputs=True)
    x = random_inputs(model, batch=3)
    zeros = [np.zeros((3, *s.shape), "float32") for s in plan.inputs]
    ones = [np.ones((3, *s.shape), "float32") for s in plan.inputs]
    base = np.asarray(model(x[0]))
    assert np.array_equal(np.asarray(rebuilt(x + zeros)[0]), base)
    assert not np.allclose(np.asarray(rebuilt(x + ones)[0]), base)


def test_selected_layer_only(tmp_path):
    result = expose_state_file(FIXTURES / "multi_io.keras", tmp_path / "m.keras", layers=["aux_gru"])
    assert [s.name for s in result.plan.outputs] == ["aux_gru_h"]
    assert result.report.ok


def test_h5_output_and_h5_input(tmp_path):
    from_h5 = expose_state_file(FIXTURES / "lstm_sequential.h5", tmp_path / "a.h5")
    assert from_h5.fast_path and from_h5.report.ok
    to_h5 = expose_state_file(FIXTURES / "gru.keras", tmp_path / "b.h5")
    assert not to_h5.fast_path and to_h5.report.ok and to_h5.format == "h5"


def test_savedmodel_output_has_signature_keys_named_by_state(keras, tmp_path):
    import tensorflow as tf

    result = expose_state_file(FIXTURES / "lstm_functional.keras", tmp_path / "sm", inputs=True)
    assert result.format == "savedmodel" and result.report.ok
    signature = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    assert set(signature.structured_input_signature[1]) == {"x", "encoder_lstm_h_in", "encoder_lstm_c_in"}
    assert {"encoder_lstm_h", "encoder_lstm_c"} <= set(signature.structured_outputs)


@pytest.mark.parametrize("verify_it", [False, True])
def test_corrupt_weights_member_fails_and_writes_nothing(tmp_path, verify_it):
    """A flipped weight byte: the one read that hashes the source checks the member's CRC,
    so neither the copy nor the verified run writes anything."""
    import shutil

    from surgery.errors import UnreadableModelError

    source = tmp_path / "model.keras"
    shutil.copy(FIXTURES / "lstm_stacked.keras", source)
    flip_stored_byte(source, "layers/dense/vars/0")
    out = tmp_path / "out.keras"
    with pytest.raises(UnreadableModelError, match="corrupt"):
        expose_state_file(source, out, verify=verify_it)
    assert not out.exists() and not list(tmp_path.glob(".out.keras*"))


@pytest.mark.parametrize("source,name,fmt,kind", [
    ("lstm_sequential.keras", "exposed", "h5", "hdf5"),      # Keras 3 saving picks HDF5 by the name
    ("lstm_sequential.h5", "exposed.bin", "keras", "zip"),
    ("lstm_sequential.keras", "exposed.h5", "keras", "zip"),  # the format wins over the name
])
def test_format_wins_over_an_output_name_without_its_extension(tmp_path, source, name, fmt, kind):
    """`-o exposed --format h5` was an internal error (exit 5): Keras saves by the file's
    extension, and the staged temporary carried the output's (none)."""
    import h5py

    from surgery.io.formats import read_artifact

    output = tmp_path / name
    result = expose_state_file(FIXTURES / source, output, fmt=fmt)
    assert result.report.ok and result.report.checks
    assert (h5py.is_hdf5(output) if kind == "hdf5" else zipfile.is_zipfile(output))
    assert read_artifact(output).format == ("h5" if kind == "hdf5" else "keras")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, name + ".manifest.json"])


@pytest.mark.parametrize("name,fmt", [("exposed.keras", None), ("exposed", "savedmodel")])
def test_cudnn_layers_of_a_keras2_model_are_written_as_hdf5_or_translated(tmp_path, name, fmt):
    """tf_keras rebuilds CuDNNLSTM only through its HDF5 loader: any other format was an
    internal error (exit 5); now a one-line refusal naming the two ways that work."""
    from surgery.errors import NotSupportedError

    source = FIXTURES / "keras2" / "k2_cudnn_lstm.h5"
    with pytest.raises(NotSupportedError, match=r"CuDNNLSTM layers as '(keras|savedmodel)': write it as HDF5 "
                                                r"\(-o NAME.h5\), or translate the model with --to keras3"):
        expose_state_file(source, tmp_path / name, fmt=fmt)
    assert list(tmp_path.iterdir()) == []
    assert expose_state_file(source, tmp_path / "exposed.h5").report.ok
    assert expose_state_file(source, tmp_path / "k3.keras", to="keras3").report.ok
