"""Every command accepts what any command wrote: state I/O already there is reused, never
duplicated (issue 12, item 1)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FIXTURES

import cli
from surgery.io import formats
from surgery.ops import state_io


def run(*args):
    result = CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=False)
    return result


def io_names(path):
    artifact = formats.read_artifact(path)
    cfg = artifact.model_config["config"]
    return [r[0] for r in cfg["input_layers"]], [r[0] for r in cfg["output_layers"]]


@pytest.fixture(scope="module")
def exposed(tmp_path_factory):
    out = tmp_path_factory.mktemp("exposed") / "streaming.exposed.keras"
    result = run("expose-state", FIXTURES / "streaming.keras", "-o", out, "--inputs")
    assert result.exit_code == 0, result.output
    return out


def test_state_io_found_from_the_manifest_and_from_names_alone(exposed, tmp_path):
    artifact = formats.read_artifact(exposed)
    by_manifest = state_io.find_state_io(artifact.model_config, "keras3", state_io.read_manifest(exposed))
    by_names = state_io.find_state_io(artifact.model_config, "keras3")
    assert by_manifest.source == "manifest" and by_names.source == "names"
    assert by_manifest.outputs == by_names.outputs and by_manifest.inputs == by_names.inputs
    assert list(by_names.inputs) == ["lstm_h_in", "lstm_c_in", "lstm_1_h_in", "lstm_1_c_in"]
    stripped = state_io.strip_state_io(artifact.model_config, "keras3", by_names)
    assert [r[0] for r in stripped["config"]["input_layers"]] == ["input_layer"]
    assert [r[0] for r in stripped["config"]["output_layers"]] == ["time_distributed"]
    assert not state_io.find_state_io(stripped, "keras3")


def test_exposing_twice_is_idempotent(exposed, tmp_path):
    again = tmp_path / "again.keras"
    result = run("expose-state", exposed, "-o", again, "--inputs")
    assert result.exit_code == 0, result.output
    assert "already exposed" in result.output
    assert io_names(again) == io_names(exposed)
    a, b = formats.read_artifact(exposed), formats.read_artifact(again)
    assert json.dumps(a.model_config, sort_keys=True) == json.dumps(b.model_config, sort_keys=True)
    # Without --inputs the state inputs it already had are kept, not dropped.
    result = run("expose-state", exposed, "-o", tmp_path / "plain.keras", "--no-verify", "--json")
    payload = json.loads(result.output)
    assert result.exit_code == 0 and payload["already_exposed"] and len(payload["state_inputs"]) == 4


def test_expose_then_stream_reuses_the_state_io(exposed, tmp_path):
    out = tmp_path / "step"
    result = run("stream", exposed, "-o", out)
    assert result.exit_code == 0, result.output
    assert "reused: the input already had 4 state output(s)" in result.output
    manifest = json.loads((tmp_path / "step.manifest.json").read_text())
    assert manifest["model_inputs"] == ["input_layer", "lstm_h_in", "lstm_c_in", "lstm_1_h_in", "lstm_1_c_in"]
    assert manifest["model_outputs"] == ["time_distributed", "lstm_h", "lstm_c", "lstm_1_h", "lstm_1_c"]
    assert manifest["verification"]["ok"]
    # stream output -> inspect: described from its manifest, exit 0.
    result = run("inspect", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["serving"]["operation"] == "stream" and report["state_io"]["inputs"][0] == "lstm_h_in"


def test_expose_then_split_seq2seq(tmp_path):
    exposed = tmp_path / "s2s.exposed.keras"
    assert run("expose-state", FIXTURES / "seq2seq.keras", "-o", exposed, "--inputs").exit_code == 0
    result = run("split-seq2seq", exposed, "-o", tmp_path / "split")
    assert result.exit_code == 0, result.output
    assert "reused:" in result.output and "verified" in result.output
    decoder_inputs, _ = io_names(tmp_path / "split" / "decoder_step.keras")
    assert len(decoder_inputs) == len(set(decoder_inputs))
    # split -> splice: the encoder's final state starts the decoder step model again.
    result = run("splice", tmp_path / "split" / "encoder.keras", tmp_path / "split" / "decoder_step.keras",
                 "--mode", "chain", "-o", tmp_path / "chained.keras")
    assert result.exit_code == 0, result.output
    assert "A:encoder_lstm (LSTM) final state -> initial state of B:decoder_lstm" in result.output


@pytest.mark.parametrize("mode", ["chain", "weights", "prime"])
def test_expose_then_splice(mode, tmp_path):
    a, b = tmp_path / "a.keras", tmp_path / "b.keras"
    assert run("expose-state", FIXTURES / "lstm_sequential.keras", "-o", a, "--inputs").exit_code == 0
    assert run("expose-state", FIXTURES / "lstm_functional.keras", "-o", b, "--inputs").exit_code == 0
    extra = []
    if mode == "prime":
        data = tmp_path / "seq.npy"
        np.save(data, np.random.default_rng(0).standard_normal((10, 3)).astype("float32"))
        extra = ["--data", data]
    out = tmp_path / f"{mode}.keras"
    result = run("splice", a, b, "--mode", mode, "-o", out, *extra)
    assert result.exit_code == 0, result.output
    assert out.exists() and "verified" in result.output
    inputs, outputs = io_names(out)
    assert len(inputs) == len(set(inputs)) and len(outputs) == len(set(outputs))


def test_convert_then_stream_and_keras2_streams_directly(tmp_path):
    source = FIXTURES / "keras2" / "k2_nested.h5"
    converted = tmp_path / "n3.keras"
    assert run("convert", source, "-o", converted).exit_code == 0
    result = run("stream", converted, "-o", tmp_path / "a.step", "--no-verify")
    assert result.exit_code == 0, result.output
    direct = run("stream", source, "-o", tmp_path / "b.step", "--json")
    assert direct.exit_code == 0, direct.output
    payload = json.loads(direct.output)
    assert payload["input_model"]["translated_from_keras2"]
    assert "vs the Keras 2 original" in payload["input_model"]["translation_check"]
    assert payload["verification"]["ok"]
