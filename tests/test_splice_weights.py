"""splice --mode weights: A's recurrent weights land in exactly the right datasets of B.

Every splice here is checked three ways: the library's own static and numerical checks
(`result.integrity`, `result.verification`), and independently in the test by loading the
written file with Keras and comparing layer weights with A's (or B's) by name.
"""

import hashlib
import io
import json
import shutil
import zipfile
import zlib

import h5py
import numpy as np
import pytest
from conftest import FIXTURES, flip_stored_byte

from surgery.graph import layouts
from surgery.errors import UnreadableModelError, UsageError
from surgery.io.formats import read_artifact
from surgery.ops.splice import plan, splice
from surgery.io.weight_store import read_store, snake_case
from surgery.ops.splice.weights import produce

# ----------------------------------------------------------------------------------------
# helpers


def twin(source, dest, seed=1, strip_names=False, chunked=False):
    """A copy of a .keras file whose every float weight is perturbed (same architecture).

    strip_names: drop the `name` attributes recent Keras writes on `vars` groups (older files).
    chunked: store every dataset chunked, so B's bytes cannot be replaced in place.
    """
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(source) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    out = io.BytesIO()
    for info, data in members:
        if info.filename == "model.weights.h5":
            with h5py.File(io.BytesIO(data), "r") as src, h5py.File(out, "w") as dst:
                def copy(name, node):
                    if isinstance(node, h5py.Group):
                        group = dst.require_group(name)
                        for key, value in node.attrs.items():
                            if not (strip_names and key == "name"):
                                group.attrs[key] = value
                    elif isinstance(node, h5py.Dataset):
                        value = node[()]
                        if np.issubdtype(value.dtype, np.floating) and name.startswith("layers/"):
                            value = (value + rng.standard_normal(value.shape) * 0.1).astype(value.dtype)
                        kwargs = {"chunks": True} if chunked and value.ndim else {}
                        dst.create_dataset(name, data=value, **kwargs)
                src.visititems(copy)
    with zipfile.ZipFile(dest, "w") as archive:
        for info, data in members:
            archive.writestr(info, out.getvalue() if info.filename == "model.weights.h5" else data)
    return dest


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def walk_weights(keras, model, prefix=()):
    out = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.update(walk_weights(keras, layer, (*prefix, layer.name)))
        elif layer.weights:
            out["/".join((*prefix, layer.name))] = layer.get_weights()
    return out


def assert_spliced(keras, a_path, b_path, out_path, mapped):
    """Independent check: mapped layers hold A's weights, every other layer B's, bit for bit."""
    a = walk_weights(keras, keras.saving.load_model(a_path))
    b = walk_weights(keras, keras.saving.load_model(b_path))
    got = walk_weights(keras, keras.saving.load_model(out_path))
    assert set(got) == set(b)
    for name, weights in got.items():
        want = a[mapped[name]] if name in mapped else b[name]
        assert len(weights) == len(want), name
        for g, w in zip(weights, want):
            assert g.dtype == w.dtype and np.array_equal(g, w), (name, "differs")


# ----------------------------------------------------------------------------------------
# layouts


def test_snake_case_names_groups_like_keras(keras):
    from keras.src.utils import naming

    for name in ("LSTM", "GRU", "SimpleRNN", "ConvLSTM2D", "Bidirectional", "Functional", "LSTMCell",
                 "StackedRNNCells", "CuDNNLSTM", "TimeDistributed", "InputLayer", "RNN"):
        assert snake_case(name) == naming.to_snake_case(name)


def test_cudnn_layouts_round_trip_and_classify():
    rng = np.random.default_rng(0)
    for family, gates in (("lstm", 4), ("gru", 3)):
        keras_weights = [rng.standard_normal((5, gates * 7)), rng.standard_normal((7, gates * 7)),
                         rng.standard_normal((2, gates * 7) if family == "gru" else (gates * 7,))]
        cudnn = layouts.to_cudnn(keras_weights, family)
        source = layouts.classify({k: w.shape for k, w in zip(layouts.ROLES, cudnn)})
        dest = layouts.classify({k: w.shape for k, w in zip(layouts.ROLES, keras_weights)})
        assert source.layout == "cudnn" and dest.layout == "keras"
        transforms = layouts.plan_conversion(source, dest, source_name="a", dest_name="b")
        for transform, stored, want in zip(transforms, cudnn, keras_weights):
            assert np.array_equal(transform.apply(stored), want), (family, transform.role)


