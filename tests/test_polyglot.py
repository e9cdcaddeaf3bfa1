"""Polyglot files (one file readable both as a zip and as HDF5) are refused by content,
and Keras only ever loads a private copy of the bytes that were scanned."""

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import malicious
from conftest import FIXTURES, ROOT

CLEAN_KERAS = FIXTURES / "lstm_sequential.keras"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env)


def clean_zip_bytes() -> bytes:
    """A small, clean .keras archive: a real model's config, no weights."""
    with zipfile.ZipFile(CLEAN_KERAS) as source:
        config = source.read("config.json")
        metadata = source.read("metadata.json")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", metadata)
        archive.writestr("config.json", config)
    return buffer.getvalue()


def lambda_h5(path: Path, canary: Path, userblock: int = 0) -> Path:
    """A tf_keras-style HDF5 model whose config holds a Lambda that writes `canary`."""
    config = malicious.k2_sequential([malicious.k2_lambda(canary), malicious.k2_lstm()])
    with h5py.File(path, "w", userblock_size=userblock) as handle:
        handle.attrs["keras_version"] = "2.15.0"
        handle.attrs["backend"] = "tensorflow"
        handle.attrs["model_config"] = json.dumps(config)
        handle.create_dataset("model_weights/lstm/lstm/lstm_cell/kernel:0",
                              data=np.zeros((3, 16), "float32"))
    return path


def userblock_polyglot(path: Path, canary: Path) -> Path:
    """HDF5 (Lambda) whose reserved user block holds a clean zip zipfile accepts."""
    lambda_h5(path, canary, userblock=4096)
    archive = clean_zip_bytes()
    assert len(archive) <= 4096
    with open(path, "r+b") as handle:
        handle.write(archive)
    return path


def appended_polyglot(path: Path, canary: Path) -> Path:
    """HDF5 (Lambda) followed by a clean zip appended at its end."""
    lambda_h5(path, canary)
    with open(path, "ab") as handle:
        handle.write(clean_zip_bytes())
    return path


def hidden_member_polyglot(path: Path, canary: Path, scratch: Path) -> Path:
    """A clean .keras whose extra stored member is an HDF5 Lambda model placed at a
    power-of-two offset, where libhdf5 looks for a superblock."""
    inner = lambda_h5(scratch / "inner.h5", canary).read_bytes()
    with zipfile.ZipFile(CLEAN_KERAS) as source, \
            zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for info in source.infolist():
            archive.writestr(info, source.read(info))
        _write_aligned(archive, "assets/blob.h5", inner)
    return path


def _write_aligned(archive: zipfile.ZipFile, name: str, data: bytes) -> int:
    """Write a stored member whose data starts at the next power of two (>= 512)."""
    offset = archive.fp.tell()
    start = offset + 30 + len(name.encode())
    target = 512
    while target < start + 4:
        target *= 2
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_STORED
    padding = target - start - 4
    info.extra = (0xCAFE).to_bytes(2, "little") + padding.to_bytes(2, "little") + b"\0" * padding
    archive.writestr(info, data)
    return target


def aligned_genuine_keras(path: Path) -> Path:
    """The clean fixture rewritten so its weights member starts exactly at a power of two."""
    with zipfile.ZipFile(CLEAN_KERAS) as source, \
            zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for info in source.infolist():
            if info.filename != "model.weights.h5":
                archive.writestr(info, source.read(info))
        start = _write_aligned(archive, "model.weights.h5", source.read("model.weights.h5"))
    with open(path, "rb") as handle:
        handle.seek(start)
        assert handle.read(8) == b"\x89HDF\r\n\x1a\n"
    return path


POLYGLOTS = {
    "hdf5_userblock_zip": lambda tmp, canary: userblock_polyglot(tmp / "model.h5", canary),
    "hdf5_userblock_zip_named_keras": lambda tmp, canary: userblock_polyglot(tmp / "model.keras", canary),
    "hdf5_then_zip": lambda tmp, canary: appended_polyglot(tmp / "model.keras", canary),
    "hdf5_then_zip_named_h5": lambda tmp, canary: appended_polyglot(tmp / "model.h5", canary),
    "zip_hiding_hdf5": lambda tmp, canary: hidden_member_polyglot(tmp / "model.h5", canary, tmp),
}


@pytest.mark.parametrize("name", sorted(POLYGLOTS))
def test_polyglot_refused_before_anything_runs(name, tmp_path):
    canary = tmp_path / "polyglot.canary"
    source = POLYGLOTS[name](tmp_path, canary)
    assert zipfile.is_zipfile(source) and h5py.is_hdf5(source)
    before = sha256(source)
    out = tmp_path / "out" / "exposed.keras"
    out.parent.mkdir()
    for command in (["expose-state", source, "-o", out], ["inspect", source],
                    ["verify", source, source]):
        result = run_cli(*command)
        assert result.returncode == 3, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "polyglot" in lines[0], result.stderr
    assert not canary.exists()
    assert list(out.parent.iterdir()) == []
    assert sha256(source) == before


