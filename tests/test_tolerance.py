"""The one tolerance policy: float error passes, every semantic slip fails; verification inputs
come from the graph or from --data; convert never skips its check."""

import json
import re
import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import FIXTURES, ROOT
from surgery.check import oracle, tolerance

T = 30          # timesteps of the large-state model
UNITS = 4
FEATURES = 3


def cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def assert_one_line_error(result, code, *needles):
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# --------------------------------------------------------------------------------------
# the policy


def test_float32_bound_is_relative_and_names_itself():
    bound = tolerance.bound_for("float32")
    assert (bound.atol, bound.rtol, bound.dtype) == (1e-5, 1e-5, "float32")
    # The case: |c| = 24.1, float32 vs the float64 oracle differ by 5.3e-5.
    ref = np.array([24.1, -3.0, 0.5])
    check = tolerance.compare(ref + np.array([5.3e-5, 1e-6, 0.0]), ref, bound)
    assert check.ok
    assert check.describe("states vs NumPy oracle") == (
        "states vs NumPy oracle: max |diff| 5.3e-05 at |ref| 24.1, within 1e-05 + 1e-05*|ref| (float32)")
    json.dumps(check.as_dict())


def test_bound_grows_with_length_but_stays_below_semantic_slips():
    assert tolerance.bound_for("float32", steps=100).growth == 1.0
    assert tolerance.bound_for("float32", steps=400).growth == pytest.approx(2.0)
    for steps in (1, 7, 100, 500):
        assert tolerance.bound_for("float32", steps=steps).allowed(40.0) < 1e-3
    assert "T=500" in tolerance.bound_for("float32", steps=500).describe()


@pytest.mark.parametrize("dtype, atol", [("float64", 1e-9), ("float16", 2e-2), ("bfloat16", 1e-1),
                                         ("int32", 1e-5), (np.dtype("float32"), 1e-5)])
def test_bounds_per_dtype(dtype, atol):
    assert tolerance.bound_for(dtype).atol == atol


def test_small_values_keep_the_absolute_floor():
    bound = tolerance.bound_for("float32")
    assert not tolerance.compare([2e-5], [0.0], bound).ok
    assert tolerance.compare([9e-6], [0.0], bound).ok


def test_shape_and_nan_mismatches_fail_and_matching_nans_pass():
    bound = tolerance.bound_for("float32")
    assert not tolerance.compare(np.zeros((2, 3)), np.zeros((3, 2)), bound).ok
    assert not tolerance.compare([np.nan, 1.0], [0.0, 1.0], bound).ok
    assert tolerance.compare([np.nan, 1.0], [np.nan, 1.0], bound).ok
    failed = tolerance.compare([1.0], [2.0], bound)
    assert "EXCEEDS" in failed.describe() and json.dumps(tolerance.compare([np.inf], [0.0], bound).as_dict())


def test_worst_keeps_the_closest_to_its_bound_and_the_largest_diff():
    bound = tolerance.bound_for("float32")
    big_ref = tolerance.compare([30.0 + 2e-4], [30.0], bound)     # large diff, far inside its bound
    small_ref = tolerance.compare([9e-6], [0.0], bound)           # small diff, near its bound
    merged = tolerance.worst([big_ref, small_ref])
    assert merged.ratio == small_ref.ratio and merged.max_abs_diff == pytest.approx(2e-4)
    assert merged.ok


def test_no_copy_of_the_old_table_remains():
    for path in (ROOT / "surgery").rglob("*.py"):
        text = path.read_text()
        assert '"bfloat16": 1e-1}' not in text or path.name == "tolerance.py", path


# --------------------------------------------------------------------------------------
# semantic slips on a model with |c| ~ 25


