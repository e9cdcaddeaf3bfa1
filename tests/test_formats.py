"""Static readers and writers: real files of every kind read correctly, a generated corpus
of bad inputs fails with UnreadableModelError only, and nothing imports TensorFlow."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from surgery.io.artifact import ModelArtifact
from surgery.errors import NotSupportedError, UnreadableModelError, UsageError
from surgery.io.formats import read_artifact, write_h5_with_config, write_keras_zip
from surgery.io.formats.savedmodel import (
    ProtobufDecodeError,
    decode_saved_metadata,
    iter_fields,
    read_varint,
)

try:
    from tests import malicious
except ImportError:  # tests/ is not a package: pytest put it on sys.path itself
    import malicious

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def reference_models(tmp_path_factory):
    return malicious.build_reference_models(tmp_path_factory.getbasetemp() / "reference_models")


@pytest.fixture(scope="session")
def reference_bytes(reference_models):
    return {
        name: path.read_bytes() for name, path in reference_models.items() if path.is_file()
    } | {
        "tk_metadata_pb": (reference_models["tk_savedmodel"] / "keras_metadata.pb").read_bytes()
    }


def keras_version() -> str:
    from importlib.metadata import version

    return version("keras")


def layer_class_names(config: dict) -> list[str]:
    return [layer["class_name"] for layer in config["config"]["layers"]]


def h5_shapes(source) -> dict[str, tuple[int, ...]]:
    shapes = {}
    with h5py.File(source, "r") as handle:
        handle.visititems(
            lambda name, node: shapes.__setitem__(name, node.shape)
            if isinstance(node, h5py.Dataset) else None
        )
    return shapes


# ----------------------------------------------------------------------------------------
# Real files of every kind


def test_keras3_keras_zip(reference_models):
    path = reference_models["k3_keras"]
    artifact = read_artifact(path)

    assert (artifact.format, artifact.family) == ("keras", "keras3")
    assert artifact.keras_version == keras_version()
    assert artifact.path == str(path)
    assert artifact.model_config["class_name"] == "Functional"
    assert "compile_config" in artifact.model_config
    assert layer_class_names(artifact.model_config) == [
        "InputLayer", "Embedding", "NotEqual", "Functional", "Bidirectional", "TimeDistributed"
    ]
    with zipfile.ZipFile(path) as archive:
        expected = h5_shapes(io.BytesIO(archive.read("model.weights.h5")))
    assert artifact.weight_shapes == expected
    assert artifact.weight_shapes["layers/bidirectional/forward_layer/cell/vars/0"] == (3, 12)


def test_keras3_sequential_keras_zip(reference_models):
    artifact = read_artifact(str(reference_models["k3_sequential"]))
    assert artifact.model_config["class_name"] == "Sequential"
    assert layer_class_names(artifact.model_config) == ["InputLayer", "Masking", "LSTM"]
    assert artifact.weight_shapes["layers/lstm/cell/vars/0"] == (3, 16)


def test_keras3_legacy_h5(reference_models):
    artifact = read_artifact(reference_models["k3_h5"])
    assert (artifact.format, artifact.family) == ("h5", "keras3")
    assert artifact.keras_version.startswith("3.")
    assert artifact.model_config["class_name"] == "Functional"
    assert "Bidirectional" in layer_class_names(artifact.model_config)
    assert artifact.weight_shapes == h5_shapes(reference_models["k3_h5"])


def test_keras3_weights_only_h5(reference_models):
    artifact = read_artifact(reference_models["k3_weights"])
    assert artifact.weights_only
    assert (artifact.format, artifact.family, artifact.model_config) == ("h5", "keras3", None)
    assert artifact.weight_shapes == h5_shapes(reference_models["k3_weights"])
    assert len(artifact.weight_shapes) >= 10


def test_tf_keras_h5(reference_models):
    artifact = read_artifact(reference_models["tk_h5"])
    assert (artifact.format, artifact.family, artifact.keras_version) == ("h5", "keras2", "2.21.0")
    assert layer_class_names(artifact.model_config) == [
        "InputLayer", "Masking", "Bidirectional", "LSTM"
    ]
    assert artifact.weight_shapes["model_weights/last_lstm/last_lstm/lstm_cell/kernel:0"] == (8, 8)


def test_tf_keras_keras_zip_is_family_keras2(reference_models):
    artifact = read_artifact(reference_models["tk_keras"])
    assert (artifact.format, artifact.family) == ("keras", "keras2")
    assert artifact.keras_version == "2.21.0"
    assert artifact.model_config["module"].startswith("tf_keras.")
    assert "LSTM" in layer_class_names(artifact.model_config)
    assert artifact.weight_shapes


@pytest.mark.parametrize("name", ["tk_savedmodel", "tk_savedmodel_no_traces"])
def test_tf_keras_savedmodel(reference_models, name):
    path = reference_models[name]
    assert (path / "keras_metadata.pb").is_file()
    artifact = read_artifact(path)

    assert (artifact.format, artifact.family, artifact.keras_version) == (
        "savedmodel", "keras2", "2.21.0")
    assert "LSTM" in layer_class_names(artifact.model_config)
    lstm = next(l for l in artifact.model_config["config"]["layers"] if l["class_name"] == "LSTM")
    assert lstm["config"]["units"] == 2


def test_savedmodel_config_matches_what_tf_keras_would_build(reference_models):
    import tf_keras

    path = reference_models["tk_savedmodel"]
    artifact = read_artifact(path)
    rebuilt = tf_keras.Sequential.from_config(artifact.model_config["config"])
    assert [layer.__class__.__name__ for layer in rebuilt.layers] == ["Masking", "LSTM"]


def test_hand_decoder_agrees_with_protobuf(reference_models):
    from tf_keras.protobuf import saved_metadata_pb2

    for name in ("tk_savedmodel", "tk_savedmodel_no_traces"):
        data = (reference_models[name] / "keras_metadata.pb").read_bytes()
        expected = saved_metadata_pb2.SavedMetadata()
        expected.ParseFromString(data)
        decoded = decode_saved_metadata(data)
        assert len(decoded) == len(expected.nodes) > 3
        for mine, theirs in zip(decoded, expected.nodes):
            assert (mine.node_id, mine.node_path, mine.identifier, mine.metadata) == (
                theirs.node_id, theirs.node_path, theirs.identifier, theirs.metadata)
            assert (mine.version.producer, mine.version.min_consumer,
                    list(mine.version.bad_consumers)) == (
                theirs.version.producer, theirs.version.min_consumer,
                list(theirs.version.bad_consumers))


def test_keras3_export_savedmodel_is_not_supported(reference_models):
    path = reference_models["k3_export"]
    with pytest.raises(NotSupportedError) as refused:
        read_artifact(path)
    message = str(refused.value)
    assert "keras_metadata.pb" in message and str(path) in message and "\n" not in message
    assert refused.value.exit_code == 4


@pytest.mark.parametrize("name", sorted(malicious.REFERENCE_FILES))
def test_reading_leaves_the_input_byte_identical(reference_models, name):
    path = reference_models[name]
    before = sha256_of(path)
    try:
        read_artifact(path)
    except NotSupportedError:
        pass  # the Keras 3 export
    assert sha256_of(path) == before


def test_kind_is_detected_by_content_not_extension(reference_models, tmp_path):
    zip_named_h5 = shutil.copyfile(reference_models["k3_keras"], tmp_path / "model.h5")
    h5_named_keras = shutil.copyfile(reference_models["tk_h5"], tmp_path / "model.keras")
    no_extension = shutil.copyfile(reference_models["k3_keras"], tmp_path / "model")
    assert read_artifact(zip_named_h5).format == "keras"
    assert read_artifact(h5_named_keras).format == "h5"
    assert read_artifact(no_extension).format == "keras"


def test_hdf5_with_user_block_is_detected(tmp_path):
    path = tmp_path / "userblock.h5"
    with h5py.File(path, "w", userblock_size=1024) as handle:
        handle.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {}})
        handle.attrs["keras_version"] = "2.21.0"
    artifact = read_artifact(path)
    assert (artifact.format, artifact.family) == ("h5", "keras2")


def test_hdf5_model_config_as_bytes_is_accepted(tmp_path):
    path = tmp_path / "bytes_config.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs["model_config"] = np.bytes_(json.dumps({"class_name": "M", "config": {}}))
        handle.attrs["keras_version"] = np.bytes_("2.4.0")
    artifact = read_artifact(path)
    assert artifact.model_config == {"class_name": "M", "config": {}}
    assert artifact.keras_version == "2.4.0"


def test_h5_links_are_not_followed(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle["secret"] = np.zeros(3)
    path = tmp_path / "links.h5"
    with h5py.File(path, "w") as handle:
        handle["weights/kernel"] = np.zeros((2, 3))
        handle["weights/loop"] = handle["/"]  # a hard-link cycle
        handle["soft"] = h5py.SoftLink("/weights")
        handle["external"] = h5py.ExternalLink(str(other), "/")
    assert read_artifact(path).weight_shapes == {"weights/kernel": (2, 3)}


def test_reading_imports_no_tensorflow_or_keras(reference_models, tmp_path):
    paths = [str(reference_models[name]) for name in (
        "k3_keras", "k3_h5", "k3_weights", "tk_h5", "tk_keras", "tk_savedmodel")]
    script = f"""
