"""Killing the tool with SIGKILL at random moments during a save never leaves a partial
file at the target path: the target is either absent or a complete, valid artifact."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile

import pytest

from conftest import ROOT

TRIALS = 50


@pytest.fixture(scope="module")
def big_model(tmp_path_factory, keras):
    path = tmp_path_factory.mktemp("crash") / "big.keras"
    inputs = keras.Input((None, 512))
    hidden = keras.layers.LSTM(512, return_sequences=True, name="a")(inputs)
    outputs = keras.layers.LSTM(512, name="b")(hidden)
    keras.Model(inputs, outputs).save(path)  # about 16 MB of weights
    return path


def member_hash(path, member="model.weights.h5"):
    with zipfile.ZipFile(path) as archive:
        return hashlib.sha256(archive.read(member)).hexdigest()


def run_and_kill(source, target, delay):
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "expose-state", str(source), "-o", str(target),
         "--no-verify", "--force"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=delay)  # returns early when the run finishes by itself
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    return process.returncode


def assert_complete_or_absent(target, expected_weights):
    if not target.exists():
        return "absent"
    with zipfile.ZipFile(target) as archive:
        assert archive.testzip() is None
        config = json.loads(archive.read("config.json"))
    assert member_hash(target) == expected_weights
    assert config["config"]["output_layers"][-1][0] == "b_c"
    return "complete"


@pytest.mark.slow
def test_sigkill_during_save_never_leaves_a_partial_file(big_model, tmp_path):
    expected_weights = member_hash(big_model)
    reference = tmp_path / "reference.keras"
    started = time.perf_counter()
    assert run_and_kill(big_model, reference, 600) == 0
    full_run = time.perf_counter() - started
    rng = random.Random(1234)
    outcomes = []
    for trial in range(TRIALS):
        target = tmp_path / f"out_{trial % 5}.keras"
        if trial % 10 == 0 and target.exists():
            target.unlink()
        run_and_kill(big_model, target, rng.uniform(0.0, full_run * 1.1))
        outcomes.append(assert_complete_or_absent(target, expected_weights))
    # The trials must really interrupt saves, not only kill before or after them.
    assert "absent" in outcomes and "complete" in outcomes
