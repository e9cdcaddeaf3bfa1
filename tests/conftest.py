"""Shared test helpers: fixture paths, and quiet TensorFlow."""

import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Progress lines would interleave with the one-line errors the tests assert; test_progress turns it on.
os.environ.setdefault("LSTM_SURGERY_PROGRESS", "0")
ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "models"
sys.path.insert(0, str(ROOT / "fixtures"))

CATALOG = json.loads((FIXTURES / "catalog.json").read_text()) if (FIXTURES / "catalog.json").exists() else []
CATALOG_ENTRIES = CATALOG["models"] if isinstance(CATALOG, dict) else CATALOG


def catalog_files(predicate=lambda entry: True):
    return [entry["file"] for entry in CATALOG_ENTRIES if predicate(entry)]


def is_rewirable(entry) -> bool:
    return not entry.get("unsafe") and not entry.get("subclassed") and entry.get("format") == "keras"


@pytest.fixture(scope="session")
def keras():
    from surgery.io.quiet import import_keras

    return import_keras()


@pytest.fixture
def fixture_path():
    return lambda name: FIXTURES / name


def flip_stored_byte(path, dataset: str) -> None:
    """Flip the first byte of `dataset`'s data inside the stored weights member of a .keras file."""
    import io
    import zipfile

    import h5py

    from surgery.io.formats.keras_zip import stored_data_offset

    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("model.weights.h5")
        start = stored_data_offset(str(path), archive, info)
        with h5py.File(io.BytesIO(archive.read(info))) as handle:
            offset = handle[dataset].id.get_offset()
    data = bytearray(Path(path).read_bytes())
    data[start + offset] ^= 0xFF
    Path(path).write_bytes(bytes(data))