def test_cudnn_gru_does_not_fit_a_reset_before_gru():
    cudnn = layouts.classify({"kernel": (3, 12), "recurrent_kernel": (4, 12), "bias": (24,)})
    before = layouts.classify({"kernel": (3, 12), "recurrent_kernel": (4, 12), "bias": (12,)})
    with pytest.raises(UsageError, match="reset_after=True"):
        layouts.plan_conversion(cudnn, before, source_name="A:enc", dest_name="B:dec")


def test_produce_streams_bounded_pieces(tmp_path):
    """A big weight is read and written in pieces, never as one array."""
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("k", data=np.arange(64 * 32, dtype=np.float32).reshape(64, 32))
    from surgery.io.weight_store import OpenStore
    from surgery.ops.splice.weights import Assignment

    transform = layouts.WeightTransform("kernel", "copy", "kernel", (64, 32), (64, 32))
    with h5py.File(path, "r") as handle:
        for base in (0, None):  # raw byte reads, and h5py row blocks
            pieces = list(produce(OpenStore(handle, str(path), base), Assignment("k", "k", transform, "x"),
                                  np.float32, chunk_bytes=1024))
            assert len(pieces) == 8 and all(memoryview(p).nbytes == 1024 for p in pieces)
            joined = b"".join(bytes(memoryview(p).cast("B")) for p in pieces)
            assert joined == np.arange(64 * 32, dtype=np.float32).tobytes()


# ----------------------------------------------------------------------------------------
# Keras 3 files


TWINS = ["bidirectional.keras", "rnn_stacked_cells.keras", "lstm_nested.keras", "lstm_shared.keras",
         "mixed_precision.keras", "gru_reset_before.keras", "convlstm2d.keras", "seq2seq.keras", "stateful.keras"]
MORE_TWINS = ["convlstm1d.keras", "rnn_cell.keras", "multi_io.keras", "lstm_masking.keras", "go_backwards.keras",
              "simple_rnn.keras", "lstm_embedding_mask.keras", "timedistributed.keras", "gru.keras"]


@pytest.mark.parametrize("name", TWINS + [pytest.param(n, marks=pytest.mark.slow) for n in MORE_TWINS])
def test_every_recurrent_layer_of_a_twin_is_spliced(name, tmp_path, keras):
    a = twin(FIXTURES / name, tmp_path / f"a_{name}")
    b = FIXTURES / name
    before = sha256(b)
    out = tmp_path / f"out_{name}"
    result = splice(a, b, "weights", output=out)
    assert sha256(b) == before
    assert result.fast_path and result.verification["ok"] and result.verification["outputs_identical"]
    assert max(result.verification["oracle_max_abs_diff"].values()) <= 2e-2
    store = read_store(read_artifact(b))
    assert {p.dest.path for p in result.plan.weights.pairs} == {layer.path for layer in store.layers}
    assert all(p.how == "name" for p in result.plan.weights.pairs)
    assert_spliced(keras, a, b, out, {layer.path: layer.path for layer in store.layers})
    manifest = json.loads(result.manifest.read_text())
    assert manifest["operation"] == "splice" and manifest["mode"] == "weights"
    assert manifest["source"]["sha256"] == before and manifest["donor"]["sha256"] == sha256(a)
    assert manifest["integrity"]["unchanged_sha256"], "B's other weights are hashed one by one"


def test_unmapped_weights_stay_bit_identical_including_optimizer_state(tmp_path):
    a = twin(FIXTURES / "lstm_stacked.keras", tmp_path / "a.keras")
    b = FIXTURES / "lstm_stacked.keras"
    out = tmp_path / "out.keras"
    result = splice(a, b, "weights", ["lstm_1=lstm_1"], output=out)
    assert [(p.source.path, p.dest.path, p.how) for p in result.plan.weights.pairs] == [("lstm_1", "lstm_1", "map")]

    def datasets(path):
        with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as h:
            found = {}
            h.visititems(lambda n, o: found.__setitem__(n, o[()].tobytes()) if isinstance(o, h5py.Dataset) else None)
            return found

    original, written, donor = datasets(b), datasets(out), datasets(a)
    changed = {n for n in original if original[n] != written[n]}
    assert changed == {f"layers/lstm_1/cell/vars/{i}" for i in range(3)}
    assert all(written[n] == donor[n] for n in changed)
    assert any(n.startswith("optimizer/") for n in original)
    with zipfile.ZipFile(b) as x, zipfile.ZipFile(out) as y:
        assert x.read("config.json") == y.read("config.json")
        assert [i.filename for i in x.infolist()] == [i.filename for i in y.infolist()]


