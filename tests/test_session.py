"""StreamSession: stepping with kept state, on the fastest backend, checked against the
full-sequence model and the NumPy oracle."""

import numpy as np
import pytest
from conftest import FIXTURES

TOL = 1e-5


@pytest.fixture(scope="module")
def streaming_model():
    from surgery.io.loading import load_model

    return load_model(FIXTURES / "streaming.keras")


def _reference(model, x, init=None):
    """The full-sequence model (with state inputs) on the whole of x: outputs, final states."""
    from surgery.ops import stream

    full, plan = stream.build_full_step_model(model)
    batch = x.shape[0]
    init = init or stream.initial_states(plan, batch=batch, random=False, seed=0)
    out = stream.compiled_call(full)([x] + list(init))
    return out[0], dict(zip([s.name for s in plan.state_outputs], out[1:]))


def test_auto_picks_tflite_and_matches_the_full_sequence(streaming_model):
    from surgery import StreamSession

    session = StreamSession(streaming_model)
    assert session.backend == "tflite" and not session.fallbacks
    assert session.tflite_report.builtin_only
    report = session.check_report  # the one report type: TFLite step vs the Keras step model
    assert report.ok and report.checks and "tflite backend" in report.summary()
    x = np.random.default_rng(0).standard_normal((1, 60, 4)).astype("float32")
    ys = np.stack([session.step(x[:, t]) for t in range(60)], axis=1)
    expected, states = _reference(streaming_model, x)
    assert ys.shape == (1, 60, 2)
    assert np.max(np.abs(ys - expected)) <= TOL
    assert set(session.state) == {"lstm_h", "lstm_c", "lstm_1_h", "lstm_1_c"}
    for name, value in states.items():
        assert np.max(np.abs(session.state[name] - value)) <= TOL


def test_reset_and_set_state(streaming_model):
    from surgery import StreamSession

    session = StreamSession(streaming_model, steps=5)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 20, 4)).astype("float32")
    first = session.run(x)
    session.reset()
    assert all(not v.any() for v in session.state.values())
    assert np.max(np.abs(session.run(x) - first)) == 0.0

    init = {name: (rng.standard_normal(v.shape) * 0.5).astype("float32") for name, v in session.state.items()}
    session.set_state(init)
    got = session.run(x)
    order = ["lstm_h", "lstm_c", "lstm_1_h", "lstm_1_c"]
    expected, _ = _reference(streaming_model, x, [init[n] for n in order])
    assert np.max(np.abs(got - expected)) <= TOL
    assert np.max(np.abs(got - first)) > 1e-3  # the initial state really mattered
    snapshot = session.get_state()
    session.step(x[:, :5])
    session.set_state({f"{k}_in": v for k, v in snapshot.items()})  # input names work too
    assert all(np.array_equal(session.state[k], snapshot[k]) for k in snapshot)


def test_batch_of_eight_with_any_batch_size(streaming_model):
    from surgery import StreamSession

    session = StreamSession(streaming_model, steps=4, batch_size=None)
    x = np.random.default_rng(2).standard_normal((8, 24, 4)).astype("float32")
    got = session.run(x)
    expected, _ = _reference(streaming_model, x)
    assert got.shape == (8, 24, 2) and np.max(np.abs(got - expected)) <= TOL
    with pytest.raises(Exception, match="batch"):
        session.step(x[:3, :4])
    session.reset(batch_size=3)
    assert session.step(x[:3, :4]).shape == (3, 4, 2)


def test_falls_back_when_tflite_is_unavailable(streaming_model, monkeypatch):
    from surgery import StreamSession
    from surgery.io import tflite

    def broken(*args, **kwargs):
        raise RuntimeError("no TFLite here")

    monkeypatch.setattr(tflite, "convert", broken)
    session = StreamSession(streaming_model)
    assert session.backend == "function"
    assert session.fallbacks[0][0] == "tflite" and "no TFLite here" in session.fallbacks[0][1]
    x = np.random.default_rng(3).standard_normal((1, 12, 4)).astype("float32")
    expected, _ = _reference(streaming_model, x)
    assert np.max(np.abs(session.run(x) - expected)) <= TOL


def test_a_backend_that_gives_wrong_numbers_is_not_used(streaming_model, monkeypatch):
    from surgery import StreamSession
    from surgery.io import tflite

    real = tflite.SignatureStep.__call__

    def off_by_a_little(self, values):
        return [v + 1e-3 for v in real(self, values)]

    monkeypatch.setattr(tflite.SignatureStep, "__call__", off_by_a_little)
    session = StreamSession(streaming_model)
    assert session.backend == "function" and "differs" in session.fallbacks[0][1]
    assert "VERIFICATION FAILED" in session.fallbacks[0][1] and session.check_report.ok