def _large_state_lstm(keras):
    """An LSTM whose cell state grows by ~1 per step: forget ~ 1, input ~ 1, candidate ~ +-1."""
    rng = np.random.default_rng(0)
    layer = keras.layers.LSTM(UNITS, return_sequences=False, return_state=True)
    layer.build((None, T, FEATURES))
    kernel = rng.normal(0, 0.3, (FEATURES, 4 * UNITS))
    recurrent = rng.normal(0, 0.05, (UNITS, 4 * UNITS))
    bias = np.concatenate([np.full(UNITS, 4.0), np.full(UNITS, 6.0), np.full(UNITS, 3.0), np.zeros(UNITS)])
    layer.set_weights([kernel.astype("float32"), recurrent.astype("float32"), bias.astype("float32")])
    x = rng.normal(0, 1, (4, T, FEATURES)).astype("float32")
    mask = np.ones((4, T), bool)
    mask[1, -6:] = False
    return layer, x, mask


def _keras_states(layer, x, mask):
    _, h, c = layer(x, mask=mask)
    return [np.asarray(h), np.asarray(c)]


def _oracle_states(layer_config, weights, x, mask):
    _, states = oracle.run_layer(layer_config, [np.asarray(w, np.float64) for w in weights], x.astype(np.float64),
                                 mask=mask)
    return states


def _lstm_config(layer, **changes):
    config = json.loads(json.dumps(__import__("keras").saving.serialize_keras_object(layer)))
    config["config"].update(changes)
    return config


def _gates(array, order):
    blocks = np.split(np.asarray(array), 4, axis=-1)
    return np.concatenate([blocks[i] for i in order], axis=-1)


def _lstm_slips(layer, weights):
    kernel, recurrent, bias = weights
    swapped = (1, 0, 2, 3)  # i and f exchanged: the subtlest gate-order slip here (both ~ 1)
    return {
        "gate order (i, f swapped)": (_lstm_config(layer), [_gates(kernel, swapped), _gates(recurrent, swapped),
                                                           _gates(bias, swapped)], True),
        "recurrent activation hard_sigmoid": (_lstm_config(layer, recurrent_activation="hard_sigmoid"), weights, True),
        "activation softsign": (_lstm_config(layer, activation="softsign"), weights, True),
        "mask ignored": (_lstm_config(layer), weights, False),
        # cuDNN biases: Keras' bias is input half + recurrent half; a slip keeps one half.
        "bias layout (one cuDNN half)": (_lstm_config(layer), [kernel, recurrent, bias - np.full_like(bias, 0.5)], True),
    }


def test_float32_lstm_with_large_cell_state_passes(keras):
    layer, x, mask = _large_state_lstm(keras)
    got = _keras_states(layer, x, mask)
    want = _oracle_states(_lstm_config(layer), layer.get_weights(), x, mask)
    bound = tolerance.bound_for("float32", steps=T)
    check = tolerance.worst(tolerance.compare(g, w, bound) for g, w in zip(got, want))
    assert np.max(np.abs(want[1])) > 20, "the model must reach |c| > 20"
    assert check.ok, check.describe()


def test_every_semantic_slip_is_caught_on_large_cell_states(keras, capsys):
    layer, x, mask = _large_state_lstm(keras)
    got = _keras_states(layer, x, mask)
    bound = tolerance.bound_for("float32", steps=T)
    caught = {}
    for slip, (config, weights, use_mask) in _lstm_slips(layer, layer.get_weights()).items():
        slipped = _oracle_states(config, weights, x, mask if use_mask else None)
        check = tolerance.worst(tolerance.compare(g, w, bound) for g, w in zip(got, slipped))
        assert not check.ok, (slip, check.describe())
        assert check.max_abs_diff >= 1e-3, (slip, check.max_abs_diff)
        caught[slip] = check.max_abs_diff
    with capsys.disabled():
        print("\nLSTM |c|~25 slips, max |diff|: " + ", ".join(f"{k} {v:.3g}" for k, v in caught.items()))


