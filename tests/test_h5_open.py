"""In-memory HDF5 images opened for the safety scan (surgery/io/formats/h5_open.py)."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from surgery.io.formats import h5 as h5_format
from surgery.io.formats.h5_open import _hdf5_library, open_image

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "models"


def _image(build) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        build(handle)
    return buffer.getvalue()


def test_two_images_open_at_once_keep_their_own_contents():
    """HDF5 takes two open in-memory files of one name for one file: the second open would
    read the first one's bytes (a scan of one model reporting another's weights)."""
    first = _image(lambda h: h.create_dataset("x", data=np.arange(3, dtype="f4")))
    second = _image(lambda h: h.create_dataset("y", data=np.arange(5, dtype="f4")))
    with open_image(first) as a, open_image(second) as b:
        assert list(a) == ["x"] and list(b) == ["y"]
        assert a["x"].shape == (3,) and b["y"].shape == (5,)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the library is found through /proc/self/maps")
def test_a_scan_leaves_the_metadata_cache_small():
    """Evict-on-close: an object's metadata leaves HDF5's cache when the scan closes it, so
    the cache does not grow with the file (plain h5py keeps every object until the close)."""
    assert _hdf5_library() is not None, "h5py's libhdf5 was not found in /proc/self/maps"

    def build(handle):
        for index in range(300):
            handle.create_group(f"layer_{index}/vars").create_dataset("0", data=np.zeros(2, "f4"))

    data = _image(build)
    with open_image(data) as image:
        shapes, _ = h5_format.scan_hdf5("image", image)
        evicting = image.id.get_mdc_size()[3]  # entries in the cache
    with h5py.File(io.BytesIO(data), "r") as plain:
        assert h5_format.scan_hdf5("image", plain)[0] == shapes and len(shapes) == 300
        keeping = plain.id.get_mdc_size()[3]
    assert keeping > 900 and evicting < 100, (keeping, evicting)


def test_scan_of_an_image_equals_the_scan_of_the_file_on_disk(tmp_path):
    """Cycles, a dataset under two names, soft and external links, references, named
    datatypes and empty datasets: the same shapes and findings, in the same order."""
    path = tmp_path / "walk.weights.h5"
    shutil.copyfile(FIXTURES / "lstm_sequential.weights.h5", path)
    with h5py.File(path, "a") as handle:
        handle["layers/lstm/cell/loop"] = handle["layers"]
        handle["layers/lstm/twin"] = handle["layers/lstm/cell/vars/0"]
        handle["layers/lstm/twin"].attrs["pointer"] = handle.ref
        handle["a_type"] = np.dtype("f4")
        handle["layers/alias"] = h5py.SoftLink("lstm/cell/vars")
        handle["layers/dangling"] = h5py.SoftLink("/nowhere")
        handle["layers/outside"] = h5py.ExternalLink("elsewhere.h5", "/x")
        handle["empty"] = h5py.Empty("f4")
    with h5py.File(path, "r") as on_disk:
        expected = h5_format.scan_hdf5(str(path), on_disk)
    with open_image(path.read_bytes()) as image:
        found = h5_format.scan_hdf5(str(path), image)
    assert found == expected
    assert len(expected[0]) > 3 and {f.kind for f in expected[1]} == {
        "hdf5_reference", "hdf5_soft_link", "hdf5_external_link"}


def test_small_files_are_read_once_and_scanned_from_memory(tmp_path, monkeypatch):
    """A file up to the cap is one snapshot in memory: rewriting it afterwards changes nothing
    read through the handle, and the same file open in plain h5py meanwhile is no conflict
    (HDF5 refuses a second open of one file with other access settings)."""
    from surgery.io.formats import h5_open

    path = tmp_path / "model.weights.h5"
    shutil.copyfile(FIXTURES / "lstm_sequential.weights.h5", path)
    expected = h5_format.read_h5(str(path)).weight_shapes
    with h5py.File(path, "r") as elsewhere, h5_open.open_file(path) as snapshot:
        assert snapshot.driver == "core" and elsewhere.driver == "sec2"
        path.write_bytes(b"\0" * 64)  # replaced under the open handle
        assert h5_format.scan_hdf5(str(path), snapshot)[0] == expected
    shutil.copyfile(FIXTURES / "lstm_sequential.weights.h5", path)
    monkeypatch.setattr(h5_open, "IN_MEMORY_SCAN_BYTES", path.stat().st_size - 1)
    with h5_open.open_file(path) as on_disk:
        assert on_disk.driver == "sec2"
        assert h5_format.scan_hdf5(str(path), on_disk)[0] == expected
