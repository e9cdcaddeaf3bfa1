"""Each CLI command runs in a supervised child process: limits on wall time, memory and
open files end runaway work with one line; SIGTERM/SIGHUP/SIGKILL leave nothing behind;
a bug in the tool is exit 5, distinct from bad input."""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from conftest import FIXTURES, ROOT

MODEL = FIXTURES / "lstm_masking.keras"


def cli_env(tmp_path: Path, **extra) -> dict:
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(scratch), **extra}
    env.pop("LSTM_SURGERY_SANDBOX", None)
    return env


def run_cli(tmp_path, *args, **extra):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=600, env=cli_env(tmp_path, **extra))


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(predicate, timeout=300.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# A trusted --custom-objects file: a custom layer that can be told (by environment) to hang
# in build, to crash the process, or to report the limits it runs under.
CUSTOM = '''
import json, os, resource, signal, time
import keras

if os.environ.get("PROBE_LIMITS"):
    with open(os.environ["PROBE_LIMITS"], "w") as out:
        json.dump({"nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                   "as": resource.getrlimit(resource.RLIMIT_AS)[0],
                   "group_leader": os.getpgid(0) == os.getpid()}, out)
if os.environ.get("CRASH_ON_IMPORT"):
    os.kill(os.getpid(), signal.SIGSEGV)


@keras.saving.register_keras_serializable(package="supervision")
class SlowIdentity(keras.layers.Layer):
    def build(self, input_shape):
        flag = os.environ.get("HANG_IN_BUILD")
        if flag:
            open(flag, "w").close()
            time.sleep(120)

    def call(self, x):
        return x
'''


@pytest.fixture(scope="module")
def custom_model(tmp_path_factory, keras):
    directory = tmp_path_factory.mktemp("supervision")
    objects = directory / "custom_layers.py"
    objects.write_text(CUSTOM)
    namespace = {}
    exec(compile(CUSTOM, str(objects), "exec"), namespace)
    inputs = keras.Input((4, 3))
    hidden = namespace["SlowIdentity"]()(inputs)
    outputs = keras.layers.LSTM(5, name="lstm")(hidden)
    path = directory / "custom.keras"
    keras.Model(inputs, outputs).save(path)
    return path, objects


def start_hanging_run(tmp_path, custom_model, *extra):
    path, objects = custom_model
    flag = tmp_path / "in_build.flag"
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "expose-state", str(path), "-o", str(out / "m.keras"),
         "--custom-objects", str(objects), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=cli_env(tmp_path, HANG_IN_BUILD=str(flag)))
    # The worker is inside Keras' load: a temporary output and a private copy exist now.
    if not wait_for(lambda: flag.exists() or process.poll() is not None) or not flag.exists():
        process.kill()
        raise AssertionError(f"the worker never reached the custom layer's build: {process.communicate()}")
    return process, out


def test_wall_time_limit_stops_a_hanging_load(tmp_path, custom_model):
    process, out = start_hanging_run(tmp_path, custom_model, "--timeout", "15")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert "wall-time limit" in one_error_line(stderr)
    assert leftovers(out) == []
    assert leftovers(tmp_path / "scratch") == []


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_termination_signals_clean_up_like_ctrl_c(tmp_path, custom_model, signum, code):
    process, out = start_hanging_run(tmp_path, custom_model)
    workers = children_of(process.pid)
    assert workers, "the command did not run in a child process"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code
    one_error_line(stderr)
    assert leftovers(out) == []
    assert leftovers(tmp_path / "scratch") == []
    assert not any(alive(pid) for pid in workers)


def test_worker_dies_with_a_killed_parent(tmp_path, custom_model):
    process, _ = start_hanging_run(tmp_path, custom_model)
    workers = children_of(process.pid)
    assert workers
    process.kill()
    process.wait(timeout=60)
    assert wait_for(lambda: not any(alive(pid) for pid in workers), timeout=30)