import sys
from surgery.io.formats import read_artifact, write_keras_zip, write_h5_with_config
from surgery.io.safety import scan_config
from surgery.errors import NotSupportedError
for path in {paths!r}:
    artifact = read_artifact(path)
    if artifact.model_config is not None:
        scan_config(artifact.model_config)
try:
    read_artifact({str(reference_models["k3_export"])!r})
except NotSupportedError:
    pass
new_config = {{"class_name": "X", "config": {{}}}}
write_keras_zip({paths[0]!r}, {str(tmp_path / "copy.keras")!r}, new_config)
write_h5_with_config({paths[1]!r}, {str(tmp_path / "copy.h5")!r}, new_config)
heavy = sorted(m for m in sys.modules
               if m.split(".")[0] in ("tensorflow", "keras", "tf_keras", "google"))
assert not heavy, heavy
print("clean")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


# ----------------------------------------------------------------------------------------
# Protobuf decoder


def test_varint_decoding():
    assert read_varint(b"\x00", 0, 1) == (0, 1)
    assert read_varint(b"\xac\x02", 0, 2) == (300, 2)
    assert read_varint(b"\xff" * 9 + b"\x01", 0, 10) == (2**64 - 1, 10)
    with pytest.raises(ProtobufDecodeError):
        read_varint(b"\xff\xff", 0, 2)  # truncated
    with pytest.raises(ProtobufDecodeError):
        read_varint(b"\xff" * 11, 0, 11)  # too long


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def length_field(number: int, payload: bytes) -> bytes:
    return encode_varint(number << 3 | 2) + encode_varint(len(payload)) + payload