def test_gru_reset_after_and_bias_row_slips_are_caught(keras, capsys):
    rng = np.random.default_rng(1)
    layer = keras.layers.GRU(UNITS, reset_after=True, return_state=True)
    layer.build((None, T, FEATURES))
    kernel = rng.normal(0, 0.5, (FEATURES, 3 * UNITS))
    recurrent = rng.normal(0, 0.5, (UNITS, 3 * UNITS))
    bias = rng.normal(0, 1.0, (2, 3 * UNITS))
    weights = [kernel.astype("float32"), recurrent.astype("float32"), bias.astype("float32")]
    layer.set_weights(weights)
    x = rng.normal(0, 1, (4, T, FEATURES)).astype("float32")
    _, h = layer(x)
    got = np.asarray(h)
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    bound = tolerance.bound_for("float32", steps=T)
    assert tolerance.compare(got, _oracle_states(config, weights, x, None)[0], bound).ok
    before = json.loads(json.dumps(config))
    before["config"]["reset_after"] = False
    slips = {
        "reset_after wrong (biases summed)": (before, [kernel, recurrent, bias.sum(axis=0)]),
        "bias layout (input/recurrent rows swapped)": (config, [kernel, recurrent, bias[::-1]]),
    }
    caught = {}
    for slip, (slip_config, slip_weights) in slips.items():
        check = tolerance.compare(got, _oracle_states(slip_config, slip_weights, x, None)[0], bound)
        assert not check.ok and check.max_abs_diff >= 1e-3, (slip, check.describe())
        caught[slip] = check.max_abs_diff
    with capsys.disabled():
        print("\nGRU slips, max |diff|: " + ", ".join(f"{k} {v:.3g}" for k, v in caught.items()))


def test_expose_state_verifies_a_large_state_model_without_false_alarm(keras, tmp_path):
    from surgery.ops.expose import expose_state_file

    layer, x, _mask = _large_state_lstm(keras)
    inputs = keras.Input((None, FEATURES))
    lstm = keras.layers.LSTM(UNITS, name="lstm")
    model = keras.Model(inputs, keras.layers.Dense(2)(lstm(inputs)))
    lstm.set_weights(layer.get_weights())
    model.save(tmp_path / "big.keras")
    np.save(tmp_path / "x.npy", x)
    result = expose_state_file(tmp_path / "big.keras", tmp_path / "out.keras", inputs=True, data=tmp_path / "x.npy")
    report = result.report
    assert report.ok and report.batch == 4
    assert np.max(np.abs(_keras_states(layer, x, None)[1])) > 20  # the user's data drives |c| past 20
    assert re.search(r"within 1e-05 \+ 1e-05\*(\|ref\||max\(\|ref\|, [0-9.e+-]+\)) \(float32\)", report.summary())
    assert "x.npy" in report.summary()


# --------------------------------------------------------------------------------------
# inputs from the graph, and --data


