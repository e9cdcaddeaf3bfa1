"""Import discipline: a command pays only for what it uses (issue 11).

Each case runs in a fresh interpreter and asserts on its sys.modules, never on timings:
`import surgery` and `import cli` import no NumPy, HDF5 or TensorFlow; `inspect` reads a
model without TensorFlow or Keras; a Keras 3 file never brings tf_keras (nor the
optimization toolkit), while a Keras 2 file does, which shows the check can fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "models"

HEAVY = ("numpy", "h5py", "scipy", "tensorflow", "keras", "tf_keras", "tensorflow_model_optimization")
TENSORFLOW = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization")


def imported_after(code: str) -> set[str]:
    """Top-level packages (and surgery modules) in sys.modules after `code` ran in a fresh
    interpreter with this checkout first on the path, the CLI working in-process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "LSTM_SURGERY_SANDBOX": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    # Set in this process by the Keras 2 fixture builder: TensorFlow itself would then bring
    # tf_keras in as tf.keras, whatever the command does.
    env.pop("TF_USE_LEGACY_KERAS", None)
    script = code + textwrap.dedent("""
        import json as _json, sys as _sys
        _names = {name.split(".")[0] for name in _sys.modules}
        _names |= {name for name in _sys.modules if name.startswith("surgery.")}
        print("MODULES=" + _json.dumps(sorted(_names)))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    line = [text for text in result.stdout.splitlines() if text.startswith("MODULES=")][-1]
    return set(json.loads(line[len("MODULES="):]))


def run_cli(*args: str) -> str:
    """Python that runs one CLI command in-process and fails unless it exits 0."""
    return textwrap.dedent(f"""
        import sys
        sys.argv = ["cli.py", *{list(args)!r}]
        import cli
        try:
            cli.entry()
        except SystemExit as end:
            assert not end.code, f"exit {{end.code}}"
    """)


@pytest.mark.parametrize("module", ["surgery", "cli"])
def test_importing_the_package_or_the_cli_is_light(module):
    heavy = imported_after(f"import {module}") & set(HEAVY)
    assert not heavy, f"import {module} imported {sorted(heavy)}"


def test_inspect_reads_a_keras_file_without_tensorflow():
    modules = imported_after(run_cli("inspect", str(FIXTURES / "lstm_stacked.keras"), "--json"))
    assert not modules & set(TENSORFLOW), sorted(modules & set(TENSORFLOW))
    # The protobuf decoder is for SavedModel directories only.
    assert "surgery.io.formats.savedmodel" not in modules
    assert "surgery.ops.inspect" in modules  # the command did run here


def test_inspect_of_a_savedmodel_still_loads_its_decoder_without_tensorflow():
    modules = imported_after(run_cli("inspect", str(FIXTURES / "keras2" / "k2_savedmodel"), "--json"))
    assert "surgery.io.formats.savedmodel" in modules
    assert not modules & set(TENSORFLOW), sorted(modules & set(TENSORFLOW))


def test_expose_state_without_verification_loads_no_model(tmp_path):
    """A config-only rewrite: Keras comes in only when an operation loads a model."""
    modules = imported_after(run_cli("expose-state", str(FIXTURES / "lstm_masking.keras"),
                                     "-o", str(tmp_path / "out.keras"), "--no-verify"))
    assert (tmp_path / "out.keras").is_file()
    assert not modules & set(TENSORFLOW), sorted(modules & set(TENSORFLOW))


def test_expose_state_of_a_keras3_file_never_imports_tf_keras(tmp_path):
    modules = imported_after(run_cli("expose-state", str(FIXTURES / "lstm_masking.keras"),
                                     "-o", str(tmp_path / "out.keras")))
    assert {"tensorflow", "keras"} <= modules  # it loaded and verified the model
    assert "tf_keras" not in modules
    assert "tensorflow_model_optimization" not in modules


def test_expose_state_of_a_keras2_file_imports_tf_keras(tmp_path):
    modules = imported_after(run_cli("expose-state", str(FIXTURES / "keras2" / "k2_sequential.h5"),
                                     "-o", str(tmp_path / "out.h5")))
    assert "tf_keras" in modules