def varint_field(number: int, value: int) -> bytes:
    return encode_varint(number << 3) + encode_varint(value)


def saved_object(node_id: int, node_path: str, identifier: str, metadata: str,
                 version: bytes = b"") -> bytes:
    return (varint_field(2, node_id % 2**64) + length_field(3, node_path.encode())
            + length_field(4, identifier.encode()) + length_field(5, metadata.encode())
            + (length_field(6, version) if version else b""))


def test_decoder_handles_negative_int32_packed_repeated_and_unknown_fields():
    packed = encode_varint(5) + encode_varint(7)
    version = varint_field(1, 2) + varint_field(2, 1) + length_field(3, packed)
    message = (
        length_field(1, saved_object(-1, "root", "_tf_keras_model", "{}", version))
        + varint_field(9, 42)  # unknown field: skipped
        + encode_varint(10 << 3 | 5) + b"\x01\x02\x03\x04"  # unknown fixed32
        + encode_varint(11 << 3 | 1) + bytes(8)  # unknown fixed64
    )
    [node] = decode_saved_metadata(message)
    assert (node.node_id, node.node_path, node.identifier) == (-1, "root", "_tf_keras_model")
    assert node.version.bad_consumers == (5, 7)


def test_every_truncation_of_a_message_is_a_decode_error():
    message = length_field(1, saved_object(0, "root", "_tf_keras_network", '{"a": 1}'))
    for end in range(1, len(message)):
        with pytest.raises(ProtobufDecodeError):
            decode_saved_metadata(message[:end])


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=200))
def test_decoder_never_raises_anything_but_decode_error(data):
    try:
        decode_saved_metadata(data)
        list(iter_fields(data))
    except ProtobufDecodeError:
        pass


# ----------------------------------------------------------------------------------------
# Bad inputs: a generated corpus


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            digest.update(str(child.relative_to(path)).encode())
            if child.is_file():
                digest.update(child.read_bytes())
    elif path.is_file():
        digest.update(path.read_bytes())
    return digest.hexdigest()


def make_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


METADATA = json.dumps({"keras_version": "3.15.1"}).encode()
CONFIG = json.dumps({"class_name": "Sequential", "config": {"name": "s", "layers": []}}).encode()
DEEP_JSON = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"class_name": "X", "config": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_000 + b"}"


def patch_member_sizes(path: Path, name: str, file_size: int) -> Path:
    """Rewrite the declared uncompressed size of `name` in both zip headers."""
    data = bytearray(path.read_bytes())
    encoded = name.encode()
    for signature, size_offset, name_offset in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        start = 0
        while (start := data.find(signature, start)) != -1:
            if data[start + name_offset: start + name_offset + len(encoded)] == encoded:
                struct.pack_into("<L", data, start + size_offset, file_size)
            start += 4
    path.write_bytes(bytes(data))
    return path


def patch_zip_flag(path: Path, name: str, flag_or_method: tuple[int, int]) -> Path:
    """Set a general-purpose flag bit (offset 6/8) or the method field (offset 8/10)."""
    field, value = flag_or_method
    data = bytearray(path.read_bytes())
    encoded = name.encode()
    for signature, base, name_offset in ((b"PK\x03\x04", 0, 30), (b"PK\x01\x02", 2, 46)):
        start = 0
        while (start := data.find(signature, start)) != -1:
            if data[start + name_offset: start + name_offset + len(encoded)] == encoded:
                offset = start + base + (6 if field == "flag" else 8)
                current = struct.unpack_from("<H", data, offset)[0]
                new = current | value if field == "flag" else value
                struct.pack_into("<H", data, offset, new)
            start += 4
    path.write_bytes(bytes(data))
    return path


def deflated_bomb(path: Path, member: str, megabytes: int) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", METADATA)
        if member != "config.json":
            archive.writestr("config.json", CONFIG)
        info = zipfile.ZipInfo(member)
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w") as sink:
            chunk = bytes(1 << 20)
            for _ in range(megabytes):
                sink.write(chunk)
    return path


def h5_with(path: Path, attrs: dict, datasets: dict | None = None, groups=()) -> Path:
    with h5py.File(path, "w") as handle:
        for key, value in attrs.items():
            handle.attrs[key] = value
        for name in groups:
            handle.create_group(name)
        for name, value in (datasets or {}).items():
            handle[name] = value
    return path


def savedmodel_with(directory: Path, metadata: bytes | None) -> Path:
    directory.mkdir()
    (directory / "saved_model.pb").write_bytes(b"\x08\x01")
    (directory / "variables").mkdir()
    if metadata is not None:
        (directory / "keras_metadata.pb").write_bytes(metadata)
    return directory


def metadata_pb(*nodes: bytes) -> bytes:
    return b"".join(length_field(1, node) for node in nodes)


GOOD_ROOT_METADATA = json.dumps(
    {"class_name": "Sequential", "config": {"name": "s", "layers": []}, "keras_version": "2.21.0"})


# A case builds one bad input into a directory; it gets the reference bytes.
Builder = Callable[[Path, dict], Path]
MUST_RAISE: dict[str, Builder] = {}
MAY_READ: dict[str, tuple[Builder, str]] = {}  # corruption that may land in unchecked bytes
UNSUPPORTED: dict[str, Builder] = {}