def _float_embedding_keras3(keras, path, mask_zero=True):
    inputs = keras.Input((None,), dtype="float32", name="tokens")
    x = keras.layers.Embedding(50, 8, mask_zero=mask_zero)(inputs)
    x = keras.layers.Bidirectional(keras.layers.LSTM(6))(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    model.save(path)
    return model


def _float_embedding_keras2(path):
    from surgery.io import families

    tf_keras = families.get("keras2").keras
    inputs = tf_keras.Input((12,), dtype="float32", name="tokens")
    x = tf_keras.layers.Embedding(40, 8, mask_zero=True)(inputs)
    x = tf_keras.layers.Bidirectional(tf_keras.layers.LSTM(5))(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(3, activation="softmax")(x))
    model.save(path)
    return model


def test_random_inputs_give_valid_ids_to_a_float_input_embedding(keras, tmp_path):
    from surgery.check.verify import input_id_limits, random_inputs

    model = _float_embedding_keras3(keras, tmp_path / "m.keras")
    assert input_id_limits(model) == [50]
    (x,) = random_inputs(model, batch=4)
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() < 50 and np.all(x == np.round(x))
    assert np.all(x[1, -2:] == 0) and np.all(x[0] > 0)  # a padded tail for the mask_zero path


def test_float_input_embedding_end_to_end_through_the_cli(keras, tmp_path):
    _float_embedding_keras3(keras, tmp_path / "m.keras")
    out = tmp_path / "m.exposed.keras"
    result = cli("expose-state", tmp_path / "m.keras", "-o", out, "--inputs")
    assert result.returncode == 0, result.stderr
    assert re.search(r"within 1e-05 \+ 1e-05\*(\|ref\||max\(\|ref\|, [0-9.e+-]+\)) \(float32\)", result.stdout)
    checked = cli("verify", tmp_path / "m.keras", out, "--json")
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["ok"] and report["state_checks"]


def test_keras2_float_input_embedding_converts_and_matches_the_original(tmp_path):
    _float_embedding_keras2(tmp_path / "k2.h5")
    result = cli("convert", tmp_path / "k2.h5", "-o", tmp_path / "k3.keras", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["ok"] and payload["max_abs_diff_vs_keras2"] is not None
    assert "output(s) vs the Keras 2 original" in payload["check"] and "within" in payload["check"]


def test_data_round_trips_npz_by_name_by_order_and_npy(keras, tmp_path):
    from surgery.check.verify import verify_files

    _float_embedding_keras3(keras, tmp_path / "m.keras")
    out = tmp_path / "m.exposed.keras"
    assert cli("expose-state", tmp_path / "m.keras", "-o", out).returncode == 0
    tokens = np.array([[3, 7, 9, 0, 0, 0], [1, 2, 3, 4, 5, 6], [49, 1, 0, 0, 0, 0]], dtype=np.float32)
    np.savez(tmp_path / "named.npz", tokens=tokens)
    np.savez(tmp_path / "ordered.npz", tokens)
    np.save(tmp_path / "one.npy", tokens)
    for name in ("named.npz", "ordered.npz", "one.npy"):
        result = cli("verify", tmp_path / "m.keras", out, "--data", tmp_path / name)
        assert result.returncode == 0, (name, result.stderr)
        assert name in result.stdout and "within" in result.stdout
    report = verify_files(tmp_path / "m.keras", out, data=tokens)
    assert report.ok and report.batch == 3


def test_bad_data_is_a_one_line_usage_error_naming_file_and_array(keras, tmp_path):
    _float_embedding_keras3(keras, tmp_path / "m.keras")
    np.savez(tmp_path / "ids.npz", tokens=np.array([[3, 70, 0]], np.float32))
    np.savez(tmp_path / "rank.npz", tokens=np.zeros((2, 3, 4), np.float32))
    np.savez(tmp_path / "two.npz", a=np.zeros((1, 3)), b=np.zeros((1, 3)))
    np.save(tmp_path / "frac.npy", np.array([[1.5, 2.0]], np.float32))
    (tmp_path / "junk.npy").write_text("not an array")
    model = tmp_path / "m.keras"
    cases = [
        ("ids.npz", ["ids.npz", "'tokens'", "0..49"]),
        ("rank.npz", ["rank.npz", "'tokens'", "shape"]),
        ("two.npz", ["two.npz", "['a', 'b']"]),
        ("frac.npy", ["frac.npy", "non-integer"]),
        ("junk.npy", ["junk.npy", ".npy/.npz"]),
        ("missing.npz", ["missing.npz", "not found"]),
    ]
    for name, needles in cases:
        result = cli("expose-state", model, "-o", tmp_path / f"o_{name}.keras", "--data", tmp_path / name)
        assert_one_line_error(result, 2, *needles)
        assert not (tmp_path / f"o_{name}.keras").exists()


# --------------------------------------------------------------------------------------
# convert never skips its check


def test_convert_propagates_a_failing_original_instead_of_writing(monkeypatch, tmp_path):
    from surgery.io import families
    from surgery.ops.convert import convert_file

    def crash(self, model, values):
        raise RuntimeError("InvalidArgumentError: indices[0,3] = -1 is not in [0, 40)")

    monkeypatch.setattr(families.Keras2Family, "call", crash)
    out = tmp_path / "c.keras"
    with pytest.raises(RuntimeError, match="InvalidArgumentError"):
        convert_file(FIXTURES / "keras2" / "k2_functional.h5", out)
    assert not out.exists()


def test_convert_cli_exits_non_zero_when_the_original_fails(monkeypatch, tmp_path):
    from click.testing import CliRunner

    import cli as cli_module
    from surgery.io import families

    def crash(self, model, values):
        raise RuntimeError("InvalidArgumentError: indices[0,3] = -1 is not in [0, 40)")

    monkeypatch.setattr(families.Keras2Family, "call", crash)
    out = tmp_path / "c.keras"
    result = CliRunner().invoke(cli_module.main, ["convert", str(FIXTURES / "keras2" / "k2_functional.h5"),
                                                  "-o", str(out)])
    assert result.exit_code not in (0, None) and not out.exists(), result.output


def test_cudnn_original_on_cpu_is_checked_against_the_oracle(tmp_path):
    from surgery.ops.convert import convert_file
    from surgery.ops.translation_check import cannot_run_here
    from surgery.io.formats import read_artifact
    from surgery.io.quiet import import_tensorflow

    if import_tensorflow().config.list_physical_devices("GPU"):
        pytest.skip("a GPU runs the CuDNN original itself")
    assert cannot_run_here(read_artifact(FIXTURES / "keras2" / "k2_functional.h5")) is None
    assert "CuDNNLSTM" in cannot_run_here(read_artifact(FIXTURES / "keras2" / "k2_cudnn_lstm.h5"))
    result = convert_file(FIXTURES / "keras2" / "k2_cudnn_lstm.h5", tmp_path / "c.keras")
    assert result.max_abs_diff is None and "NumPy oracle on the file's own weights" in result.check
    assert "within 1e-05 + 1e-05*|ref| (float32)" in result.check


def test_keras3_h5_with_mask_zero_embedding_is_exposed(keras, tmp_path):
    # Keras 3 writes the Embedding's mask as a NotEqual op node that its own .h5 reader does
    # not resolve (plain keras.saving.load_model fails on this file with "Unknown layer:
    # 'NotEqual'"); surgery supplies Keras' op classes for masks.
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(20, 8, mask_zero=True)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.LSTM(6)(x)))
    model.save(tmp_path / "m.h5")
    inspected = cli("inspect", tmp_path / "m.h5")
    assert inspected.returncode == 0
    result = cli("expose-state", tmp_path / "m.h5", "-o", tmp_path / "o.h5", "--inputs")
    assert result.returncode == 0, result.stderr
    assert "within" in result.stdout
    assert cli("verify", tmp_path / "m.h5", tmp_path / "o.h5").returncode == 0