def test_explicit_keras_backend_and_input_checks(streaming_model):
    from surgery import StreamSession
    from surgery.errors import UsageError

    session = StreamSession(streaming_model, backend="keras", steps=2)
    assert session.backend == "keras"
    with pytest.raises(UsageError, match="2 timesteps"):
        session.step(np.zeros((1, 3, 4), "float32"))
    with pytest.raises(UsageError, match="unknown state"):
        session.set_state({**session.state, "nope": np.zeros((1, 16))})
    with pytest.raises(UsageError, match="unknown backend"):
        StreamSession(streaming_model, backend="gpu")


def test_states_match_the_numpy_oracle():
    """Independent of Keras' full-sequence run: the first LSTM's carried state after 100
    single steps equals the NumPy recurrence over the same 100 inputs."""
    from surgery import StreamSession
    from surgery.check import oracle
    from surgery.io.loading import load_model
    from surgery.io.quiet import import_keras

    model = load_model(FIXTURES / "lstm_stacked.keras")
    session = StreamSession(model)
    x = np.random.default_rng(4).standard_normal((1, 100, 3)).astype("float32")
    for t in range(100):
        y = session.step(x[:, t])
    assert y.shape == (1, 2)
    layer = model.get_layer("lstm")
    config = import_keras().saving.serialize_keras_object(layer)
    weights = [np.asarray(w, dtype=np.float64) for w in layer.get_weights()]
    _, (h, c) = oracle.run_layer(config, weights, x.astype(np.float64))
    assert np.max(np.abs(session.state["lstm_h"] - h)) <= TOL
    assert np.max(np.abs(session.state["lstm_c"] - c)) <= TOL


def test_masked_model_per_step_output_equals_the_original_on_prefixes():
    from surgery import StreamSession
    from surgery.io.loading import load_model
    from surgery.ops.stream import build_sequence_model

    model = load_model(FIXTURES / "lstm_masking.keras")
    sequence = build_sequence_model(model)
    x = np.random.default_rng(5).standard_normal((1, 30, 3)).astype("float32")
    x[:, 8:12] = 0.0  # masked steps in the middle
    session = StreamSession(model)
    ys = [session.step(x[:, t]) for t in range(30)]
    for t in (1, 8, 9, 12, 13, 30):
        expected = np.asarray(sequence(x[:, :t], training=False))
        assert np.max(np.abs(ys[t - 1] - expected)) <= TOL, t


def test_states_kept_in_the_interpreter_step_like_the_general_path(streaming_model):
    """At a fixed batch the TFLite states stay in the interpreter and a (batch, features) step
    takes the short path: it gives exactly what the general path (3-D input, float64 cast)
    gives, returns arrays the next step does not overwrite, and a bad input leaves it intact."""
    from surgery import StreamSession
    from surgery.errors import UsageError

    short, general = StreamSession(streaming_model), StreamSession(streaming_model)
    assert short.backend == general.backend == "tflite"
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 40, 4)).astype("float32")
    init = {name: (rng.standard_normal(v.shape) * 0.5).astype("float32") for name, v in short.state.items()}
    short.set_state(init)
    general.set_state(init)
    ys, snapshots = [], []
    for t in range(40):
        ys.append(short.step(x[:, t]))
        snapshots.append((ys[-1].copy(), short.state))
        expected = general.step(x[:, t:t + 1].astype("float64"))[:, 0]
        assert np.array_equal(ys[-1], expected), t
        assert all(np.array_equal(short.state[k], general.state[k]) for k in init), t
        if t == 20:
            with pytest.raises(UsageError, match="does not fit"):
                short.step(np.zeros((1, 5), "float32"))
            with pytest.raises(UsageError, match="batch"):
                short.step(np.zeros((2, 4), "float32"))
    for y, (copy, state) in zip(ys, snapshots):  # nothing returned was overwritten later
        assert np.array_equal(y, copy)
    assert not np.array_equal(snapshots[0][1]["lstm_h"], short.state["lstm_h"])
    expected, states = _reference(streaming_model, x, [init[n] for n in ["lstm_h", "lstm_c", "lstm_1_h", "lstm_1_c"]])
    assert np.max(np.abs(np.stack(ys, axis=1) - expected)) <= TOL
    for name, value in states.items():
        assert np.max(np.abs(short.state[name] - value)) <= TOL


# Per-step latency is measured by benchmarks/stream_latency.py, never asserted in tests.
