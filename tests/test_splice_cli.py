"""`lstm-surgery splice` as a user runs it: plan first, exit codes, files, clean terminal."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import FIXTURES, ROOT


def cli(*args, cwd=None):
    exe = shutil.which("lstm-surgery")
    command = [exe] if exe else [sys.executable, str(ROOT / "cli.py")]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600,
                          check=False)


def assert_one_line_error(result, code):
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_dry_run_prints_the_plan_writes_nothing_and_never_imports_tensorflow(tmp_path):
    b = tmp_path / "b.keras"
    shutil.copy(FIXTURES / "lstm_functional.keras", b)
    code = (
        "import sys; sys.argv = ['lstm-surgery', 'splice', sys.argv[1], sys.argv[2], '--mode', 'weights', "
        "'--dry-run']\n"
        "import cli\n"
        "try:\n    cli.main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "bad = [m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules]\n"
        "assert not bad, bad\nprint('clean')"
    )
    result = subprocess.run([sys.executable, "-c", code, str(FIXTURES / "lstm_sequential.keras"), str(b)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "A:lstm (LSTM) -> B:encoder_lstm (LSTM)  [by order]" in result.stdout
    assert "kernel: (3, 32) -> (3, 32)" in result.stdout and "dry run: nothing written" in result.stdout
    assert result.stdout.strip().endswith("clean") and result.stderr == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.keras"]


def test_dry_run_json_is_the_plan_only(tmp_path):
    result = cli("splice", FIXTURES / "lstm_sequential.keras", FIXTURES / "lstm_functional.keras", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["dry_run"] is True and payload["plan"]["mode"] == "chain"
    assert payload["plan"]["pairs"][0]["states"][0] == {"from": "lstm_h", "to": "encoder_lstm_h",
                                                        "shape": [None, 8], "source_dtype": "float32",
                                                        "dtype": "float32"}


def test_weights_splice_writes_beside_b_and_reports(tmp_path):
    """--no-verify: the weights fast path alone, which never loads TensorFlow."""
    b = tmp_path / "b.keras"
    shutil.copy(FIXTURES / "lstm_stacked.keras", b)
    a = FIXTURES / "lstm_stacked.keras"
    result = cli("splice", a, b, "--mode", "weights", "--map", "lstm_2=lstm_2", "--no-verify")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("plan (weights)") and "A:lstm_2 (LSTM) -> B:lstm_2 (LSTM)  [by map]" in lines[1]
    assert any(line.startswith(f"wrote {tmp_path / 'b.spliced.keras'}") for line in lines)
    assert "not verified (--no-verify)" in result.stdout
    assert (tmp_path / "b.spliced.keras.manifest.json").exists()
    assert result.stderr == ""


def test_mismatch_exits_2_naming_layers_and_shapes(tmp_path):
    result = cli("splice", FIXTURES / "lstm_sequential.keras", FIXTURES / "lstm_masking.keras", "--mode", "weights",
                 "--map", "lstm=lstm", "-o", tmp_path / "o.keras")
    assert_one_line_error(result, 2)
    assert "A:lstm" in result.stderr and "B:lstm" in result.stderr
    assert "(3, 32)" in result.stderr and "(3, 24)" in result.stderr
    assert not (tmp_path / "o.keras").exists()


def test_unsafe_b_is_refused_with_exit_3(tmp_path):
    result = cli("splice", FIXTURES / "lstm_sequential.keras", FIXTURES / "lambda_unsafe.keras", "--mode", "weights",
                 "-o", tmp_path / "o.keras", "--json")
    assert result.returncode == 3
    assert json.loads(result.stdout)["error_type"] == "UnsafeContentError"


@pytest.mark.slow
def test_prime_json_result(tmp_path):
    data = tmp_path / "seq.npy"
    np.save(data, np.random.default_rng(0).standard_normal((10, 3)).astype("float32"))
    out = tmp_path / "primed.keras"
    result = cli("splice", FIXTURES / "lstm_sequential.keras", FIXTURES / "lstm_functional.keras", "--mode", "prime",
                 "--data", data, "-o", out, "--keep-override", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["ok"] and payload["mode"] == "prime" and payload["verification"]["ok"]
    assert payload["verification"]["primed_vs_b_with_captured_state_max_abs_diff"] == [0.0]
    assert out.exists() and result.stderr == ""