def test_plain_tf_keras_runs_the_unscanned_half(tmp_path):
    """The attack is real: tf_keras picks HDF5 for a .h5 name and builds the Lambda,
    while a zip reader (the old scan) saw only the clean config."""
    canary = tmp_path / "plain.canary"
    source = userblock_polyglot(tmp_path / "model.h5", canary)
    with zipfile.ZipFile(source) as archive:
        assert "Lambda" not in archive.read("config.json").decode()
    script = ("import os; os.environ['TF_CPP_MIN_LOG_LEVEL']='3'\n"
              "import tf_keras, sys\n"
              "try:\n    tf_keras.models.load_model(sys.argv[1], compile=False)\n"
              "except Exception:\n    pass\n")
    subprocess.run([sys.executable, "-c", script, str(source)], capture_output=True, timeout=300)
    assert canary.read_text() == "payload ran"


def test_genuine_keras_with_weights_at_a_superblock_offset_is_not_a_polyglot(tmp_path):
    source = aligned_genuine_keras(tmp_path / "aligned.keras")
    assert h5py.is_hdf5(source)  # libhdf5 finds the weights member's superblock
    out = tmp_path / "aligned.exposed.keras"
    result = run_cli("expose-state", source, "-o", out)
    assert result.returncode == 0, result.stderr
    assert "verified" in result.stdout


def test_weights_member_carrying_a_model_config_at_such_an_offset_is_refused(tmp_path):
    source = aligned_genuine_keras(tmp_path / "aligned.keras")
    poisoned = tmp_path / "poisoned.keras"
    with zipfile.ZipFile(source) as archive:
        weights = tmp_path / "w.h5"
        weights.write_bytes(archive.read("model.weights.h5"))
    with h5py.File(weights, "r+") as handle:
        handle.attrs["model_config"] = json.dumps(
            malicious.k2_sequential([malicious.k2_lambda(tmp_path / "c.canary")]))
    with zipfile.ZipFile(source) as original, \
            zipfile.ZipFile(poisoned, "w", compression=zipfile.ZIP_STORED) as archive:
        for info in original.infolist():
            if info.filename != "model.weights.h5":
                archive.writestr(info, original.read(info))
        _write_aligned(archive, "model.weights.h5", weights.read_bytes())
    result = run_cli("inspect", poisoned)
    assert result.returncode == 3 and "polyglot" in result.stderr


def test_keras_loads_a_private_copy_not_the_users_path(tmp_path, monkeypatch):
    """Whatever happens to the user's path after the scan, Keras reads the scanned bytes:
    the path Keras is given lies in a fresh 0700 directory and holds the same bytes."""
    from surgery.io import families, loading

    source = tmp_path / "model.keras"
    source.write_bytes(CLEAN_KERAS.read_bytes())
    seen = {}
    real_load = families.load

    def spy(artifact, **kwargs):
        seen["path"] = Path(artifact.path)
        seen["mode"] = os.stat(seen["path"].parent).st_mode & 0o777
        seen["bytes"] = seen["path"].read_bytes()
        return real_load(artifact, **kwargs)

    monkeypatch.setattr(families, "load", spy)
    loading.load_model(source)
    assert seen["path"] != source and seen["path"].suffix == ".keras"
    assert seen["mode"] == 0o700
    assert seen["bytes"] == source.read_bytes()
    assert not seen["path"].exists()  # removed after the load


def test_private_copy_takes_the_extension_of_the_content(tmp_path, monkeypatch):
    """An HDF5 model named .keras is loaded as .h5 (its content), never as a zip."""
    from surgery.io import families, loading

    source = tmp_path / "misnamed.keras"
    source.write_bytes((FIXTURES / "lstm_sequential.h5").read_bytes())
    seen = {}
    real_load = families.load
    monkeypatch.setattr(families, "load",
                        lambda artifact, **kw: seen.setdefault("p", artifact.path) and real_load(artifact, **kw))
    loading.load_model(source)
    assert seen["p"].endswith("model.h5")


def test_savedmodel_with_a_symlink_is_refused_by_the_private_copy(tmp_path):
    from surgery.io import private_copy
    from surgery.errors import UnsafeContentError

    model = tmp_path / "sm"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"")
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-MARKER")
    (model / "variables" / "variables.index").symlink_to(secret)
    with private_copy.private_directory() as directory, pytest.raises(UnsafeContentError, match="symbolic link"):
        private_copy.copy_into(model, directory)