def test_matching_by_order_when_names_differ(tmp_path, keras):
    """lstm_sequential's `lstm` into lstm_functional's `encoder_lstm`: same shapes, other name."""
    a, b = FIXTURES / "lstm_sequential.keras", FIXTURES / "lstm_functional.keras"
    the_plan = plan(a, b, "weights")
    assert [(p.source.path, p.dest.path, p.how) for p in the_plan.weights.pairs] == [("lstm", "encoder_lstm", "order")]
    result = splice(a, b, "weights", output=tmp_path / "out.keras")
    assert_spliced(keras, a, b, tmp_path / "out.keras", {"encoder_lstm": "lstm"})
    assert result.verification["ok"]


def test_files_without_layer_names_use_class_counters(tmp_path, keras):
    """Older Keras 3 files carry no `name` attributes: groups are found by class counters."""
    b = twin(FIXTURES / "seq2seq.keras", tmp_path / "b.keras", seed=2, strip_names=True)
    a = twin(FIXTURES / "seq2seq.keras", tmp_path / "a.keras", seed=3)
    result = splice(a, b, "weights", ["decoder_lstm=decoder_lstm"], output=tmp_path / "out.keras")
    assert [c.datasets["kernel"] for c in result.plan.weights.pairs[0].dest.cells] == ["layers/lstm_1/cell/vars/0"]
    assert_spliced(keras, a, b, tmp_path / "out.keras", {"decoder_lstm": "decoder_lstm"})


def test_chunked_datasets_are_edited_in_place(tmp_path, keras):
    b = twin(FIXTURES / "bidirectional.keras", tmp_path / "b.keras", seed=2, chunked=True)
    a = twin(FIXTURES / "bidirectional.keras", tmp_path / "a.keras", seed=3)
    result = splice(a, b, "weights", output=tmp_path / "out.keras")
    manifest = json.loads(result.manifest.read_text())
    assert manifest["streamed"] is False
    assert_spliced(keras, a, b, tmp_path / "out.keras", {"bi1": "bi1", "bi2": "bi2"})


def test_legacy_h5_destination_and_weights_only_source(tmp_path, keras):
    """B a Keras 3 model.save('x.h5'); A a Keras 3 weights-only .weights.h5."""
    a_keras = twin(FIXTURES / "lstm_sequential.keras", tmp_path / "a.keras")
    model = keras.saving.load_model(a_keras)
    a = tmp_path / "a.weights.h5"
    model.save_weights(a)
    b = FIXTURES / "lstm_sequential.h5"
    out = tmp_path / "out.h5"
    result = splice(a, b, "weights", output=out)
    assert result.format == "h5" and result.fast_path and result.verification["ok"]
    assert result.plan.weights.pairs[0].source.group == "layers/lstm"
    got = keras.saving.load_model(out).get_layer("lstm").get_weights()
    want = model.get_layer("lstm").get_weights()
    assert all(np.array_equal(g, w) for g, w in zip(got, want))


def test_dry_run_plan_writes_nothing(tmp_path):
    b = tmp_path / "b.keras"
    shutil.copy(FIXTURES / "lstm_stacked.keras", b)
    result = splice(FIXTURES / "lstm_stacked.keras", b, "weights", dry_run=True)
    assert result.as_dict()["schema"] == "lstm-surgery/splice-plan/v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.keras"]


def test_default_output_sits_next_to_b(tmp_path):
    b = tmp_path / "model_b.keras"
    shutil.copy(FIXTURES / "lstm_stacked.keras", b)
    result = splice(FIXTURES / "lstm_stacked.keras", b, "weights", verify=False)
    assert result.output == tmp_path / "model_b.spliced.keras"
    assert result.manifest == tmp_path / "model_b.spliced.keras.manifest.json"


