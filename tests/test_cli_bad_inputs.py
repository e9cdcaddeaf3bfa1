"""The bad-input corpus through the real command line: one-line error, documented exit code,
no traceback, no output file left behind, the input unchanged."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from test_formats import MUST_RAISE, UNSUPPORTED, reference_bytes, reference_models, sha256_of  # noqa: F401

CASES = {**{name: (build, 2) for name, build in MUST_RAISE.items()},
         **{name: (build, 4) for name, build in UNSUPPORTED.items()}}


def test_corpus_is_at_least_200_cases():
    assert len(CASES) >= 200


def snapshot(path: Path):
    if path.is_file():
        return sha256_of(path)
    if path.is_dir():
        return sorted((p.name, p.stat().st_size) for p in path.rglob("*"))
    return None


@pytest.mark.parametrize("name", sorted(CASES))
def test_expose_state_and_inspect_refuse_bad_input_cleanly(name, tmp_path, reference_bytes):  # noqa: F811
    build, code = CASES[name]
    source = Path(build(tmp_path, reference_bytes))
    before = snapshot(source)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    runner = CliRunner()
    result = runner.invoke(cli.main, ["expose-state", str(source), "-o", str(out_dir / "model.keras")])
    assert result.exit_code == code, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert result.stdout == ""
    assert list(out_dir.iterdir()) == [], "nothing may be left behind"
    assert snapshot(source) == before
    inspected = runner.invoke(cli.main, ["inspect", str(source), "--json"])
    assert inspected.exit_code == code
    payload = json.loads(inspected.stdout)
    assert payload["ok"] is False and payload["exit_code"] == code