def test_memory_limit_turns_a_runaway_allocation_into_one_line(tmp_path, keras):
    # A config that makes the loader allocate 8 GB (an Embedding's initializer), no weights:
    # under a 6 GB limit the allocation fails inside the worker instead of the OOM killer.
    path = tmp_path / "huge.keras"
    config = {"module": "keras", "class_name": "Sequential", "registered_name": None, "config": {
        "name": "huge", "trainable": True, "layers": [
            {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
             "config": {"batch_shape": [None, 3], "dtype": "int32", "name": "ids"}},
            {"module": "keras.layers", "class_name": "Embedding", "registered_name": None,
             "config": {"name": "embed", "input_dim": 2_000_000, "output_dim": 1000}},
            {"module": "keras.layers", "class_name": "LSTM", "registered_name": None,
             "config": {"name": "lstm", "units": 2}}]},
        "build_config": {"input_shape": [None, 3]}}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": keras.__version__}))
        archive.writestr("config.json", json.dumps(config))
    out = tmp_path / "out"
    out.mkdir()
    started = time.monotonic()
    result = run_cli(tmp_path, "expose-state", path, "-o", out / "m.keras", "--max-memory", "6G")
    assert result.returncode == 2, result.stderr
    one_error_line(result.stderr)
    assert leftovers(out) == []
    assert time.monotonic() - started < 300


def test_limits_really_apply_in_the_worker(tmp_path, custom_model):
    path, objects = custom_model
    probe = tmp_path / "limits.json"
    result = run_cli(tmp_path, "expose-state", path, "-o", tmp_path / "m.keras", "--custom-objects", objects,
                     "--max-open-files", "200", "--max-memory", "20G", "--no-verify", PROBE_LIMITS=str(probe))
    assert result.returncode == 0, result.stderr
    limits = json.loads(probe.read_text())
    assert limits["nofile"] == 200
    assert limits["as"] == 20 << 30
    assert limits["group_leader"]


def test_limits_from_the_environment(tmp_path, custom_model):
    path, objects = custom_model
    probe = tmp_path / "limits.json"
    result = run_cli(tmp_path, "expose-state", path, "-o", tmp_path / "m.keras", "--custom-objects", objects,
                     "--no-verify", PROBE_LIMITS=str(probe), LSTM_SURGERY_MAX_OPEN_FILES="300",
                     LSTM_SURGERY_MAX_MEMORY="12G")
    assert result.returncode == 0, result.stderr
    limits = json.loads(probe.read_text())
    assert limits["nofile"] == 300 and limits["as"] == 12 << 30


def test_a_native_crash_in_the_worker_is_one_line(tmp_path, custom_model):
    path, objects = custom_model
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli(tmp_path, "expose-state", path, "-o", out / "m.keras", "--custom-objects", objects,
                     CRASH_ON_IMPORT="1")
    assert result.returncode == 2
    assert "SIGSEGV" in one_error_line(result.stderr)
    assert leftovers(out) == []


def test_json_output_stays_json_when_a_limit_stops_the_run(tmp_path, custom_model):
    process, _ = start_hanging_run(tmp_path, custom_model, "--timeout", "15", "--json")
    stdout, _ = process.communicate(timeout=120)
    payload = json.loads(stdout)
    assert payload["ok"] is False and payload["exit_code"] == 2


def test_bad_limit_values_are_usage_errors(tmp_path):
    result = run_cli(tmp_path, "inspect", MODEL, "--max-memory", "lots")
    assert result.returncode == 2 and "--max-memory" in one_error_line(result.stderr)


def test_a_bug_in_the_tool_is_exit_5_not_bad_input(monkeypatch):
    import importlib

    module = importlib.import_module("surgery.ops.inspect")  # `surgery.inspect` is the API function

    def broken(*_args, **_kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(module, "inspect", broken)
    result = CliRunner().invoke(cli.main, ["inspect", str(MODEL)])
    assert result.exit_code == 5
    line = result.stderr.strip()
    assert "\n" not in line and "internal error" in line and "please report" in line