# ----------------------------------------------------------------------------------------
# errors


def test_units_mismatch_names_both_layers_and_shapes():
    with pytest.raises(UsageError) as error:
        plan(FIXTURES / "lstm_sequential.keras", FIXTURES / "lstm_masking.keras", "weights", ["lstm=lstm"])
    message = str(error.value)
    assert "A:lstm" in message and "B:lstm" in message
    assert "(3, 32)" in message and "(3, 24)" in message and "units 8 != 6" in message


def test_kind_mismatch_is_refused_with_shapes():
    with pytest.raises(UsageError) as error:
        plan(FIXTURES / "gru.keras", FIXTURES / "lstm_sequential.keras", "weights", ["gru=lstm"])
    assert "GRU" in str(error.value) and "LSTM" in str(error.value) and "different kinds" in str(error.value)


def test_unknown_layer_lists_what_there_is():
    with pytest.raises(UsageError, match="no recurrent layer 'nope'.*lstm"):
        plan(FIXTURES / "lstm_sequential.keras", FIXTURES / "lstm_stacked.keras", "weights", ["nope=lstm"])


def test_nothing_compatible_is_an_error():
    with pytest.raises(UsageError, match="no layer of A fits"):
        plan(FIXTURES / "gru.keras", FIXTURES / "lstm_sequential.keras", "weights")


def test_savedmodels_on_either_side(tmp_path, keras):
    """A SavedModel's weights live in a TF checkpoint: it is loaded through Keras (tf_keras)."""
    from surgery.io.quiet import quiet

    with quiet():
        import tf_keras as k2

        inputs = k2.Input((10, 3))
        donor = k2.Model(inputs, k2.layers.Dense(1)(k2.layers.LSTM(8, name="enc")(inputs)))
        donor.save(tmp_path / "a_sm", save_format="tf")
        inputs = k2.Input((10, 3))
        k2.Model(inputs, k2.layers.Dense(2)(k2.layers.LSTM(8, name="dec")(inputs))).save(tmp_path / "b_sm",
                                                                                          save_format="tf")
    result = splice(tmp_path / "a_sm", FIXTURES / "lstm_functional.keras", "weights", output=tmp_path / "o.keras")
    assert result.fast_path and result.verification["ok"]
    got = keras.saving.load_model(tmp_path / "o.keras").get_layer("encoder_lstm").get_weights()
    assert all(np.array_equal(g, w) for g, w in zip(got, donor.get_layer("enc").get_weights()))
    result = splice(FIXTURES / "lstm_sequential.keras", tmp_path / "b_sm", "weights", output=tmp_path / "o_sm")
    assert result.format == "savedmodel" and not result.fast_path and result.verification["ok"]
    assert json.loads(result.manifest.read_text())["source"]["sha256"]


def test_corrupt_b_weights_fail_and_write_nothing(tmp_path):
    """A flipped byte in a weight of B that is NOT replaced: B's CRC check refuses it."""
    a = twin(FIXTURES / "lstm_stacked.keras", tmp_path / "a.keras")
    b = tmp_path / "b.keras"
    shutil.copy(FIXTURES / "lstm_stacked.keras", b)
    flip_stored_byte(b, "layers/dense/vars/0")
    out = tmp_path / "out.keras"
    with pytest.raises(UnreadableModelError, match="corrupt"):
        splice(a, b, "weights", ["lstm=lstm"], output=out, verify=False)
    assert not out.exists() and not list(tmp_path.glob(".out.keras*"))


def test_corrupt_a_weights_fail_and_write_nothing(tmp_path):
    """A flipped byte in a weight of A that IS copied into B: A's CRC check refuses it rather
    than the result carrying it under a fresh, valid CRC."""
    a = twin(FIXTURES / "lstm_stacked.keras", tmp_path / "a.keras")
    flip_stored_byte(a, "layers/lstm/cell/vars/0")
    out = tmp_path / "out.keras"
    with pytest.raises(UnreadableModelError, match="corrupt"):
        splice(a, FIXTURES / "lstm_stacked.keras", "weights", ["lstm=lstm"], output=out, verify=False)
    assert not out.exists() and not list(tmp_path.glob(".out.keras*"))


