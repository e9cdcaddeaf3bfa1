"""extract-states: every data format in and out, bad data, trajectories vs the NumPy oracle,
interruption, Keras 2, live models, inputs never mutated, and the Beam DirectRunner."""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from conftest import FIXTURES, ROOT
from surgery.errors import NotSupportedError, UsageError
from surgery.ops.extract import extract_states
from surgery.io.loading import load_model
from surgery.check.verify import random_inputs

MASKING = FIXTURES / "lstm_masking.keras"
MULTI = FIXTURES / "multi_io.keras"
TRAJECTORY_KINDS = ["lstm_masking", "bidirectional", "rnn_stacked_cells", "convlstm1d", "convlstm2d", "go_backwards",
                    "gru", "gru_reset_before", "simple_rnn", "lstm_embedding_mask", "seq2seq", "lstm_shared"]


@pytest.fixture(scope="module")
def masking():
    model = load_model(MASKING)
    return model, random_inputs(model, batch=40, seed=3)[0]


@pytest.fixture(scope="module")
def multi():
    model = load_model(MULTI)
    seq, aux = random_inputs(model, batch=30, seed=4)
    return model, {"seq": seq, "aux": aux}


def same(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def read_npz(path):
    with np.load(path) as loaded:
        return {k: loaded[k] for k in loaded.files}


def read_parquet(path):
    import pyarrow.parquet as pq

    from surgery.ops.extract.readers import column_to_numpy

    table = pq.read_table(path)
    return {name: column_to_numpy(table.column(name).combine_chunks(), name) for name in table.column_names}


# ---------------------------------------------------------------- data in

def test_npy_npz_folder_glob_equal_the_in_memory_result(tmp_path, masking):
    model, x = masking
    expected = extract_states(model, x, batch_size=16).arrays
    np.save(tmp_path / "x.npy", x)
    np.savez_compressed(tmp_path / "x.npz", input_layer=x)
    folder = tmp_path / "parts"
    folder.mkdir()
    np.save(folder / "a.npy", x[:25])
    np.savez(folder / "b.npz", x[25:])
    for data in (tmp_path / "x.npy", tmp_path / "x.npz", folder, str(folder / "*.np?")):
        same(extract_states(model, data, batch_size=16).arrays, expected) if data != folder and "*" not in str(data) \
            else _close(extract_states(model, data, batch_size=16).arrays, expected)


def _close(a, b):
    # Another chunking changes oneDNN's summation order: float rounding only.
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_multi_input_npz_tfrecord_and_parquet(tmp_path, multi):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import tensorflow as tf

    model, arrays = multi
    expected = extract_states(model, arrays, batch_size=8).arrays
    np.savez(tmp_path / "m.npz", aux=arrays["aux"], seq=arrays["seq"])  # by name, any order
    with tf.io.TFRecordWriter(str(tmp_path / "m.tfrecord")) as writer:
        for i in range(len(arrays["seq"])):
            feature = {k: tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[tf.io.serialize_tensor(v[i]).numpy()])) for k, v in arrays.items()}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    pq.write_table(pa.table({"seq": [s.tolist() for s in arrays["seq"]], "aux": [a.tolist() for a in arrays["aux"]]}),
                   tmp_path / "m.parquet", row_group_size=7)
    for name in ("m.npz", "m.tfrecord", "m.parquet"):
        same(extract_states(model, tmp_path / name, batch_size=8).arrays, expected)


def test_tfrecord_of_bare_tensors(tmp_path, masking):
    import tensorflow as tf

    model, x = masking
    with tf.io.TFRecordWriter(str(tmp_path / "x.tfrecord")) as writer:
        for row in x:
            writer.write(tf.io.serialize_tensor(row).numpy())
    same(extract_states(model, tmp_path / "x.tfrecord", batch_size=16).arrays,
         extract_states(model, x, batch_size=16).arrays)


def test_npz_members_are_read_in_chunks(tmp_path, masking):
    from surgery.ops.extract.readers import NpzFile, specs_for

    model, x = masking
    np.savez_compressed(tmp_path / "x.npz", x)
    chunks = list(NpzFile(tmp_path / "x.npz", specs_for(model)).chunks(6))
    assert [len(c[0]) for c in chunks] == [6] * 6 + [4]
    np.testing.assert_array_equal(np.concatenate([c[0] for c in chunks]), x)


# ---------------------------------------------------------------- data out

@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_output_file_and_manifest(tmp_path, masking, suffix):
    model, x = masking
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / f"states{suffix}"
    result = extract_states(MASKING, tmp_path / "x.npy", out, batch_size=16, trajectory=True)
    got = read_npz(out) if suffix == ".npz" else read_parquet(out)
    same(got, extract_states(model, x, batch_size=16, trajectory=True).arrays)
    assert sorted(got) == ["lstm_1_c", "lstm_1_h", "lstm_1_mask", "lstm_c", "lstm_h", "lstm_mask"]
    manifest = json.loads(result.manifest.read_text())
    assert manifest["operation"] == "extract-states" and manifest["sequences"] == 40
    assert manifest["model"]["sha256"] and manifest["data"]["files"] == [{"path": str(tmp_path / "x.npy"),
                                                                         "sequences": 40}]
    assert {a["key"]: a["shape"] for a in manifest["arrays"]}["lstm_h"] == [40, 10, 6]
    assert manifest["check"]["ok"]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["x.npy", out.name, out.name + ".manifest.json"])