def test_every_bound_is_finite():
    for dtype in tolerance.POLICY:
        bound = tolerance.bound_for(dtype, steps=10_000)
        assert math.isfinite(bound.growth) and bound.allowed(1.0) > 0


def test_slips_stay_caught_with_the_measured_amplification_term(keras):
    """The bound may grow by the recurrence's own measured amplification of one rounding;
    on the |c| ~ 25 model that term is tiny and every slip still fails."""
    layer, x, mask = _large_state_lstm(keras)
    got = _keras_states(layer, x, mask)
    config, weights = _lstm_config(layer), layer.get_weights()
    want = _oracle_states(config, weights, x, mask)
    bound = tolerance.with_sensitivity(
        tolerance.bound_for("float32", steps=T), want,
        lambda: _oracle_states(config, weights, tolerance.perturbed([x], "float32")[0], mask))
    assert 0 < tolerance.SENSITIVITY_FACTOR * bound.sensitivity < 1e-4, bound.describe()
    for slip, (slip_config, slip_weights, use_mask) in _lstm_slips(layer, weights).items():
        slipped = _oracle_states(slip_config, slip_weights, x, mask if use_mask else None)
        check = tolerance.worst(tolerance.compare(g, w, bound) for g, w in zip(got, slipped))
        assert not check.ok, (slip, check.describe())


