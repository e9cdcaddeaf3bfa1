"""One Python API (issue 12, item 2): paths or live models, new objects, inputs untouched,
__all__ exact, help() lists every function, docs/API.md examples run; `diff` is static."""

import json
import re
import subprocess
import sys
import types

import numpy as np
import pytest
from conftest import FIXTURES, ROOT

import surgery


def test_all_is_exactly_what_exists():
    for name in surgery.__all__:
        assert getattr(surgery, name) is not None, name
    public = {name for name, value in vars(surgery).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert public - set(surgery.__all__) == set(), public - set(surgery.__all__)
    assert "save_model" not in surgery.__all__ and "save" in surgery.__all__


def test_help_lists_every_function_with_its_one_line_doc():
    text = surgery.__doc__
    for name in surgery.api.PUBLIC_FUNCTIONS:
        function = getattr(surgery, name)
        assert callable(function) and function.__doc__, name
        assert f"    {name}(" in text and function.__doc__.strip().splitlines()[0] in text
        assert function.__annotations__, f"{name} has no type hints"


def test_functions_win_over_same_named_submodules():
    import surgery.ops.inspect  # noqa: F401 - must not rebind the package attribute
    import surgery.check.verify  # noqa: F401

    assert callable(surgery.inspect) and callable(surgery.verify) and callable(surgery.splice)


def snapshot(model):
    from surgery.io import families

    family = families.of_model(model)
    return json.dumps(family.serialize(model), sort_keys=True, default=str), [w.copy() for w in model.get_weights()]


def assert_unchanged(model, before):
    config, weights = snapshot(model)
    assert config == before[0]
    assert len(weights) == len(before[1]) and all(np.array_equal(a, b) for a, b in zip(weights, before[1]))


@pytest.fixture(scope="module")
def stacked():
    return surgery.load_model(FIXTURES / "lstm_stacked.keras")


def test_path_or_model_and_the_input_is_never_modified(stacked):
    before = snapshot(stacked)
    from_path = surgery.expose_state(FIXTURES / "lstm_stacked.keras", inputs=True)
    from_model = surgery.expose_state(stacked, inputs=True)
    assert [t.name for t in from_path.inputs] == [t.name for t in from_model.inputs]
    assert surgery.inspect(stacked)["sites"][0]["name"] == surgery.inspect(FIXTURES / "lstm_stacked.keras")["sites"][0]["name"]
    assert len(surgery.find_sites(stacked)) == 3
    step = surgery.to_step_model(stacked, steps=2)
    assert step is not stacked
    assert surgery.verify(stacked, from_model).ok
    assert_unchanged(stacked, before)


def test_splice_and_split_take_live_models_and_leave_them_alone():
    a = surgery.load_model(FIXTURES / "lstm_sequential.keras")
    b = surgery.load_model(FIXTURES / "lstm_functional.keras")
    s2s = surgery.load_model(FIXTURES / "seq2seq.keras")
    snapshots = [snapshot(m) for m in (a, b, s2s)]
    chained = surgery.splice(a, b, mode="chain")
    encoder, decoder = surgery.split_seq2seq(s2s)
    assert chained is not b and encoder is not s2s and decoder is not s2s
    for model, before in zip((a, b, s2s), snapshots):
        assert_unchanged(model, before)


def test_save_is_atomic_and_writes_the_manifest(stacked, tmp_path):
    out = tmp_path / "x.keras"
    manifest = surgery.save(surgery.expose_state(stacked), out)
    data = json.loads(manifest.read_text())
    assert out.exists() and data["operation"] == "save"
    assert [s["name"] for s in data["state_outputs"]][:2] == ["lstm_h", "lstm_c"]
    with pytest.raises(surgery.UsageError, match="exists"):
        surgery.save(stacked, out)
    assert not [p for p in tmp_path.iterdir() if "lstm-surgery-tmp" in p.name]


def api_examples():
    text = (ROOT / "docs" / "API.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.parametrize("index", range(len(api_examples())))
def test_docs_api_examples_run(index, monkeypatch):
    monkeypatch.chdir(ROOT)
    exec(compile(api_examples()[index], f"docs/API.md example {index}", "exec"), {})


def test_diff_is_static_and_reports_io_layers_and_weights(tmp_path):
    exposed = tmp_path / "e.keras"
    surgery.save(surgery.expose_state(FIXTURES / "lstm_stacked.keras", inputs=True), exposed)
    code = ("import sys, json\nfrom surgery.check.diff import diff\n"
            f"r = diff({str(FIXTURES / 'lstm_stacked.keras')!r}, {str(exposed)!r})\n"
            "assert not [m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules]\n"
            "print(json.dumps(r))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["inputs"]["added"][:2] == ["lstm_h_in", "lstm_c_in"] and report["outputs"]["added"][0] == "lstm_h"
    assert report["layers"]["changed"]["lstm_2"] == ["return_state"] or "lstm_2" in report["layers"]["changed"]
    assert report["weights"]["changed"] == [] and report["weights"]["identical"]
    assert not report["identical"]


def test_diff_cli_table_json_and_exit_status(tmp_path):
    from click.testing import CliRunner

    import cli

    same = CliRunner().invoke(cli.main, ["diff", str(FIXTURES / "gru.keras"), str(FIXTURES / "gru.keras")])
    assert same.exit_code == 0 and same.output.strip().endswith("identical")
    other = CliRunner().invoke(cli.main, ["diff", str(FIXTURES / "lstm_sequential.keras"),
                                          str(FIXTURES / "lstm_functional.keras"), "--json"])
    assert other.exit_code == 1 and json.loads(other.output)["layers"]["added"]
    assert "Examples:" in CliRunner().invoke(cli.main, ["diff", "--help"]).output


def test_verify_on_unrelated_models_says_what_differs_in_one_line():
    from click.testing import CliRunner

    import cli

    result = CliRunner().invoke(cli.main, ["verify", str(FIXTURES / "gru.keras"), str(FIXTURES / "lstm_stacked.keras")])
    assert result.exit_code == 1
    line = result.stderr.strip() if hasattr(result, "stderr") else result.output.strip()
    assert "\n" not in line and "differ in structure" in line and "gru" in line and len(line) < 300


def test_inspect_exits_4_on_an_unsupported_model():
    from click.testing import CliRunner

    import cli

    result = CliRunner().invoke(cli.main, ["inspect", str(FIXTURES / "lstm_sequential.weights.h5")])
    assert result.exit_code == 4, result.output
