"""CLI habits: progress on stderr, the one -o rule, examples in every --help, shell completion."""

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import cli
from surgery import saving
from surgery.errors import UsageError
from surgery.progress import Progress, resolve_mode

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "models"


def run_cli(*args, env=None):
    command = [sys.executable, str(ROOT / "cli.py"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, **(env or {})})


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_resolve_mode():
    assert resolve_mode(None, False, {}) == "on"
    assert resolve_mode(None, True, {}) == "off"  # auto is silent with --json
    assert resolve_mode(True, True, {}) == "on"
    assert resolve_mode(False, False, {}) == "off"
    assert resolve_mode(None, False, {"LSTM_SURGERY_PROGRESS": "0"}) == "off"
    assert resolve_mode(None, True, {"LSTM_SURGERY_PROGRESS": "1"}) == "on"
    with pytest.raises(UsageError, match="'sometimes'"):
        resolve_mode(None, False, {"LSTM_SURGERY_PROGRESS": "sometimes"})


def test_piped_progress_is_one_line_per_tick_with_stage_and_seconds():
    clock, out = FakeClock(), io.StringIO()
    progress = Progress("on", out, terminal=False, every_s=3600, clock=clock)
    progress("loading the model")
    clock.now += 12.4
    progress.tick()
    progress("verifying")
    clock.now += 5
    progress.tick()
    progress.close()
    assert out.getvalue() == "  … loading the model (12 s)\n  … verifying (17 s)\n"


def test_terminal_bar_waits_a_second_redraws_in_place_and_clears():
    clock, out = FakeClock(), io.StringIO()
    progress = Progress("on", out, terminal=True, every_s=3600, clock=clock)
    progress("loading")
    clock.now += 0.5
    progress.tick()
    assert out.getvalue() == ""  # short work shows nothing
    clock.now += 2
    progress.tick()
    assert out.getvalue().startswith("\r  … loading [") and "\n" not in out.getvalue()
    count = progress.counter("extracting", "sequences")
    count(50, 100, 1.0)
    progress.tick()
    assert "[##########..........] 50/100 sequences" in out.getvalue()
    progress.close()
    assert out.getvalue().endswith("\r") and out.getvalue().rstrip("\r ").count("\n") == 0


def test_the_thread_draws_periodically_and_off_draws_nothing():
    out = io.StringIO()
    with Progress("on", out, terminal=False, every_s=0.05) as progress:
        progress("working")
        time.sleep(0.4)
    assert out.getvalue().count("  … working (") >= 2
    quiet = io.StringIO()
    with Progress("off", quiet, terminal=False, every_s=0.01) as progress:
        progress("working")
        time.sleep(0.1)
    assert quiet.getvalue() == ""


def test_every_command_has_progress_and_ends_its_help_with_examples():
    names = sorted(cli.main.commands)
    assert {"inspect", "expose-state", "verify", "stream", "split-seq2seq", "splice", "convert",
            "extract-states", "diff"} <= set(names)
    for name in [None, *names]:
        result = CliRunner().invoke(cli.main, [name, "--help"] if name else ["--help"])
        assert result.exit_code == 0, result.output
        tail = result.output.rstrip().split("Options:")[-1].split("Commands:")[-1]
        assert "Examples:" in tail and "lstm-surgery" in tail.split("Examples:")[-1], name
        if name:
            assert "--progress / --no-progress" in result.output, name
    assert "init<-graph" in CliRunner().invoke(cli.main, ["inspect", "--help"]).output


def test_json_is_silent_on_stderr_and_progress_shows_when_asked(tmp_path):
    result = run_cli("inspect", FIXTURES / "lstm_stacked.keras", "--json", env={"LSTM_SURGERY_PROGRESS": "auto"})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    json.loads(result.stdout)


def test_a_missing_output_directory_is_created_by_the_one_rule(tmp_path):
    target = tmp_path / "new" / "deeper" / "m.keras"
    assert saving.check_output(FIXTURES / "gru.keras", target, False) == target
    assert target.parent.is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="cannot create the output directory"):
        saving.check_output(FIXTURES / "gru.keras", blocker / "sub" / "m.keras", False)


def test_expose_into_a_missing_directory_and_stream_needs_no_output(tmp_path):
    out = tmp_path / "a" / "b" / "x.keras"
    result = run_cli("expose-state", FIXTURES / "lstm_stacked.keras", "-o", out, "--no-verify")
    assert result.returncode == 0, result.stderr
    assert out.is_file() and saving.manifest_path(out).is_file()
    # stream's default: <stem>.step beside the input
    source = tmp_path / "s.keras"
    source.write_bytes((FIXTURES / "streaming.keras").read_bytes())
    result = run_cli("stream", source, "--no-verify", "--json")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "s.step" / "saved_model.pb").is_file()


def test_shell_completion_script_is_produced():
    exe = Path(sys.executable).with_name("lstm-surgery")  # the console script click names it after
    command = [str(exe)] if exe.exists() else \
        [sys.executable, "-c", "import cli; cli.main(prog_name='lstm-surgery')"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "_LSTM_SURGERY_COMPLETE": "bash_source"})
    assert result.returncode == 0, result.stderr
    assert "complete -o nosort -F" in result.stdout and "_LSTM_SURGERY_COMPLETE=bash_complete" in result.stdout
