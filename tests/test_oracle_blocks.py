"""The oracle's float64 working set is bounded (kernels converted a block of rows at a time),
and blocking changes its results by float64 summation order only: every case below runs once
with each kernel converted whole and once in blocks of one row."""

import tracemalloc

import numpy as np
import pytest

from surgery.check import cells, oracle

BATCH, TIME, FEATURES = 3, 7, 5
# Row 0 has holes, row 1 is masked at the end, row 2 fully masked.
MASK = np.array([[1, 1, 0, 1, 0, 1, 1], [1, 1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]], dtype=bool)
# Blocked vs whole: the same dot products, their terms summed in another order. States are
# O(1); k-term sums differ by at most k * eps * sum |terms| (about 1e-15 here).
SUMMATION_ORDER = 1e-13


def _dense_weights(rng, gates: int, units: int, inputs: int, bias_shape=None):
    kernel = rng.normal(scale=0.5, size=(inputs, gates * units)).astype(np.float32)
    recurrent = rng.normal(scale=0.5, size=(units, gates * units)).astype(np.float32)
    bias = rng.normal(scale=0.5, size=bias_shape or (gates * units,)).astype(np.float32)
    return [kernel, recurrent, bias]


def _layer(class_name: str, **config):
    return {"class_name": class_name, "config": config}


def _cases():
    rng = np.random.default_rng(0)
    units = 6
    cases = {}
    for options in ({}, {"go_backwards": True, "return_sequences": True},
                    {"return_sequences": True, "zero_output_for_mask": True}):
        tag = ",".join(options) or "default"
        cases[f"LSTM[{tag}]"] = (_layer("LSTM", units=units, **options), _dense_weights(rng, 4, units, FEATURES))
        cases[f"GRU[{tag}]"] = (_layer("GRU", units=units, **options),
                                _dense_weights(rng, 3, units, FEATURES, (2, 3 * units)))
        cases[f"GRU-reset-before[{tag}]"] = (_layer("GRU", units=units, reset_after=False, **options),
                                             _dense_weights(rng, 3, units, FEATURES))
        cases[f"SimpleRNN[{tag}]"] = (_layer("SimpleRNN", units=units, **options),
                                      _dense_weights(rng, 1, units, FEATURES))
    stacked = _layer("StackedRNNCells", cells=[_layer("LSTMCell", units=units), _layer("GRUCell", units=5)])
    cases["RNN(StackedRNNCells)"] = (_layer("RNN", cell=stacked, return_sequences=True),
                                     _dense_weights(rng, 4, units, FEATURES)
                                     + _dense_weights(rng, 3, 5, units, (2, 15)))
    forward = _layer("LSTM", units=units, return_sequences=True)
    backward = _layer("GRU", units=units, return_sequences=True, go_backwards=True)
    cases["Bidirectional(LSTM, GRU)"] = (
        _layer("Bidirectional", layer=forward, backward_layer=backward, merge_mode="concat"),
        _dense_weights(rng, 4, units, FEATURES) + _dense_weights(rng, 3, units, FEATURES, (2, 3 * units)))
    for rank, padding in ((1, "same"), (2, "valid")):
        kernel_size = (3,) * rank
        conv = [rng.normal(scale=0.3, size=(*kernel_size, FEATURES, 12)).astype(np.float32),
                rng.normal(scale=0.3, size=(*kernel_size, 3, 12)).astype(np.float32),
                rng.normal(scale=0.3, size=(12,)).astype(np.float32)]
        cases[f"ConvLSTM{rank}D[{padding}]"] = (
            _layer(f"ConvLSTM{rank}D", filters=3, kernel_size=list(kernel_size), padding=padding,
                   return_sequences=True), conv)
    return cases


CASES = _cases()


def _input(name: str) -> np.ndarray:
    spatial = {"ConvLSTM1D": (6,), "ConvLSTM2D": (5, 5)}.get(name.split("[")[0], ())
    return np.random.default_rng(1).normal(size=(BATCH, TIME, *spatial, FEATURES))


def _initial_state(config: dict, weights, x) -> list[np.ndarray]:
    _, states = oracle.run_layer(config, weights, x[:, :2])
    return [np.random.default_rng(2).normal(size=s.shape) for s in states]


def _read_only(weights):
    views = [w.view() for w in weights]
    for view in views:
        view.flags.writeable = False
    return views


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "initial-state"])
def test_blocked_oracle_matches_whole_kernels(name, masked, with_state, monkeypatch):
    config, weights = CASES[name]
    x = _input(name)
    mask = MASK if masked else None
    initial = _initial_state(config, weights, x) if with_state else None
    whole_output, whole_states = oracle.run_layer(config, weights, x, mask=mask, initial_state=initial)
    # One kernel row per block: the most partial sums there can be.
    monkeypatch.setattr(cells, "FLOAT64_BLOCK_BYTES", 8)
    output, states = oracle.run_layer(config, _read_only(weights), x, mask=mask, initial_state=initial)
    assert len(states) == len(whole_states)
    for got, want in zip([output, *states], [whole_output, *whole_states]):
        assert got.shape == want.shape
        assert np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want)), initial=0.0) <= SUMMATION_ORDER


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("block_rows", [1, 3, 64])
def test_matmul64_is_the_float64_product_within_summation_order(dtype, block_rows, monkeypatch):
    rng = np.random.default_rng(3)
    a = rng.normal(size=(2, 5, 40))
    weight = rng.normal(size=(40, 50)).astype(dtype)
    whole = (a.reshape(-1, 40) @ weight.astype(np.float64)).reshape(2, 5, 50)
    monkeypatch.setattr(cells, "FLOAT64_BLOCK_BYTES", 8 * 50 * block_rows)
    got = cells.matmul64(a, weight)
    assert got.dtype == np.float64 and got.shape == (2, 5, 50)
    if dtype == np.float64 or block_rows >= 40:
        assert np.array_equal(got, whole)  # used whole, as before blocking
    # Any summation order of a k-term dot product stays within k * eps * sum |terms|.
    bound = 40 * np.finfo(np.float64).eps * (np.abs(a) @ np.abs(weight.astype(np.float64)))
    assert np.all(np.abs(got - whole) <= bound)


def test_float64_working_set_is_bounded_by_the_block_size(monkeypatch):
    """An LSTM whose float64 kernels would take 64 MB (32 MB each) runs within a few MB of
    traced memory (NumPy reports its allocations to tracemalloc)."""
    units, block = 1024, 1 << 20
    rng = np.random.default_rng(4)
    weights = _read_only([rng.normal(scale=0.05, size=(units, 4 * units)).astype(np.float32),
                          rng.normal(scale=0.05, size=(units, 4 * units)).astype(np.float32),
                          np.zeros(4 * units, np.float32)])
    x = rng.normal(size=(2, 3, units))
    config = _layer("LSTM", units=units)
    monkeypatch.setattr(cells, "FLOAT64_BLOCK_BYTES", block)
    tracemalloc.start()
    try:
        _, (h, c) = oracle.run_layer(config, weights, x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert h.shape == c.shape == (2, units)
    # A block, its product and the step's small arrays: an eighth of one float64 kernel.
    assert peak < 4 * block, f"traced peak {peak} bytes"
    monkeypatch.setattr(cells, "FLOAT64_BLOCK_BYTES", 64 << 20)
    _, (h_whole, c_whole) = oracle.run_layer(config, weights, x)
    assert np.max(np.abs(h - h_whole)) <= SUMMATION_ORDER
    assert np.max(np.abs(c - c_whole)) <= SUMMATION_ORDER
