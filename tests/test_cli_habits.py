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
from surgery.io import saving
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


def test_several_models_and_globs_one_json_line_each_exit_the_highest(tmp_path):
    result = run_cli("inspect", FIXTURES / "gru.keras", str(FIXTURES / "lstm_s*.keras"),
                     FIXTURES / "subclassed.keras", tmp_path / "missing.keras", "--json")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    inputs = [line["input"] for line in lines]
    assert inputs[0].endswith("gru.keras") and inputs[-1].endswith("missing.keras")
    assert any(i.endswith("lstm_stacked.keras") for i in inputs) and any(i.endswith("lstm_shared.keras") for i in inputs)
    assert lines[-1]["ok"] is False and lines[-1]["exit_code"] == 2
    assert result.returncode == 4, result.stderr  # the highest: one unsupported model
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.keras'}: no such file or directory"]
    nothing = run_cli("inspect", str(tmp_path / "*.keras"))
    assert nothing.returncode == 2 and "no file matches" in nothing.stderr


def test_expose_several_models_into_a_directory(tmp_path):
    out = tmp_path / "exposed"
    result = run_cli("expose-state", FIXTURES / "gru.keras", FIXTURES / "lstm_stacked.keras", "-o", out,
                     "--no-verify", "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(line["output"]).name for line in lines] == ["gru.exposed.keras", "lstm_stacked.exposed.keras"]
    assert all((out / name).is_file() for name in ("gru.exposed.keras", "lstm_stacked.exposed.keras"))
    clash = run_cli("expose-state", FIXTURES / "gru.keras", FIXTURES / "gru.keras", tmp_path / "x" / "gru.keras",
                    "-o", out)
    assert clash.returncode == 2 and "would both be written" in clash.stderr


PER_STEP_LAYER = '''
import keras


@keras.saving.register_keras_serializable(package="habits")
class StepScale(keras.layers.Layer):
    """x * w + b on each timestep: per-timestep, but streaming cannot know that."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="random_normal", name="w")
        self.b = self.add_weight(shape=(input_shape[-1],), initializer="random_normal", name="b")

    def call(self, x):
        return x * self.w + self.b
'''


def test_stream_per_step_declares_a_custom_layer(tmp_path, keras):
    import runpy

    layers_file = tmp_path / "layers.py"
    layers_file.write_text(PER_STEP_LAYER)
    StepScale = runpy.run_path(str(layers_file))["StepScale"]
    inputs = keras.Input((12, 3))
    x = StepScale(name="scale")(inputs)
    x = keras.layers.LSTM(5, return_sequences=True, name="lstm")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    source = tmp_path / "custom.keras"
    model.save(source)
    refused = run_cli("stream", source, "--custom-objects", layers_file, "--no-verify")
    assert refused.returncode == 4 and "--per-step StepScale" in refused.stderr, refused.stderr
    unknown = run_cli("stream", source, "--custom-objects", layers_file, "--per-step", "Nope", "--no-verify")
    assert unknown.returncode == 2 and "'Nope'" in unknown.stderr, unknown.stderr
    result = run_cli("stream", source, "--custom-objects", layers_file, "--per-step", "StepScale", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verification"]["ok"] is True  # declared, and still checked step by step
    manifest = saving.manifest_path(tmp_path / "custom.step").read_text()
    assert '"declared_per_step": [\n' in manifest or '"declared_per_step": ["StepScale"]' in manifest
