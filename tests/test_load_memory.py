"""A verified expose-state holds the model's weights about once: the loader reads a large
variable into memory the variable then adopts (no NumPy, tensor and placeholder copies beside
it), and the oracle reads the layer's variables in place and converts them a block at a time."""

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from surgery.check import cells
from surgery.check.verify import oracle_states
from surgery.io import families, keras3_load

ROOT = Path(__file__).resolve().parent.parent
UNITS = 1600  # recurrent kernel 1600 x 6400 float32: 41 MB, past both size thresholds
FEATURES = 8


def _save_lstm(path: Path, units: int) -> Path:
    import keras

    inputs = keras.Input((None, FEATURES), name="x")
    hidden = keras.layers.LSTM(units, name="lstm")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden))
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(scale=0.02, size=w.shape).astype(np.float32) for w in model.get_weights()])
    model.save(path)
    return path


@pytest.fixture(scope="module")
def big_model(tmp_path_factory):
    return _save_lstm(tmp_path_factory.mktemp("big") / "big_lstm.keras", UNITS)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    return _save_lstm(tmp_path_factory.mktemp("small") / "small_lstm.keras", 8)


def test_sizes_exercise_the_placeholder_and_adopted_paths():
    recurrent_bytes = UNITS * 4 * UNITS * 4
    assert recurrent_bytes >= keras3_load.UNTOUCHED_PLACEHOLDER_BYTES >= keras3_load.ADOPTED_READ_BYTES


def test_fast_load_gives_keras_own_weights(big_model):
    import keras

    ours = keras3_load.load(str(big_model), custom_objects={}, safe_mode=True)
    theirs = keras.saving.load_model(big_model, compile=False)
    assert [w.path for w in ours.weights] == [w.path for w in theirs.weights]
    for mine, reference in zip(ours.get_weights(), theirs.get_weights()):
        assert mine.dtype == reference.dtype and np.array_equal(mine, reference)


LOAD_PEAK = textwrap.dedent("""
    import json, sys
    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    import tensorflow, keras
    from surgery.io import keras3_load
    # The same architecture, tiny, first: what any load costs besides the weights.
    keras3_load.load(sys.argv[2], custom_objects={}, safe_mode=True)
    open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
    before = rss("VmRSS")
    model = keras3_load.load(sys.argv[1], custom_objects={}, safe_mode=True)
    growth = rss("VmHWM") - before
    weights = sum(w.numpy().nbytes for w in model.weights)  # copies: after the reading
    print(json.dumps({"growth": growth, "weights": weights}))
""")


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc peak-RSS reset")
def test_loading_holds_each_weight_about_once(big_model, small_model):
    """Peak RSS growth while loading stays near the weights' own size. Keras' path held each
    large variable's placeholder, its NumPy read and a tensor copy at once (3x the largest)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", LOAD_PEAK, str(big_model), str(small_model)],
                            capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    largest = UNITS * 4 * UNITS * 4
    # The weights once, plus less than half a copy of the largest for everything else.
    assert measured["growth"] < measured["weights"] + largest / 2, measured


def test_oracle_reads_a_live_layer_without_copying_its_weights(big_model, monkeypatch):
    """NumPy reports its allocations to tracemalloc: a copy of a weight (np.asarray on a
    variable), or a whole float64 kernel, would show as tens of MB."""
    model = keras3_load.load(str(big_model), custom_objects={}, safe_mode=True)
    layer = model.get_layer("lstm")
    family = families.of_model(model)
    sequence = np.random.default_rng(1).normal(size=(2, 3, FEATURES)).astype(np.float32)
    monkeypatch.setattr(cells, "FLOAT64_BLOCK_BYTES", 1 << 20)
    tracemalloc.start()
    try:
        h, c = oracle_states(family, layer, sequence, None, None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert h.shape == c.shape == (2, UNITS)
    assert peak < 4 << 20, f"traced peak {peak} bytes; one float32 recurrent kernel is {UNITS * 4 * UNITS * 4}"
    # And it is the same recurrence as on copies converted whole.
    monkeypatch.setattr(cells, "FLOAT64_BLOCK_BYTES", 1 << 30)
    from surgery.check import oracle
    from surgery.graph import registry

    config = registry.unwrap(family.layer_config(layer))
    _, (h_whole, c_whole) = oracle.run_layer(config, layer.get_weights(), sequence.astype(np.float64))
    assert np.max(np.abs(h - h_whole)) <= 1e-13 and np.max(np.abs(c - c_whole)) <= 1e-13


def test_cheap_initializers_apply_only_to_the_loading_thread():
    """While one thread loads through cheap_initializers, a model built in another thread gets
    Keras' own random initial weights (not zeros), and Keras' method is back afterwards."""
    import threading

    import keras
    import numpy as np
    from keras.src.backend.tensorflow.core import Variable

    from surgery.io.keras3_load import cheap_initializers

    own = Variable._initialize_with_initializer
    built, inside, release = {}, threading.Event(), threading.Event()

    def loader():
        with cheap_initializers():
            built["loading"] = keras.layers.Dense(16)
            built["loading"].build((None, 8))
            inside.set()
            release.wait(30)

    worker = threading.Thread(target=loader)
    worker.start()
    assert inside.wait(60)
    other = keras.layers.Dense(16)
    other.build((None, 8))
    release.set()
    worker.join(60)
    assert not np.any(np.asarray(built["loading"].kernel))   # the loading thread: placeholder zeros
    assert np.any(np.asarray(other.kernel))                   # any other thread: glorot as usual
    assert Variable._initialize_with_initializer is own