def write(name: str, data: bytes) -> Builder:
    def build(d: Path, refs: dict) -> Path:
        (d / name).write_bytes(data)
        return d / name
    return build


def truncated(source: str, fraction: float, suffix: str) -> Builder:
    def build(d: Path, refs: dict) -> Path:
        data = refs[source]
        cut = max(1, min(len(data) - 1, int(len(data) * fraction)))
        (d / f"cut{suffix}").write_bytes(data[:cut])
        return d / f"cut{suffix}"
    return build


def truncated_tail(source: str, missing: int, suffix: str) -> Builder:
    def build(d: Path, refs: dict) -> Path:
        (d / f"cut{suffix}").write_bytes(refs[source][:-missing])
        return d / f"cut{suffix}"
    return build


# Truncated files: the zip end-of-central-directory record, or HDF5's recorded end of
# file, is always missing.
for i in range(60):
    MUST_RAISE[f"truncated_keras3_{i:02d}"] = truncated("k3_keras", i / 60, ".keras")
for k in (1, 2, 3, 5, 8, 13, 21, 22, 23, 30, 45, 60, 100, 150, 200):
    MUST_RAISE[f"truncated_keras3_tail_minus_{k}"] = truncated_tail("k3_keras", k, ".keras")
for i in range(20):
    MUST_RAISE[f"truncated_tf_keras_keras_{i:02d}"] = truncated(
        "tk_keras", (i + 0.5) / 20, ".keras")
for i in range(30):
    MUST_RAISE[f"truncated_h5_{i:02d}"] = truncated("k3_h5", (i + 0.5) / 30, ".h5")
for i in range(15):
    MUST_RAISE[f"truncated_tf_keras_h5_{i:02d}"] = truncated("tk_h5", (i + 0.5) / 15, ".h5")
for i in range(10):
    MUST_RAISE[f"truncated_weights_h5_{i:02d}"] = truncated(
        "k3_weights", (i + 0.5) / 10, ".weights.h5")


def random_bytes(seed: int, prefix: bytes = b"", suffix: str = ".keras") -> Builder:
    def build(d: Path, refs: dict) -> Path:
        rng = random.Random(seed)
        data = prefix + rng.randbytes(rng.randint(1, 5000))
        (d / f"random{suffix}").write_bytes(data)
        return d / f"random{suffix}"
    return build


for i in range(20):
    MUST_RAISE[f"random_bytes_{i:02d}"] = random_bytes(i, suffix=(".keras", ".h5", "")[i % 3])
for i in range(10):
    MUST_RAISE[f"zip_magic_then_random_{i:02d}"] = random_bytes(100 + i, b"PK\x03\x04")
for i in range(10):
    MUST_RAISE[f"hdf5_signature_then_random_{i:02d}"] = random_bytes(
        200 + i, b"\x89HDF\r\n\x1a\n", ".h5")