class _Unseekable(io.RawIOBase):
    """A write-only stream: zipfile writes a data descriptor after each member."""

    def __init__(self, sink):
        self._sink = sink

    def writable(self):
        return True

    def write(self, data):
        return self._sink.write(data)


@pytest.mark.parametrize("descriptors", [False, True])
def test_stitched_member_keeps_b_bytes_and_gets_a_right_crc(descriptors, tmp_path, keras):
    """The new weights member is B's bytes with exactly the mapped datasets' ranges replaced by
    A's, and its CRC-32 (combined from the pieces, never read back) is right in the central
    directory and the local header, or in the data descriptor when B has them (as a streaming
    zip writer makes)."""
    a = twin(FIXTURES / "lstm_stacked.keras", tmp_path / "a.keras")
    b = tmp_path / "b.keras"
    with zipfile.ZipFile(FIXTURES / "lstm_stacked.keras") as source, open(b, "wb") as raw, \
            zipfile.ZipFile(_Unseekable(raw) if descriptors else raw, "w") as archive:
        for info in source.infolist():
            archive.writestr(info, source.read(info))
    with zipfile.ZipFile(b) as archive:
        assert bool(archive.getinfo("model.weights.h5").flag_bits & 0x08) == descriptors
    out = tmp_path / "out.keras"
    result = splice(a, b, "weights", ["lstm=lstm"], output=out, verify=False)
    assert result.fast_path and json.loads(result.manifest.read_text())["streamed"] is True

    def member(path):
        with zipfile.ZipFile(path) as archive:
            assert archive.testzip() is None  # every CRC-32 recomputed from the bytes
            return archive.read("model.weights.h5")

    new, old, donor = member(out), member(b), member(a)
    replaced = bytearray(old)
    with h5py.File(io.BytesIO(old)) as b_store, h5py.File(io.BytesIO(donor)) as a_store:
        for role in ("0", "1", "2"):
            name = f"layers/lstm/cell/vars/{role}"
            at, size = b_store[name].id.get_offset(), b_store[name].nbytes
            source = a_store[name].id.get_offset()
            replaced[at:at + size] = donor[source:source + size]
    assert new == bytes(replaced) and new != old
    raw = out.read_bytes()
    with zipfile.ZipFile(out) as archive:
        info = archive.getinfo("model.weights.h5")
        from surgery.io.formats.keras_zip import stored_data_offset

        descriptor = stored_data_offset(str(out), archive, info) + info.compress_size
    header_crc = int.from_bytes(raw[info.header_offset + 14:info.header_offset + 18], "little")
    assert info.CRC == zlib.crc32(new)
    if descriptors:
        assert raw[descriptor:descriptor + 4] == b"PK\x07\x08"
        assert int.from_bytes(raw[descriptor + 4:descriptor + 8], "little") == info.CRC
        assert header_crc == 0  # deferred to the descriptor, as in B
    else:
        assert header_crc == info.CRC
    assert_spliced(keras, a, b, out, {"lstm": "lstm"})


# ----------------------------------------------------------------------------------------
# Keras 2 and CuDNN layouts (files written by tf_keras)