def test_existing_output_needs_force(tmp_path, masking):
    model, x = masking
    out = tmp_path / "s.npz"
    out.write_bytes(b"old")
    with pytest.raises(UsageError, match="exists"):
        extract_states(model, x, out)
    extract_states(model, x, out, force=True)
    assert "lstm_h" in read_npz(out)


# ---------------------------------------------------------------- bad data

def _bad(tmp_path, name, array):
    path = tmp_path / name
    (np.save if name.endswith(".npy") else np.savez)(path, array) if not isinstance(array, dict) \
        else np.savez(path, **array)
    return path


@pytest.mark.parametrize("name, array, words", [
    ("shape.npy", np.zeros((4, 10, 5), "float32"), ["shape.npy", "'array'", "(4, 10, 5)"]),
    ("rank.npy", np.zeros((4, 10), "float32"), ["rank.npy", "shape (4, 10)"]),
    ("nan.npz", {"input_layer": np.full((4, 10, 3), np.nan, "float32")}, ["nan.npz", "'input_layer'", "NaN"]),
    ("names.npz", {"a": np.zeros((4, 10, 3)), "b": np.zeros((4, 10, 3))}, ["names.npz", "['a', 'b']"]),
    ("text.npy", np.array([["a"] * 3] * 4), ["text.npy", "not numeric"]),
])
def test_bad_data_is_one_line_naming_file_and_array_and_writes_nothing(tmp_path, masking, name, array, words):
    path = _bad(tmp_path, name, array)
    out = tmp_path / "s.npz"
    with pytest.raises(UsageError) as caught:
        extract_states(masking[0], path, out)
    message = str(caught.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_ids_out_of_range_and_corrupt_files(tmp_path):
    model = load_model(FIXTURES / "lstm_embedding_mask.keras")
    ids = random_inputs(model, batch=4)[0]
    ids[0, 0] = 10_000
    with pytest.raises(UsageError, match="ids .* Embedding"):
        extract_states(model, ids)
    for name in ("x.npz", "x.parquet", "x.tfrecord", "x.npy"):
        (tmp_path / name).write_bytes(b"not data at all" * 10)
        with pytest.raises(UsageError, match=name):
            extract_states(model, tmp_path / name, tmp_path / "o.npz")
    assert not (tmp_path / "o.npz").exists()


def test_bad_chunk_late_in_a_folder_leaves_no_output(tmp_path, masking):
    model, x = masking
    np.save(tmp_path / "a.npy", x)
    np.save(tmp_path / "b.npy", np.zeros((3, 10, 4), "float32"))
    out = tmp_path.parent / f"{tmp_path.name}_out.npz"
    with pytest.raises(UsageError, match="b.npy"):
        extract_states(model, tmp_path, out)
    assert not out.exists() and not list(tmp_path.parent.glob(f".{out.name}*"))


def test_cli_bad_data_exit_2(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((4, 10, 5), "float32"))
    run = subprocess.run([sys.executable, str(ROOT / "cli.py"), "extract-states", str(MASKING), "--data",
                          str(tmp_path / "bad.npy"), "-o", str(tmp_path / "o.npz")], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "bad.npy" in lines[0] and "'array'" in lines[0]
    assert not (tmp_path / "o.npz").exists()


# ---------------------------------------------------------------- trajectories

@pytest.mark.parametrize("name", TRAJECTORY_KINDS)
def test_trajectory_matches_oracle_for_each_layer_kind(name):
    model = load_model(FIXTURES / f"{name}.keras")
    values = random_inputs(model, batch=6, seed=1)
    result = extract_states(model, values if len(values) > 1 else values[0], trajectory=True, batch_size=4)
    assert all(c.ok for c in result.checks.values()) and result.checks, result.check
    final = extract_states(model, values if len(values) > 1 else values[0], batch_size=4).arrays
    for key, value in final.items():
        trajectory = result.arrays[key]
        site = key.rsplit("_", 1)[0]
        backward = "_bw_" in key or name == "go_backwards" and key in ("lstm_h", "lstm_c")
        step = 0 if backward else -1  # the state after the whole sequence
        np.testing.assert_allclose(trajectory[:, step], value, rtol=1e-5, atol=1e-6, err_msg=key)
        mask_key = next(k for k in result.arrays if k.endswith("_mask") and key.startswith(k[:-5]))
        assert result.arrays[mask_key].shape == trajectory.shape[:2], site


def test_masked_steps_carry_the_state_and_the_mask_is_written(masking):
    model, x = masking
    result = extract_states(model, x[:4], trajectory=True).arrays
    mask = result["lstm_mask"]
    assert mask.dtype == bool and not mask[1, -2:].any() and mask[0].all()  # row 1 has a zero-padded tail
    np.testing.assert_array_equal(result["lstm_c"][1, -1], result["lstm_c"][1, -3])
    assert not np.array_equal(result["lstm_c"][0, -1], result["lstm_c"][0, -3])


def test_nested_site_trajectory_is_not_supported():
    with pytest.raises(NotSupportedError, match="nested"):
        extract_states(load_model(FIXTURES / "lstm_nested.keras"), np.zeros((2, 10, 3), "float32"), trajectory=True)


def test_layer_selection(masking):
    model, x = masking
    assert sorted(extract_states(model, x, layers=["lstm_1"]).arrays) == ["lstm_1_c", "lstm_1_h"]
    with pytest.raises(UsageError):
        extract_states(model, x, layers=["nope"])


# ---------------------------------------------------------------- models and inputs

def test_keras2_file_final_in_tf_keras_and_trajectory_translated():
    sequential = FIXTURES / "keras2" / "k2_sequential.h5"
    x = random_inputs(load_model(sequential), batch=5)[0]
    assert extract_states(sequential, x).checks  # final states: run in tf_keras
    functional = FIXTURES / "keras2" / "k2_functional.h5"
    values = random_inputs(load_model(functional), batch=5)
    values = values if len(values) > 1 else values[0]
    final = extract_states(functional, values)
    trajectory = extract_states(functional, values, trajectory=True)  # run as its Keras 3 translation
    assert final.checks and trajectory.checks
    for key, value in final.arrays.items():
        np.testing.assert_allclose(trajectory.arrays[key][:, -1], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_path_or_live_model_and_inputs_never_mutated(tmp_path, masking):
    model, x = masking
    frozen = x.copy()
    x.flags.writeable = False
    before = [w.copy() for w in model.get_weights()]
    outputs = len(model.outputs)
    by_model = extract_states(model, x, batch_size=16).arrays
    by_path = extract_states(MASKING, x, batch_size=16).arrays
    same(by_model, by_path)
    np.testing.assert_array_equal(x, frozen)
    assert len(model.outputs) == outputs
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    x.flags.writeable = True


# ---------------------------------------------------------------- interruption

def test_sigterm_leaves_no_partial_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    np.save(data / "x.npy", rng.standard_normal((200_000, 10, 3)).astype("float32"))
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop("LSTM_SURGERY_SANDBOX", None)
    process = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "extract-states", str(MASKING), "--data",
                                str(data / "x.npy"), "-o", str(out / "s.npz"), "--trajectory", "--batch-size", "64"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None and not any(out.iterdir()):
        time.sleep(0.1)
    assert process.poll() is None, process.communicate()
    time.sleep(1.0)  # well inside the streaming loop
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------- Apache Beam

def test_beam_direct_runner_equals_local(tmp_path, multi):
    pytest.importorskip("apache_beam", reason="Apache Beam is not installed: pip install 'lstm-surgery[beam]'")
    model, arrays = multi
    np.savez(tmp_path / "m.npz", **arrays)
    local = extract_states(MULTI, tmp_path / "m.npz", tmp_path / "local.npz", batch_size=8)
    beam = extract_states(MULTI, tmp_path / "m.npz", tmp_path / "beam.npz", batch_size=8, runner="beam",
                          beam_options=["--direct_num_workers=1"])
    assert beam.runner == "beam:DirectRunner" and beam.sequences == local.sequences == 30
    # Beam batches rows differently: float rounding only (oneDNN sums in another order).
    _close(read_npz(tmp_path / "beam.npz"), read_npz(tmp_path / "local.npz"))
    manifest = json.loads(beam.manifest.read_text())
    assert manifest["runner"] == "beam:DirectRunner" and manifest["check"]["ok"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_beam_ptransform_in_a_pipeline(multi):
    beam = pytest.importorskip("apache_beam", reason="Apache Beam is not installed: pip install 'lstm-surgery[beam]'")
    from apache_beam.testing.util import assert_that

    from surgery.ops.extract.beam import ExtractStates

    model, arrays = multi
    local = extract_states(model, arrays, batch_size=8).arrays
    examples = [(i, (arrays["seq"][i], arrays["aux"][i])) for i in range(5)]

    def check(results):
        assert len(results) == 5
        for key, states in results:
            for name, value in states.items():
                np.testing.assert_allclose(value, local[name][key], rtol=1e-5, atol=1e-6)

    with beam.Pipeline() as pipeline:
        results = pipeline | beam.Create(examples) | ExtractStates(str(MULTI), batch_size=4)
        assert_that(results, check)


def test_parquet_output_is_a_zip_free_table(tmp_path, masking):
    model, x = masking
    extract_states(model, x, tmp_path / "s.parquet")
    assert not zipfile.is_zipfile(tmp_path / "s.parquet")