def test_an_amplifying_recurrence_passes_only_with_its_measured_amplification(keras):
    """A strongly recurrent LSTM (recurrent weights ~ N(0, 0.7)) amplifies float32 rounding
    past the plain bound; Keras in float64 agrees with the oracle to ~1e-12 (so it is rounding,
    not semantics), and the measured term covers the float32 result."""
    rng = np.random.default_rng(3)
    units, steps = 64, 100
    layer = keras.layers.LSTM(units, return_state=True)
    layer.build((None, steps, 8))
    weights = [rng.normal(0, 1.0, (8, 4 * units)), rng.normal(0, 0.7, (units, 4 * units)),
               rng.normal(0, 1.0, (4 * units,))]
    layer.set_weights([w.astype("float32") for w in weights])
    x = rng.normal(0, 1, (4, steps, 8)).astype("float32")
    got = _keras_states(layer, x, None)
    config = _lstm_config(layer)
    want = _oracle_states(config, layer.get_weights(), x, None)
    plain = tolerance.bound_for("float32", steps=steps, scale=tolerance.magnitude(want))
    if tolerance.worst(tolerance.compare(g, w, plain) for g, w in zip(got, want)).ok:
        pytest.skip("this CPU's float32 kernels happened to stay within the plain bound")
    layer64 = keras.layers.LSTM(units, return_state=True, dtype="float64")
    layer64.build((None, steps, 8))
    layer64.set_weights([w.astype("float64") for w in layer.get_weights()])
    exact = [np.asarray(v) for v in layer64(x.astype("float64"))[1:]]
    assert max(float(np.max(np.abs(e - w))) for e, w in zip(exact, want)) < 1e-9
    bound = tolerance.with_sensitivity(
        plain, want, lambda: _oracle_states(config, layer.get_weights(), tolerance.perturbed([x], "float32")[0], None))
    check = tolerance.worst(tolerance.compare(g, w, bound) for g, w in zip(got, want))
    assert check.ok, check.describe()
    assert "measured amplification" in bound.describe()


def test_a_chaotic_recurrence_fails_saying_why_instead_of_passing_anything(keras):
    """Recurrent weights ~ N(0, 1.1): one rounding grows to O(1); no bound can tell float32
    noise from a slip, so the check fails and says so (never a silent pass)."""
    rng = np.random.default_rng(3)
    units, steps = 64, 100
    layer = keras.layers.LSTM(units, return_state=True)
    layer.build((None, steps, 8))
    layer.set_weights([w.astype("float32") for w in (
        rng.normal(0, 1.0, (8, 4 * units)), rng.normal(0, 1.1, (units, 4 * units)), rng.normal(0, 1.0, (4 * units,)))])
    x = rng.normal(0, 1, (4, steps, 8)).astype("float32")
    config = _lstm_config(layer)
    want = _oracle_states(config, layer.get_weights(), x, None)
    slipped = _oracle_states(_lstm_config(layer, activation="softsign"), layer.get_weights(), x, None)
    bound = tolerance.with_sensitivity(
        tolerance.bound_for("float32", steps=steps, scale=tolerance.magnitude(want)), want,
        lambda: _oracle_states(config, layer.get_weights(), tolerance.perturbed([x], "float32")[0], None))
    check = tolerance.worst(tolerance.compare(g, w, bound) for g, w in zip(slipped, want))
    assert not check.ok
    assert "chaotic" in bound.describe()
