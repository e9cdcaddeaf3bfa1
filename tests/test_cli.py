"""The real command line, run as a user runs it: exit codes, output files, clean terminal."""

import hashlib
import json
import shutil
import subprocess
import sys

import pytest

from conftest import FIXTURES, ROOT


def cli(*args, cwd=None):
    exe = shutil.which("lstm-surgery")
    command = [exe] if exe else [sys.executable, str(ROOT / "cli.py")]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def assert_one_line_error(result, code):
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_inspect_never_imports_tensorflow():
    code = (
        "import sys; from surgery.ops.inspect import inspect; import cli; "
        f"r = inspect({str(FIXTURES / 'lstm_nested.keras')!r}); "
        f"inspect({str(FIXTURES / 'lstm_sequential.h5')!r}); "
        "assert r['sites'], r; "
        "bad = [m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules]; "
        "assert not bad, bad; print('clean')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == "clean", result.stderr


def test_inspect_json_is_only_json_and_lists_every_call():
    result = cli("inspect", FIXTURES / "lstm_shared.keras", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["schema"] == "lstm-surgery/inspect/v1"
    assert [s["name"] for s in report["sites"]] == ["shared_lstm", "shared_lstm__1"]
    assert report["sites"][0]["states"][0] == {
        "role": "h", "output_name": "shared_lstm_h", "input_name": "shared_lstm_h_in",
        "shape": [None, 6], "dtype": "float32"}
    assert report["sites"][0]["weights"]["kernel"] == [3, 24]


def test_inspect_table_names_sites_and_flags_unsafe_content():
    result = cli("inspect", FIXTURES / "lambda_unsafe.keras")
    assert result.returncode == 0
    assert "lstm" in result.stdout and "lambda" in result.stdout.lower()


def test_expose_state_default_output_beside_input_then_refuses_to_overwrite(tmp_path):
    model = tmp_path / "model.keras"
    shutil.copy(FIXTURES / "lstm_stacked.keras", model)
    before = sha256(model)
    first = cli("expose-state", model)
    assert first.returncode == 0, first.stderr
    assert first.stderr == "", "no log spam on the terminal"
    assert (tmp_path / "model.exposed.keras").exists()
    assert (tmp_path / "model.exposed.keras.manifest.json").exists()
    assert "verified" in first.stdout and "lstm_2_c" in first.stdout
    assert sha256(model) == before
    again = cli("expose-state", model)
    assert_one_line_error(again, 2)
    assert "--force" in again.stderr
    onto_input = cli("expose-state", model, "-o", model, "--force")
    assert_one_line_error(onto_input, 2)
    assert sha256(model) == before


def test_expose_state_json_to_savedmodel(tmp_path):
    result = cli("expose-state", FIXTURES / "gru.keras", "-o", tmp_path / "gru_sm", "--inputs", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["ok"] and payload["format"] == "savedmodel"
    assert [s["name"] for s in payload["state_outputs"]] == ["gru_h"]
    assert [s["name"] for s in payload["state_inputs"]] == ["gru_h_in"]
    assert payload["verification"]["ok"]
    assert (tmp_path / "gru_sm" / "saved_model.pb").exists()


def test_lambda_is_refused_with_exit_3_and_nothing_written(tmp_path):
    out = tmp_path / "x.keras"
    result = cli("expose-state", FIXTURES / "lambda_unsafe.keras", "-o", out)
    assert_one_line_error(result, 3)
    assert "--unsafe" in result.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_subclassed_model_is_not_supported_exit_4(tmp_path):
    result = cli("expose-state", FIXTURES / "subclassed.keras", "-o", tmp_path / "x.keras",
                 "--custom-objects", ROOT / "fixtures" / "custom_layers.py")
    assert_one_line_error(result, 4)
    assert "subclassed" in result.stderr


def test_unreadable_input_exit_2(tmp_path):
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"PK\x03\x04 this is not a zip")
    result = cli("expose-state", garbage, "-o", tmp_path / "y.keras")
    assert_one_line_error(result, 2)
    missing = cli("inspect", tmp_path / "missing.keras", "--json")
    assert missing.returncode == 2
    assert json.loads(missing.stdout)["exit_code"] == 2


def test_verify_command_passes_then_catches_tampered_weights(tmp_path, keras):
    rebuilt = tmp_path / "r.keras"
    assert cli("expose-state", FIXTURES / "simple_rnn.keras", "-o", rebuilt, "--no-verify").returncode == 0
    ok = cli("verify", FIXTURES / "simple_rnn.keras", rebuilt)
    assert ok.returncode == 0 and "verified" in ok.stdout, ok.stderr
    model = keras.saving.load_model(rebuilt)
    layer = model.get_layer("simple_rnn")
    weights = layer.get_weights()
    weights[1] = weights[1] * 1.001
    layer.set_weights(weights)
    tampered = tmp_path / "tampered.keras"
    model.save(tampered)
    bad = cli("verify", FIXTURES / "simple_rnn.keras", tampered, "--json")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["ok"] is False


def test_usage_error_for_unknown_layer(tmp_path):
    result = cli("expose-state", FIXTURES / "gru.keras", "-o", tmp_path / "z.keras", "--layer", "nope")
    assert_one_line_error(result, 2)
    assert "'nope'" in result.stderr