def zip_case(members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Builder:
    return lambda d, refs: make_zip(d / "case.keras", members, compression)


MUST_RAISE.update({
    "zip_empty_archive": zip_case({}),
    "zip_missing_config": zip_case({"metadata.json": METADATA}),
    "zip_config_in_subfolder": zip_case({"model/config.json": CONFIG, "metadata.json": METADATA}),
    "zip_config_not_json": zip_case({"config.json": b"{not json", "metadata.json": METADATA}),
    "zip_config_empty": zip_case({"config.json": b"", "metadata.json": METADATA}),
    "zip_config_is_list": zip_case({"config.json": b"[1, 2]", "metadata.json": METADATA}),
    "zip_config_is_null": zip_case({"config.json": b"null", "metadata.json": METADATA}),
    "zip_config_is_number": zip_case({"config.json": b"42", "metadata.json": METADATA}),
    "zip_config_is_string": zip_case({"config.json": b'"Sequential"', "metadata.json": METADATA}),
    "zip_config_lacks_class_name": zip_case({"config.json": b'{"config": {}}'}),
    "zip_config_class_name_not_string": zip_case(
        {"config.json": b'{"class_name": 3, "config": {}}'}),
    "zip_config_lacks_config": zip_case({"config.json": b'{"class_name": "Sequential"}'}),
    "zip_config_config_is_list": zip_case({"config.json": b'{"class_name": "S", "config": []}'}),
    "zip_config_invalid_utf8": zip_case(
        {"config.json": b'{"class_name": "\xff\xfe", "config": {}}'}),
    "zip_config_deeply_nested_list": zip_case({"config.json": DEEP_JSON}),
    "zip_config_deeply_nested_object": zip_case({"config.json": DEEP_OBJECT}),
    "zip_metadata_not_json": zip_case({"config.json": CONFIG, "metadata.json": b"\x00\x01"}),
    "zip_metadata_is_list": zip_case({"config.json": CONFIG, "metadata.json": b"[]"}),
    "zip_metadata_version_not_string": zip_case(
        {"config.json": CONFIG, "metadata.json": b'{"keras_version": 3}'}),
    "zip_metadata_deeply_nested": zip_case({"config.json": CONFIG, "metadata.json": DEEP_JSON}),
    "zip_weights_not_hdf5": zip_case(
        {"config.json": CONFIG, "metadata.json": METADATA, "model.weights.h5": b"garbage" * 100}),
    "zip_weights_hdf5_signature_then_garbage": zip_case(
        {"config.json": CONFIG, "metadata.json": METADATA,
         "model.weights.h5": b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4}),
    "zip_weights_empty": zip_case(
        {"config.json": CONFIG, "metadata.json": METADATA, "model.weights.h5": b""}),
    "zip_deflated_weights_not_hdf5": zip_case(
        {"config.json": CONFIG, "model.weights.h5": b"x" * 5000}, zipfile.ZIP_DEFLATED),
    "zip_bomb_config_60mb_of_zeros": lambda d, refs: deflated_bomb(
        d / "bomb.keras", "config.json", 60),
    "zip_bomb_weights_60mb_of_zeros": lambda d, refs: deflated_bomb(
        d / "bomb.keras", "model.weights.h5", 60),
    "zip_config_declares_4gib": lambda d, refs: patch_member_sizes(
        make_zip(d / "big.keras", {"config.json": CONFIG, "metadata.json": METADATA}),
        "config.json", 0xFFFFFFF0),
    "zip_metadata_declares_300mib": lambda d, refs: patch_member_sizes(
        make_zip(d / "big.keras", {"config.json": CONFIG, "metadata.json": METADATA}),
        "metadata.json", 300 << 20),
    "zip_config_declares_fewer_bytes": lambda d, refs: patch_member_sizes(
        make_zip(d / "small.keras", {"config.json": CONFIG, "metadata.json": METADATA}),
        "config.json", 10),
    "zip_weights_declares_more_bytes": lambda d, refs: patch_member_sizes(
        make_zip(d / "w.keras", {"config.json": CONFIG,
                                 "model.weights.h5": refs["k3_keras"][:100]}),
        "model.weights.h5", 10**7),
    "zip_config_encrypted_flag": lambda d, refs: patch_zip_flag(
        make_zip(d / "enc.keras", {"config.json": CONFIG}), "config.json", ("flag", 0x1)),
    "zip_weights_encrypted_flag": lambda d, refs: patch_zip_flag(
        make_zip(d / "enc.keras", {"config.json": CONFIG, "model.weights.h5": b"x" * 64}),
        "model.weights.h5", ("flag", 0x1)),
    "zip_config_unknown_compression_method": lambda d, refs: patch_zip_flag(
        make_zip(d / "m.keras", {"config.json": CONFIG}), "config.json", ("method", 99)),
    "zip_config_crc_mismatch": lambda d, refs: write(
        "crc.keras",
        make_zip(d / "tmp.keras", {"config.json": CONFIG}).read_bytes().replace(
            b"Sequential", b"Sequentiam", 1))(d, refs),
})


def duplicate_config(d: Path, refs: dict) -> Path:
    path = d / "dup.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", CONFIG)
        with pytest.warns(UserWarning):
            archive.writestr("config.json", b'{"class_name": "Evil", "config": {}}')
    return path


MUST_RAISE["zip_duplicate_config_member"] = duplicate_config

MUST_RAISE.update({
    "h5_no_model_config_no_datasets": lambda d, refs: h5_with(d / "empty.h5", {}),
    "h5_only_groups": lambda d, refs: h5_with(d / "groups.h5", {"keras_version": "3.1.0"},
                                              groups=("model_weights", "model_weights/lstm")),
    "h5_model_config_not_json": lambda d, refs: h5_with(d / "c.h5", {"model_config": "{oops"}),
    "h5_model_config_is_list": lambda d, refs: h5_with(d / "c.h5", {"model_config": "[1]"}),
    "h5_model_config_lacks_class_name": lambda d, refs: h5_with(d / "c.h5", {"model_config": "{}"}),
    "h5_model_config_is_int": lambda d, refs: h5_with(d / "c.h5", {"model_config": 7}),
    "h5_model_config_is_float_array": lambda d, refs: h5_with(
        d / "c.h5", {"model_config": np.arange(4.0)}),
    "h5_model_config_invalid_utf8": lambda d, refs: h5_with(
        d / "c.h5", {"model_config": np.bytes_(b'{"class_name": "\xff"}')}),
    "h5_model_config_deeply_nested": lambda d, refs: h5_with(
        d / "c.h5", {"model_config": DEEP_JSON.decode()}),
    "h5_keras_version_is_int": lambda d, refs: h5_with(
        d / "c.h5", {"model_config": CONFIG.decode(), "keras_version": 2}),
    "h5_model_config_null": lambda d, refs: h5_with(d / "c.h5", {"model_config": "null"}),
    "h5_userblock_only": write("ub.h5", bytes(512) + b"\x89HDF\r\n\x1a\n" + bytes(100)),
})

def directory(path: Path, files: dict[str, bytes]) -> Path:
    path.mkdir()
    for name, data in files.items():
        (path / name).write_bytes(data)
    return path


def symlink(path: Path, target: Path) -> Path:
    os.symlink(target, path)
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)  # opening it for reading would block forever
    return path