@pytest.fixture(scope="module")
def keras2_cudnn(tmp_path_factory):
    """A tf_keras model with CuDNNLSTM + CuDNNGRU (built on CPU, never run), its weights set from
    real Keras-layout weights through the inverse transformation; and the tf_keras LSTM/GRU
    model that tf_keras itself loads those CuDNN weights into (its own conversion)."""
    from surgery.io.quiet import import_keras, quiet

    import_keras()
    with quiet():
        import tf_keras as k2
        from tf_keras.src.layers.rnn.cudnn_gru import CuDNNGRU
        from tf_keras.src.layers.rnn.cudnn_lstm import CuDNNLSTM

        rng = np.random.default_rng(0)
        keras_layout = {
            "enc": [rng.standard_normal(s).astype("float32") for s in ((3, 32), (8, 32), (32,))],
            "dec": [rng.standard_normal(s).astype("float32") for s in ((8, 12), (4, 12), (2, 12))],
        }
        inputs = k2.Input((10, 3))
        hidden = CuDNNLSTM(8, return_sequences=True, name="enc")(inputs)
        hidden = CuDNNGRU(4, name="dec")(hidden)
        model = k2.Model(inputs, k2.layers.Dense(1, name="head")(hidden))
        model.get_layer("enc").set_weights(layouts.to_cudnn(keras_layout["enc"], "lstm"))
        model.get_layer("dec").set_weights(layouts.to_cudnn(keras_layout["dec"], "gru"))
        folder = tmp_path_factory.mktemp("k2")
        model.save_weights(folder / "cudnn.h5")
        model.save(folder / "cudnn_full.h5")
        inputs = k2.Input((10, 3))
        hidden = k2.layers.LSTM(8, return_sequences=True, name="enc")(inputs)
        hidden = k2.layers.GRU(4, reset_after=True, name="dec")(hidden)
        reference = k2.Model(inputs, k2.layers.Dense(1, name="head")(hidden))
        reference.load_weights(folder / "cudnn.h5")  # tf_keras converts CuDNN -> LSTM/GRU itself
    return folder, keras_layout, {n: reference.get_layer(n).get_weights() for n in ("enc", "dec")}


def test_inverse_layout_matches_what_tf_keras_converts(keras2_cudnn):
    """Our to_cudnn is the exact inverse of tf_keras' own CuDNN -> Keras conversion."""
    _folder, keras_layout, tf_keras_loaded = keras2_cudnn
    for name in ("enc", "dec"):
        for ours, theirs in zip(keras_layout[name], tf_keras_loaded[name]):
            assert np.array_equal(ours, theirs), name


@pytest.mark.parametrize("source", ["cudnn.h5", "cudnn_full.h5"])
def test_cudnn_weights_splice_into_keras3_lstm_and_gru(source, keras2_cudnn, tmp_path, keras):
    folder, keras_layout, _ = keras2_cudnn
    inputs = keras.Input((10, 3))
    hidden = keras.layers.LSTM(8, return_sequences=True, name="enc")(inputs)
    hidden = keras.layers.GRU(4, name="dec")(hidden)
    keras.Model(inputs, keras.layers.Dense(1, name="head")(hidden)).save(tmp_path / "b.keras")
    the_plan = plan(folder / source, tmp_path / "b.keras", "weights")
    assert [(p.source.class_name, p.dest.class_name, p.how) for p in the_plan.weights.pairs] == \
        [("CuDNNLSTM", "LSTM", "name"), ("CuDNNGRU", "GRU", "name")]
    result = splice(folder / source, tmp_path / "b.keras", "weights", output=tmp_path / "out.keras")
    # B's GRU/LSTM now compute with A's weights: the NumPy oracle agrees call by call
    assert result.verification["ok"]
    assert max(result.verification["oracle_max_abs_diff"].values()) < 1e-5
    written = keras.saving.load_model(tmp_path / "out.keras")
    for name in ("enc", "dec"):
        for got, want in zip(written.get_layer(name).get_weights(), keras_layout[name]):
            assert np.array_equal(got, want), name


def test_keras2_lstm_model_into_keras3(tmp_path, keras):
    from surgery.io.quiet import quiet

    with quiet():
        import tf_keras as k2

        inputs = k2.Input((10, 3))
        hidden = k2.layers.Bidirectional(k2.layers.LSTM(4, return_sequences=True), name="bi")(inputs)
        hidden = k2.layers.SimpleRNN(5, name="rnn")(hidden)
        donor = k2.Model(inputs, k2.layers.Dense(1)(hidden))
        donor.save(tmp_path / "a.h5")
    inputs = keras.Input((10, 3))
    hidden = keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True), name="bi")(inputs)
    hidden = keras.layers.SimpleRNN(5, name="rnn")(hidden)
    keras.Model(inputs, keras.layers.Dense(1)(hidden)).save(tmp_path / "b.keras")
    result = splice(tmp_path / "a.h5", tmp_path / "b.keras", "weights", output=tmp_path / "out.keras")
    assert result.verification["ok"]
    written = keras.saving.load_model(tmp_path / "out.keras")
    for name in ("bi", "rnn"):
        for got, want in zip(written.get_layer(name).get_weights(), donor.get_layer(name).get_weights()):
            assert np.array_equal(got, want), name