MUST_RAISE.update({
    "empty_file_keras": write("empty.keras", b""),
    "empty_file_h5": write("empty.h5", b""),
    "text_file_named_keras": write("notes.keras", b"this is not a model\n"),
    "text_file_named_h5": write("notes.h5", b"col1,col2\n1,2\n"),
    "json_config_alone": write("config.json", CONFIG),
    "saved_model_pb_file_itself": write("saved_model.pb", b"\x08\x01"),
    "hdf5_signature_only": write("sig.h5", b"\x89HDF\r\n\x1a\n"),
    "zip_magic_only": write("magic.keras", b"PK\x03\x04"),
    "empty_directory": lambda d, refs: directory(d / "empty_dir", {}),
    "directory_of_junk": lambda d, refs: directory(d / "junk", {"variables.index": b"x"}),
    "directory_with_config_json": lambda d, refs: directory(
        d / "unzipped", {"config.json": CONFIG, "metadata.json": METADATA}),
    "missing_path": lambda d, refs: d / "does_not_exist.keras",
    "dangling_symlink": lambda d, refs: symlink(d / "link.keras", d / "nowhere"),
    "fifo": lambda d, refs: fifo(d / "pipe.keras"),
    "char_device": lambda d, refs: Path(os.devnull),
    "newline_in_file_name": write("bad\nname.keras", b"garbage"),
})

MUST_RAISE.update({
    "savedmodel_metadata_empty": lambda d, refs: savedmodel_with(d / "sm", b""),
    "savedmodel_metadata_random_bytes": lambda d, refs: savedmodel_with(
        d / "sm", random.Random(7).randbytes(300)),
    "savedmodel_metadata_is_text": lambda d, refs: savedmodel_with(d / "sm", b"hello world"),
    "savedmodel_metadata_no_root": lambda d, refs: savedmodel_with(
        d / "sm", metadata_pb(saved_object(1, "root.layer-0", "_tf_keras_layer", "{}"))),
    "savedmodel_metadata_two_roots": lambda d, refs: savedmodel_with(
        d / "sm",
        metadata_pb(*[saved_object(0, "root", "_tf_keras_network", GOOD_ROOT_METADATA)] * 2)),
    "savedmodel_root_metadata_not_json": lambda d, refs: savedmodel_with(
        d / "sm", metadata_pb(saved_object(0, "root", "_tf_keras_network", "{nope"))),
    "savedmodel_root_metadata_is_list": lambda d, refs: savedmodel_with(
        d / "sm", metadata_pb(saved_object(0, "root", "_tf_keras_network", "[]"))),
    "savedmodel_root_config_is_list": lambda d, refs: savedmodel_with(
        d / "sm", metadata_pb(saved_object(
            0, "root", "_tf_keras_network", '{"class_name": "S", "config": []}'))),
    "savedmodel_root_metadata_deeply_nested": lambda d, refs: savedmodel_with(
        d / "sm", metadata_pb(saved_object(0, "root", "_tf_keras_network", DEEP_JSON.decode()))),
    "savedmodel_node_path_invalid_utf8": lambda d, refs: savedmodel_with(
        d / "sm", metadata_pb(length_field(3, b"\xff\xfe"))),
    "savedmodel_node_id_wrong_wire_type": lambda d, refs: savedmodel_with(
        d / "sm", metadata_pb(length_field(2, b"abc"))),
    "savedmodel_group_wire_type": lambda d, refs: savedmodel_with(d / "sm", b"\x0b\x0c"),
})


def truncated_metadata_pb(fraction: float) -> Builder:
    def build(d: Path, refs: dict) -> Path:
        data = refs["tk_metadata_pb"]
        # Cut inside the first (root) node, so what remains is never a whole message.
        cut = max(1, int(_first_node_end(data) * fraction))
        return savedmodel_with(d / "sm", data[:cut])
    return build


def _first_node_end(data: bytes) -> int:
    _, position = read_varint(data, 0, len(data))
    length, position = read_varint(data, position, len(data))
    return position + length


for i in range(20):
    MUST_RAISE[f"savedmodel_metadata_truncated_{i:02d}"] = truncated_metadata_pb((i + 0.5) / 20)

UNSUPPORTED.update({
    "savedmodel_without_keras_metadata": lambda d, refs: savedmodel_with(d / "sm", None),
    "savedmodel_root_is_a_layer": lambda d, refs: savedmodel_with(
        d / "sm", metadata_pb(saved_object(0, "root", "_tf_keras_layer", GOOD_ROOT_METADATA))),
    "savedmodel_subclassed_model_without_config": lambda d, refs: savedmodel_with(
        d / "sm", metadata_pb(saved_object(0, "root", "_tf_keras_model", '{"class_name": "M"}'))),
})


def corrupted(source: str, seed: int, suffix: str) -> Builder:
    def build(d: Path, refs: dict) -> Path:
        data = bytearray(refs[source])
        rng = random.Random(seed)
        offset = rng.randrange(len(data))
        data[offset] ^= rng.randrange(1, 256)
        path = d / f"corrupt{suffix}"
        path.write_bytes(bytes(data))
        (d / "offset").write_text(str(offset))
        return path
    return build


for i in range(40):
    MAY_READ[f"corrupted_keras3_{i:02d}"] = (corrupted("k3_keras", i, ".keras"), "k3_keras")
for i in range(20):
    MAY_READ[f"corrupted_h5_{i:02d}"] = (corrupted("k3_h5", 1000 + i, ".h5"), "k3_h5")


def test_the_bad_input_corpus_is_large_enough():
    assert len(MUST_RAISE) + len(UNSUPPORTED) >= 200


def assert_refused(path: Path, error_type: type, build_dir: Path) -> Exception:
    before = sha256_of(path) if path.is_file() or path.is_dir() else None
    with pytest.raises(error_type) as refused:
        read_artifact(path)
    assert type(refused.value) is error_type  # not a subclass, not anything else
    message = str(refused.value)
    assert "\n" not in message and "\r" not in message, message
    if path != Path(os.devnull):
        assert path.name in message or repr(str(path))[1:-1] in message, message
    if before is not None:
        assert sha256_of(path) == before
    return refused.value


@pytest.mark.parametrize("name", sorted(MUST_RAISE))
def test_bad_input_raises_unreadable(name, tmp_path, reference_bytes):
    path = MUST_RAISE[name](tmp_path, reference_bytes)
    assert_refused(Path(path), UnreadableModelError, tmp_path)


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_valid_but_unsupported_savedmodel(name, tmp_path, reference_bytes):
    path = UNSUPPORTED[name](tmp_path, reference_bytes)
    assert_refused(Path(path), NotSupportedError, tmp_path)


def json_member_ranges(archive_bytes: bytes) -> list[range]:
    """Byte ranges of config.json / metadata.json data: CRC-checked when read."""
    ranges = []
    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as archive:
        for info in archive.infolist():
            if info.filename in ("config.json", "metadata.json"):
                name_length, extra_length = struct.unpack_from(
                    "<HH", archive_bytes, info.header_offset + 26)
                start = info.header_offset + 30 + name_length + extra_length
                ranges.append(range(start, start + info.compress_size))
    return ranges


@pytest.mark.parametrize("name", sorted(MAY_READ))
def test_corrupted_byte_is_either_caught_or_harmless(name, tmp_path, reference_bytes):
    build, source = MAY_READ[name]
    path = build(tmp_path, reference_bytes)
    offset = int((tmp_path / "offset").read_text())
    before = sha256_of(path)
    try:
        artifact = read_artifact(path)
    except UnreadableModelError as error:
        assert "\n" not in str(error)
    else:
        # Weight bytes and unchecked header fields are not read: only those may slip by.
        assert isinstance(artifact, ModelArtifact)
        if source.endswith("keras"):
            assert not any(offset in r for r in json_member_ranges(reference_bytes[source]))
    assert sha256_of(path) == before


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Flip, delete or insert a few bytes: what a bad disk, download or attacker does."""
    mutated = bytearray(data)
    for _ in range(rng.choice([1, 2, 4, 16, 64])):
        position = rng.randrange(len(mutated))
        roll = rng.random()
        if roll < 0.7:
            mutated[position] = rng.randrange(256)
        elif roll < 0.85:
            del mutated[position: position + rng.randrange(1, 64)]
        else:
            mutated[position:position] = rng.randbytes(rng.randrange(1, 64))
    return bytes(mutated)


@pytest.mark.parametrize("source", ["k3_keras", "k3_h5", "k3_weights", "tk_h5", "tk_keras"])
def test_mutated_files_never_raise_anything_else(source, tmp_path, reference_bytes):
    rng = random.Random(f"mutations of {source}")
    outcomes = {"read": 0, "unreadable": 0}
    for index in range(60):
        path = tmp_path / f"mutant_{index}{'.keras' if source.endswith('keras') else '.h5'}"
        path.write_bytes(mutate(reference_bytes[source], rng))
        try:
            read_artifact(path)
            outcomes["read"] += 1
        except UnreadableModelError as error:
            assert "\n" not in str(error)
            outcomes["unreadable"] += 1
    assert outcomes["unreadable"] > 0


def test_hdf5_memory_guard_turns_runaway_allocation_into_an_error():
    # In a subprocess: the guard stands down once TensorFlow is loaded, as it is here.
    script = """
import resource, sys
from surgery.io.formats.h5 import _address_space_in_use, hdf5_memory_guard
if _address_space_in_use() is None:
    print("inactive"); sys.exit(0)
before = resource.getrlimit(resource.RLIMIT_AS)
with hdf5_memory_guard(headroom=256 << 20):
    try:
        bytearray(1 << 30)
        print("allocated")
    except MemoryError:
        print("refused")
assert resource.getrlimit(resource.RLIMIT_AS) == before
bytearray(1 << 30)  # the limit is gone again
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    if result.stdout.strip() == "inactive":
        pytest.skip("no /proc/self/statm: the guard is inactive on this platform")
    assert result.stdout.strip() == "refused"


def test_read_artifact_rejects_non_path_arguments():
    for value in (None, 42, b"", ""):
        with pytest.raises(UnreadableModelError):
            read_artifact(value)


# ----------------------------------------------------------------------------------------
# write_keras_zip


def test_write_keras_zip_replaces_only_the_config(reference_models, tmp_path):
    import keras

    source = reference_models["k3_keras"]
    before = sha256_of(source)
    config = read_artifact(source).model_config
    config["config"]["name"] = "renamed_by_surgery"
    dest = tmp_path / "out.keras"

    write_keras_zip(source, dest, config)

    assert sha256_of(source) == before
    assert read_artifact(dest).model_config == config
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(dest) as new:
        assert [i.filename for i in old.infolist()] == [i.filename for i in new.infolist()]
        for old_info, new_info in zip(old.infolist(), new.infolist()):
            assert (old_info.compress_type, old_info.date_time) == (
                new_info.compress_type, new_info.date_time)
            if old_info.filename != "config.json":
                assert old.read(old_info) == new.read(new_info)
    original = keras.saving.load_model(source)
    rebuilt = keras.saving.load_model(dest)
    assert rebuilt.name == "renamed_by_surgery"
    tokens = np.array([[1, 2, 3, 0, 0, 0]], "int32")
    np.testing.assert_array_equal(
        original.predict(tokens, verbose=0), rebuilt.predict(tokens, verbose=0))


def test_write_keras_zip_keeps_deflated_members_and_assets(tmp_path):
    source = tmp_path / "deflated.keras"
    with zipfile.ZipFile(source, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", METADATA)
        archive.writestr("config.json", CONFIG)
        archive.writestr("model.weights.h5", b"weights" * 1000)
        archive.writestr("assets/", b"")
        archive.writestr("assets/vocab.txt", b"a\nb\n")
    dest = tmp_path / "out.keras"
    write_keras_zip(source, dest, {"class_name": "Sequential", "config": {"name": "new"}})
    with zipfile.ZipFile(dest) as archive:
        infos = {i.filename: i for i in archive.infolist()}
        assert list(infos) == ["metadata.json", "config.json", "model.weights.h5",
                               "assets/", "assets/vocab.txt"]
        assert infos["model.weights.h5"].compress_type == zipfile.ZIP_DEFLATED
        assert archive.read("assets/vocab.txt") == b"a\nb\n"
        assert json.loads(archive.read("config.json"))["config"]["name"] == "new"


def big_keras_file(path: Path, weights_bytes: int) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", METADATA)
        archive.writestr("config.json", CONFIG)
        info = zipfile.ZipInfo("model.weights.h5")
        info.file_size = weights_bytes
        with archive.open(info, "w") as sink:
            chunk = np.random.default_rng(0).bytes(1 << 20)
            for _ in range(weights_bytes >> 20):
                sink.write(chunk)
    return path


def test_write_keras_zip_streams_with_flat_memory(tmp_path):
    # Speed is measured in benchmarks/run.py, not asserted here.
    size = 96 << 20
    source = big_keras_file(tmp_path / "big.keras", size)

    tracemalloc.start()
    write_keras_zip(source, tmp_path / "out.keras", {"class_name": "S", "config": {}})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert peak < 8 << 20, f"peak Python allocation {peak} bytes for a {size} byte member"
    with zipfile.ZipFile(tmp_path / "out.keras") as archive:
        assert archive.getinfo("model.weights.h5").file_size == size
        assert archive.testzip() is None


def test_write_keras_zip_refuses_corrupt_weights_instead_of_laundering_them(
    reference_models, tmp_path
):
    data = bytearray(reference_models["k3_sequential"].read_bytes())
    with zipfile.ZipFile(reference_models["k3_sequential"]) as archive:
        info = archive.getinfo("model.weights.h5")
    data[info.header_offset + 30 + len(info.filename) + info.file_size // 2] ^= 0xFF
    source = tmp_path / "corrupt_weights.keras"
    source.write_bytes(bytes(data))
    with pytest.raises(UnreadableModelError, match="corrupt"):
        write_keras_zip(source, tmp_path / "out.keras", {"class_name": "S", "config": {}})


def test_writers_refuse_to_overwrite_their_source(reference_models, tmp_path):
    keras_copy = shutil.copyfile(reference_models["k3_keras"], tmp_path / "m.keras")
    h5_copy = shutil.copyfile(reference_models["k3_h5"], tmp_path / "m.h5")
    config = {"class_name": "S", "config": {}}
    with pytest.raises(UsageError, match="source file itself"):
        write_keras_zip(keras_copy, keras_copy, config)
    with pytest.raises(UsageError, match="source file itself"):
        write_h5_with_config(h5_copy, h5_copy, config)
    assert read_artifact(keras_copy).model_config["class_name"] == "Functional"
    assert read_artifact(h5_copy).model_config["class_name"] == "Functional"


def test_write_keras_zip_rejects_a_config_that_is_not_a_model(reference_models, tmp_path):
    for bad in ([], {"config": {}}, {"class_name": "S", "config": {1, 2}}):
        with pytest.raises(UsageError):
            write_keras_zip(reference_models["k3_keras"], tmp_path / "x.keras", bad)


# ----------------------------------------------------------------------------------------
# write_h5_with_config


@pytest.mark.parametrize("name", ["k3_h5", "tk_h5"])
def test_write_h5_with_config_replaces_only_the_config(reference_models, tmp_path, name):
    source = reference_models[name]
    before = sha256_of(source)
    artifact = read_artifact(source)
    config = artifact.model_config
    config["config"]["name"] = "renamed"
    dest = tmp_path / "out.h5"

    write_h5_with_config(source, dest, config)

    assert sha256_of(source) == before
    rewritten = read_artifact(dest)
    assert rewritten.model_config == config
    assert (rewritten.keras_version, rewritten.weight_shapes) == (
        artifact.keras_version, artifact.weight_shapes)
    with h5py.File(source, "r") as old, h5py.File(dest, "r") as new:
        for dataset in artifact.weight_shapes:
            np.testing.assert_array_equal(old[dataset][()], new[dataset][()])
        for key in set(old.attrs) - {"model_config"}:
            assert np.array_equal(old.attrs[key], new.attrs[key])


def test_write_h5_with_config_refuses_weights_only_file(reference_models, tmp_path):
    with pytest.raises(UsageError, match="weights-only"):
        write_h5_with_config(reference_models["k3_weights"], tmp_path / "x.h5",
                             {"class_name": "S", "config": {}})
