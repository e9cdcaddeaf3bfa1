"""HDF5 that reads other files: external raw storage, virtual datasets, external links,
soft links that leave the file or dangle, user-defined links, plugin filters.

Each case rewires one real weight (an LSTM kernel) of a real saved model (the fixtures:
a Keras 3 .h5, a tf_keras .h5, a Keras 3 weights-only .h5 and the weights member of a
Keras 3 and a tf_keras .keras) so that it points at a local "secret" holding a unique
marker. The static read must record a hazard; every command must refuse with exit 3
before writing anything; and plain Keras on the same files shows the attack is real
(tf_keras copies the secret into the model's weights; Keras 3.15 refuses by itself).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from surgery.errors import UnreadableModelError, UnsafeContentError
from surgery.io.formats import h5 as h5_format
from surgery.io.formats import read_artifact
from surgery.io.safety import ensure_artifact_safe

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "models"
CLI = ROOT / "cli.py"

MARKER = f"LSTM-SURGERY-SECRET-{uuid.uuid4().hex}".encode()
WEIGHTS_MEMBER = "model.weights.h5"

# name -> (fixture, member holding the weights or None, dataset to rewire, loader family)
CONTAINERS = {
    "k3_h5": ("lstm_sequential.h5", None,
              "model_weights/lstm/sequential/lstm/lstm_cell/kernel", "keras3"),
    "tk_h5": ("keras2/k2_sequential.h5", None,
              "model_weights/lstm/lstm/lstm_cell/kernel:0", "keras2"),
    "k3_weights": ("lstm_sequential.weights.h5", None, "layers/lstm/cell/vars/0", None),
    "k3_keras": ("lstm_sequential.keras", WEIGHTS_MEMBER, "layers/lstm/cell/vars/0", "keras3"),
    "tk_keras": ("keras2/k2_functional.keras", WEIGHTS_MEMBER, "layers/lstm/cell/vars/0",
                 "keras2"),
}
# attack -> the hazard kind it must produce at the rewired dataset
ATTACKS = {
    "external_storage": "hdf5_external_storage",
    "virtual_dataset": "hdf5_virtual_dataset",
    "external_link": "hdf5_external_link",
    "escaping_soft_link": "hdf5_soft_link",
    "dangling_soft_link": "hdf5_soft_link",
}
CASES = [(c, a) for c in CONTAINERS for a in ATTACKS]
# Neighbours, checked on the static read and one CLI run each.
EXTRA_ATTACKS = {
    "group_external_link": "hdf5_external_link",
    "plugin_filter": "hdf5_filter_plugin",
    "user_defined_link": "hdf5_user_link",
    "reference_attribute": "hdf5_reference",
}


def _case_id(case) -> str:
    return "-".join(case)


# ----------------------------------------------------------------------------------------
# Building the files (once per module)


class Secrets:
    """A raw secret file and an HDF5 secret whose datasets hold the marker's bytes."""

    def __init__(self, folder: Path):
        folder.mkdir()
        self.raw = folder / "secret.bin"
        self.raw.write_bytes((MARKER + b"|") * 200)
        self.h5 = folder / "secret.h5"
        with h5py.File(self.h5, "w"):
            pass

    def dataset_like(self, shape: tuple, dtype: np.dtype) -> str:
        """A dataset in the HDF5 secret with this shape, its bytes the marker repeated."""
        name = "stolen_" + "x".join(map(str, shape)) + f"_{np.dtype(dtype).str[1:]}"
        with h5py.File(self.h5, "a") as handle:
            if name not in handle:
                size = int(np.prod(shape)) * np.dtype(dtype).itemsize
                data = ((MARKER + b"|") * (size // len(MARKER) + 1))[:size]
                handle[name] = np.frombuffer(data, dtype=dtype).reshape(shape)
        return "/" + name


def rewire(handle: h5py.File, path: str, attack: str, secrets: Secrets) -> None:
    """Make dataset `path` of an open HDF5 file read the secret instead of its own bytes."""
    old = handle[path]
    shape, dtype = old.shape, old.dtype
    nbytes = int(np.prod(shape)) * dtype.itemsize
    del handle[path]
    if attack == "external_storage":
        handle.create_dataset(path, shape, dtype, external=[(str(secrets.raw), 0, nbytes)])
    elif attack == "virtual_dataset":
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        layout[...] = h5py.VirtualSource(str(secrets.h5), secrets.dataset_like(shape, dtype),
                                         shape=shape)
        handle.create_virtual_dataset(path, layout)
    elif attack == "external_link":
        handle[path] = h5py.ExternalLink(str(secrets.h5), secrets.dataset_like(shape, dtype))
    elif attack == "escaping_soft_link":
        # The soft link's target runs through an external link elsewhere in the file.
        handle["/zz_escape"] = h5py.ExternalLink(str(secrets.h5), "/")
        handle[path] = h5py.SoftLink("/zz_escape" + secrets.dataset_like(shape, dtype))
    elif attack == "dangling_soft_link":
        handle[path] = h5py.SoftLink("/no/such/weights")
    elif attack == "group_external_link":
        # A whole group (the layer's weights) replaced by a group of the secret file.
        group = path.rsplit("/", 1)[0]
        with h5py.File(secrets.h5, "a") as secret:
            if "/group" not in secret:
                secret.create_group("group")
        del handle[group]
        handle[group] = h5py.ExternalLink(str(secrets.h5), "/group")
    elif attack == "plugin_filter":
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk(shape)
        # 32001 is Blosc: not built in, so libhdf5 would dlopen it from HDF5_PLUGIN_PATH.
        # Optional, so that h5py can write the file without the plugin.
        dcpl.set_filter(32001, h5py.h5z.FLAG_OPTIONAL, (0, 0, 0, 0))
        space = h5py.h5s.create_simple(shape)
        parent, _, name = path.rpartition("/")
        h5py.h5d.create(handle[parent].id, name.encode(), h5py.h5t.py_create(dtype), space,
                        dcpl=dcpl)
    elif attack == "user_defined_link":
        handle[path] = h5py.ExternalLink("udlink-secret.h5", "/x")
    elif attack == "reference_attribute":
        handle[path] = np.zeros(shape, dtype)
        handle[path].attrs["pointer"] = handle.ref
    else:
        raise AssertionError(attack)


def _patch_user_defined(data: bytes) -> bytes:
    """Turn the external link written for "user_defined_link" into link class 65.

    The link message (version 1, flags 0x08 "type present", type 64 = external) sits in a
    version 1 object header, which has no checksum, so one byte makes it user-defined.
    """
    target = b"\x01\x08\x40"  # version 1, flags "type present", type external
    name = b"udlink-secret.h5"
    at = data.find(name)
    assert at > 0, "external link value not found"
    header = data.rfind(target, 0, at)
    assert header > 0 and at - header < 64, "link message header not found"
    patched = bytearray(data)
    patched[header + 2] = 0x41
    return bytes(patched)


def build_case(folder: Path, container: str, attack: str, secrets: Secrets) -> Path:
    fixture, member, dataset, _ = CONTAINERS[container]
    source = FIXTURES / fixture
    suffix = ".weights.h5" if source.name.endswith(".weights.h5") else source.suffix
    target = folder / f"{container}-{attack}{suffix}"
    scratch = folder / f"{container}-{attack}.scratch.h5"
    if member is None:
        shutil.copyfile(source, scratch)
    else:
        with zipfile.ZipFile(source) as archive:
            scratch.write_bytes(archive.read(member))
    with h5py.File(scratch, "a") as handle:
        rewire(handle, dataset, attack, secrets)
    data = scratch.read_bytes()
    scratch.unlink()
    if attack == "user_defined_link":
        data = _patch_user_defined(data)
    if member is None:
        target.write_bytes(data)
        return target
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        for info in archive.infolist():
            out.writestr(info, data if info.filename == member else archive.read(info))
    return target


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hdf5_reads_other_files")
    secrets = Secrets(folder / "secrets")
    models = folder / "models"
    models.mkdir()
    files = {case: build_case(models, *case, secrets) for case in CASES}
    extras = {attack: build_case(models, "k3_h5" if attack != "reference_attribute"
                                 else "k3_weights", attack, secrets)
              for attack in EXTRA_ATTACKS}
    extras["keras_user_defined_link"] = build_case(models, "k3_keras", "user_defined_link",
                                                   secrets)
    hashes = {path: _sha256(path) for path in [*files.values(), *extras.values()]}
    return {"folder": folder, "secrets": secrets, "files": files, "extras": extras,
            "hashes": hashes}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hazard_at(artifact, dataset: str, kind: str) -> bool:
    return any(f.kind == kind and f.path.endswith("/" + dataset) for f in artifact.hazards)


# ----------------------------------------------------------------------------------------
# The static read


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_static_read_records_the_hazard(work, case):
    container, attack = case
    path = work["files"][case]
    artifact = read_artifact(path)
    dataset = CONTAINERS[container][2]
    assert _hazard_at(artifact, dataset, ATTACKS[attack]), artifact.hazards
    finding = next(f for f in artifact.hazards if f.path.endswith("/" + dataset))
    assert "\n" not in finding.detail
    if attack in ("external_storage",):
        assert "secret.bin" in finding.detail
    elif attack == "dangling_soft_link":
        assert "/no/such/weights" in finding.detail and "does not resolve" in finding.detail
    else:
        assert "secret.h5" in finding.detail
    if CONTAINERS[container][1]:
        assert finding.path.startswith(WEIGHTS_MEMBER + ":/")
    with pytest.raises(UnsafeContentError, match=ATTACKS[attack]):
        ensure_artifact_safe(artifact)
    ensure_artifact_safe(artifact, allow_unsafe=True)  # --unsafe is the way out


@pytest.mark.parametrize("attack", list(EXTRA_ATTACKS), ids=str)
def test_static_read_records_neighbouring_hazards(work, attack):
    artifact = read_artifact(work["extras"][attack])
    kinds = {f.kind for f in artifact.hazards}
    assert EXTRA_ATTACKS[attack] in kinds, artifact.hazards
    with pytest.raises(UnsafeContentError):
        ensure_artifact_safe(artifact)


def test_user_defined_link_inside_a_keras_zip(work):
    artifact = read_artifact(work["extras"]["keras_user_defined_link"])
    assert [f.kind for f in artifact.hazards] == ["hdf5_user_link"]
    assert artifact.hazards[0].path == f"{WEIGHTS_MEMBER}:/layers/lstm/cell/vars/0"


def test_soft_link_inside_the_file_is_not_a_hazard(tmp_path):
    """A soft link that resolves to a dataset of the same file reads nothing foreign."""
    path = tmp_path / "soft.weights.h5"
    shutil.copyfile(FIXTURES / "lstm_sequential.weights.h5", path)
    with h5py.File(path, "a") as handle:
        handle["layers/lstm/cell/alias"] = h5py.SoftLink("/layers/lstm/cell/vars/0")
        handle["layers/lstm/relative"] = h5py.SoftLink("cell/./vars")
        handle["layers/lstm/chain"] = h5py.SoftLink("relative/1")
    artifact = read_artifact(path)
    assert artifact.hazards == ()
    assert artifact.weight_shapes == read_artifact(
        FIXTURES / "lstm_sequential.weights.h5").weight_shapes


def test_soft_link_loops_and_long_chains_are_refused(tmp_path):
    path = tmp_path / "loop.weights.h5"
    shutil.copyfile(FIXTURES / "lstm_sequential.weights.h5", path)
    with h5py.File(path, "a") as handle:
        handle["a"] = h5py.SoftLink("/b")
        handle["b"] = h5py.SoftLink("/a")
        handle["through_dataset"] = h5py.SoftLink("/layers/lstm/cell/vars/0/deeper")
    artifact = read_artifact(path)
    details = {f.path: f.detail for f in artifact.hazards}
    assert "soft links deep" in details["/a"] and "soft links deep" in details["/b"]
    assert "non-group" in details["/through_dataset"]


def test_hard_link_cycles_terminate_and_count_once(tmp_path):
    path = tmp_path / "cycle.weights.h5"
    shutil.copyfile(FIXTURES / "lstm_sequential.weights.h5", path)
    with h5py.File(path, "a") as handle:
        handle["layers/lstm/cell/loop"] = handle["layers"]  # a hard link back up
    artifact = read_artifact(path)
    assert artifact.hazards == ()
    assert artifact.weight_shapes == read_artifact(
        FIXTURES / "lstm_sequential.weights.h5").weight_shapes


def _shapes_in_visit_order(path: Path) -> list:
    """The datasets HDF5's own walk (H5Lvisit) reaches, each under the first path it gives
    it, in its order: what the scan's group-by-group walk must report."""
    seen, shapes = set(), []
    with h5py.File(path, "r") as handle:
        def note(name, info):
            if info.type == h5py.h5l.TYPE_HARD and info.u not in seen:
                seen.add(info.u)
                node = handle[name]
                if isinstance(node, h5py.Dataset) and node.shape is not None:
                    shapes.append((name.decode(), node.shape))
        handle.id.links.visit(note, info=True)
    return shapes


def test_walk_matches_hdf5s_own_visit(tmp_path):
    """Hard links back up and back to the root, a dataset under two names, a named
    datatype, soft and external links, deep nesting: the same datasets, names and order
    as H5Lvisit, and each object's attributes checked once (plus once more under a link
    back to the root, as the root is an object of its own)."""
    path = tmp_path / "walk.weights.h5"
    shutil.copyfile(FIXTURES / "lstm_sequential.weights.h5", path)
    with h5py.File(path, "a") as handle:
        handle["layers/lstm/cell/loop"] = handle["layers"]
        handle["layers/lstm/cell/root"] = handle["/"]
        handle["layers/lstm/twin"] = handle["layers/lstm/cell/vars/0"]
        handle["layers/lstm/twin"].attrs["pointer"] = handle.ref
        handle["a_type"] = np.dtype("f4")
        handle["layers/a_type_too"] = handle["a_type"]
        handle["layers/alias"] = h5py.SoftLink("lstm/cell/vars")
        handle["layers/outside"] = h5py.ExternalLink("elsewhere.h5", "/x")
        handle["empty"] = h5py.Empty("f4")
        group = handle
        for depth in range(200):
            group = group.create_group(f"d{depth}")
        group["deepest"] = np.zeros(3, "f4")
    artifact = read_artifact(path)
    assert list(artifact.weight_shapes.items()) == _shapes_in_visit_order(path)
    assert "empty" not in artifact.weight_shapes and len(artifact.weight_shapes) > 3
    assert [(f.path, f.kind) for f in artifact.hazards] == [
        ("/layers/lstm/cell/vars/0", "hdf5_reference"),
        ("/layers/outside", "hdf5_external_link"),
    ]
    for fixture in sorted(FIXTURES.glob("*.h5")):
        assert list(read_artifact(fixture).weight_shapes.items()) == _shapes_in_visit_order(
            fixture), fixture


def test_only_plain_contiguous_datasets_skip_their_creation_properties(tmp_path, monkeypatch):
    """The scan skips a dataset's creation property list only when its data lies contiguous
    in the file and its header has no filter pipeline or external file list message: every
    layout that can bring a hazard takes the full check, and findings stay the same."""
    raw = tmp_path / "raw.bin"
    raw.write_bytes(bytes(64))
    path = tmp_path / "layouts.h5"
    with h5py.File(path, "w") as handle:
        handle["contiguous"] = np.ones((4, 4), "f4")
        handle["scalar"] = np.float32(1)
        handle.create_dataset("unwritten", (4, 4), "f4")  # no data yet: no offset
        handle.create_dataset("chunked", data=np.ones((4, 4), "f4"), chunks=(2, 2))
        handle.create_dataset("deflate", data=np.ones((4, 4), "f4"), compression="gzip")
        handle.create_dataset("external", (4,), "f4", external=[(str(raw), 0, 16)])
        layout = h5py.VirtualLayout(shape=(4, 4), dtype="f4")
        layout[...] = h5py.VirtualSource(str(tmp_path / "elsewhere.h5"), "x", shape=(4, 4))
        handle.create_virtual_dataset("virtual", layout)
        compact = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        compact.set_layout(h5py.h5d.COMPACT)
        h5py.h5d.create(handle.id, b"compact", h5py.h5t.NATIVE_FLOAT, h5py.h5s.create_simple((4,)),
                        dcpl=compact)
    with h5py.File(path, "r") as handle:
        plain = {name for name in handle if h5_format.is_plain_contiguous(handle[name].id)}
        # The header summary names the two messages (filter pipeline 11, external list 7).
        present = {name: h5py.h5o.get_info(handle[name].id).hdr.mesg.present for name in handle}
    assert plain == {"contiguous", "scalar"}
    assert present["deflate"] & (1 << 11) and present["external"] & (1 << 7)
    assert not present["contiguous"] & ((1 << 11) | (1 << 7))
    artifact = read_artifact(path)
    hazards = artifact.hazards
    # Same findings and shapes with the shortcut off: it only skips reads that find nothing.
    monkeypatch.setattr(h5_format, "is_plain_contiguous", lambda dataset: False)
    slow = read_artifact(path)
    assert (slow.hazards, slow.weight_shapes) == (hazards, artifact.weight_shapes)
    assert {finding.kind for finding in hazards} == {"hdf5_external_storage", "hdf5_virtual_dataset"}


def test_many_hazards_are_capped_and_many_links_refused(tmp_path, monkeypatch):
    path = tmp_path / "many.weights.h5"
    shutil.copyfile(FIXTURES / "lstm_sequential.weights.h5", path)
    with h5py.File(path, "a") as handle:
        group = handle.create_group("links/deep/inside")
        for index in range(h5_format.MAX_FINDINGS + 50):
            group[f"l{index}"] = h5py.ExternalLink("/etc/hostname", "/x")
    artifact = read_artifact(path)
    assert len(artifact.hazards) == h5_format.MAX_FINDINGS + 1
    assert artifact.hazards[-1].detail == "50 more HDF5 hazards not listed"
    assert artifact.hazards[0].path.startswith("/links/deep/inside/l")
    monkeypatch.setattr(h5_format, "MAX_LINKS", 100)
    with pytest.raises(UnreadableModelError, match="more than 100 links"):
        read_artifact(path)


def test_walk_does_not_open_the_sources_of_an_unlimited_virtual_dataset(tmp_path):
    """The extent of an unlimited VDS comes from its source files: the read must not ask.

    The source is a FIFO: opening it would block, so a finished read proves it stayed shut.
    """
    fifo = tmp_path / "source.h5"
    os.mkfifo(fifo)
    path = tmp_path / "unlimited.weights.h5"
    shutil.copyfile(FIXTURES / "lstm_sequential.weights.h5", path)
    unlimited = h5py.h5s.UNLIMITED
    with h5py.File(path, "a") as handle:
        virtual = h5py.h5s.create_simple((4,), (unlimited,))
        virtual.select_hyperslab((0,), (unlimited,), (4,), (4,))
        source = h5py.h5s.create_simple((4,), (unlimited,))
        source.select_hyperslab((0,), (unlimited,), (4,), (4,))
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_virtual(virtual, str(fifo).encode(), b"data", source)
        h5py.h5d.create(handle.id, b"grows", h5py.h5t.NATIVE_FLOAT,
                        h5py.h5s.create_simple((4,), (unlimited,)), dcpl=dcpl)
    code = (
        "from surgery.io.formats import read_artifact\n"
        f"print([f.kind for f in read_artifact({str(path)!r}).hazards])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['hdf5_virtual_dataset']"


@pytest.mark.parametrize(
    "path",
    sorted(p for p in [*FIXTURES.glob("*"), *(FIXTURES / "keras2").glob("*")]
           if p.suffix in (".h5", ".keras")),
    ids=lambda p: p.name,
)
def test_every_fixture_reads_without_hazards(path):
    assert read_artifact(path).hazards == ()


def test_read_time_stays_linear(tmp_path):
    """10x the datasets (nested groups, an attribute per layer) costs about 10x the read, not
    100x: a ratio of two sizes, best of three each (shared CPUs make single timings noisy)."""
    import time

    def timed(layers: int) -> float:
        path = tmp_path / f"big_{layers}.weights.h5"
        with h5py.File(path, "w") as handle:
            for layer in range(layers):
                group = handle.create_group(f"layers/layer_{layer}/cell/vars")
                group.parent.attrs["name"] = f"layer_{layer}"
                for index in range(4):
                    group[str(index)] = np.zeros((4, 4), "f4")
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            artifact = read_artifact(path)
            best = min(best, time.perf_counter() - start)
        assert len(artifact.weight_shapes) == 4 * layers and artifact.hazards == ()
        return best

    small, large = timed(100), timed(1000)
    assert large < 40 * max(small, 1e-3), (small, large)


# ----------------------------------------------------------------------------------------
# The CLI refuses before anything is loaded or written


def run_cli(args: list, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, str(CLI), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_refused(work, result, outputs: list, inputs: list, cwd: Path, expect: str) -> None:
    assert result.returncode == 3, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "hdf5_" in lines[0] and expect in lines[0], lines[0]
    assert "--unsafe" in lines[0]
    for output in outputs:
        assert not Path(output).exists(), output
    for path in inputs:
        assert _sha256(path) == work["hashes"].get(path, _sha256(path)), path
    # Nothing written anywhere the tool could write: the working folder and the inputs'.
    written = [p for p in cwd.rglob("*") if p.is_file()]
    assert written == [], written
    models = work["folder"] / "models"
    for path in models.iterdir():
        assert path in work["hashes"], path
    for path in [*written, *models.iterdir()]:
        if path not in work["hashes"]:
            assert MARKER not in path.read_bytes(), path


@pytest.fixture
def cwd(tmp_path):
    folder = tmp_path / "cwd"
    folder.mkdir()
    return folder


EXPOSE_CASES = [case for case in CASES if case[0] != "k3_weights"]


@pytest.mark.parametrize("case", EXPOSE_CASES, ids=_case_id)
def test_expose_state_refuses(work, cwd, case):
    path = work["files"][case]
    output = cwd / ("out" + path.suffix)
    result = run_cli(["expose-state", path, "-o", output], cwd)
    assert_refused(work, result, [output, path.with_name(path.stem + ".exposed" + path.suffix)],
                   [path], cwd, ATTACKS[case[1]])


@pytest.mark.parametrize("attack", [a for a in EXTRA_ATTACKS if a != "reference_attribute"])
def test_expose_state_refuses_neighbours(work, cwd, attack):
    """(The reference case is a weights-only file: splice covers it below.)"""
    path = work["extras"][attack]
    output = cwd / "out.h5"
    result = run_cli(["expose-state", path, "-o", output], cwd)
    assert_refused(work, result, [output], [path], cwd, EXTRA_ATTACKS[attack])


@pytest.mark.parametrize("attack", ["external_storage", "external_link", "escaping_soft_link"])
@pytest.mark.parametrize("container", ["k3_h5", "tk_h5", "k3_keras", "tk_keras"])
def test_verify_refuses_a_malicious_original(work, cwd, container, attack):
    path = work["files"][(container, attack)]
    clean = FIXTURES / CONTAINERS[container][0]
    result = run_cli(["verify", path, clean], cwd)
    assert_refused(work, result, [], [path], cwd, ATTACKS[attack])


def test_verify_refuses_a_malicious_rebuilt_file(work, cwd):
    """The rebuilt file is read after the original was loaded: still refused before Keras."""
    path = work["files"][("tk_h5", "external_storage")]
    result = run_cli(["verify", FIXTURES / "keras2/k2_sequential.h5", path], cwd)
    assert_refused(work, result, [], [path], cwd, "hdf5_external_storage")


@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("side", ["a", "b"])
def test_splice_weights_refuses_weights_only_and_full_files(work, cwd, attack, side):
    """Weights mode reads a weights-only .h5 too: it must be refused like a model file."""
    malicious = work["files"][("k3_weights", attack)]
    clean = FIXTURES / "lstm_sequential.keras"
    a, b = (malicious, clean) if side == "a" else (clean, work["files"][("k3_keras", attack)])
    output = cwd / "spliced.keras"
    result = run_cli(["splice", a, b, "--mode", "weights", "-o", output], cwd)
    assert_refused(work, result, [output], [a, b], cwd, ATTACKS[attack])


def test_splice_weights_refuses_reference_attributes(work, cwd):
    path = work["extras"]["reference_attribute"]
    output = cwd / "spliced.keras"
    result = run_cli(["splice", path, FIXTURES / "lstm_sequential.keras", "--mode", "weights",
                      "-o", output], cwd)
    assert_refused(work, result, [output], [path], cwd, "hdf5_reference")


@pytest.mark.parametrize("container", ["tk_h5", "tk_keras"])
def test_convert_refuses(work, cwd, container):
    path = work["files"][(container, "virtual_dataset")]
    output = cwd / "converted.keras"
    result = run_cli(["convert", path, "-o", output], cwd)
    assert_refused(work, result, [output], [path], cwd, "hdf5_virtual_dataset")


def test_stream_refuses(work, cwd):
    path = work["files"][("k3_keras", "external_link")]
    output = cwd / "step"
    result = run_cli(["stream", path, "-o", output], cwd)
    assert_refused(work, result, [output], [path], cwd, "hdf5_external_link")


def test_split_seq2seq_refuses(work, cwd):
    path = work["files"][("tk_h5", "external_storage")]
    output = cwd / "split"
    result = run_cli(["split-seq2seq", path, "-o", output], cwd)
    assert_refused(work, result, [output], [path], cwd, "hdf5_external_storage")


def test_inspect_reads_without_touching_the_secret(work, cwd):
    """inspect is static: it names the hazard and never reads the rewired dataset's data."""
    path = work["files"][("tk_h5", "external_storage")]
    result = run_cli(["inspect", path, "--json"], cwd)
    assert MARKER.decode() not in result.stdout + result.stderr
    assert result.returncode == 0, result.stderr
    assert "hdf5_external_storage" in result.stdout
    assert _sha256(path) == work["hashes"][path]
    assert [p for p in cwd.rglob("*") if p.is_file()] == []


# ----------------------------------------------------------------------------------------
# Plain Keras on the same files: the attack is real


LOADER = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    family, marker, jobs = sys.argv[1], sys.argv[2].encode(), json.loads(sys.argv[3])
    if family == "keras3":
        import keras
        load = lambda p: keras.saving.load_model(p, compile=False)
    else:
        import tf_keras
        load = lambda p: tf_keras.models.load_model(p, compile=False)

    def outcome(action):
        try:
            model = action()
        except Exception as error:
            text = " ".join(f"{type(error).__name__}: {error}".split())
            return "refused: " + text[:600]
        leaked = any(marker in np.asarray(w).tobytes() for w in model.weights)
        return "leaked" if leaked else "loaded clean"

    clean_models = {}

    def load_weights(clean, path):
        if clean not in clean_models:
            model = load(clean)
            clean_models[clean] = (model, model.get_weights())
        model, weights = clean_models[clean]
        model.set_weights(weights)  # undo whatever the previous file loaded
        model.load_weights(path)
        return model

    results = {}
    for path, clean in jobs:
        results[path] = {"load_model": outcome(lambda: load(path))}
        if path.endswith(".h5"):
            results[path]["load_weights"] = outcome(lambda: load_weights(clean, path))
    print("RESULTS " + json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def plain_keras(work):
    """Load every malicious model file with its own Keras, both families side by side:
    `load_model(file)` and, for .h5, `load_weights(file)` into the clean model."""
    jobs = {}
    for family in ("keras3", "keras2"):
        pairs = [(str(path), str(FIXTURES / CONTAINERS[container][0]))
                 for (container, _), path in work["files"].items()
                 if CONTAINERS[container][3] == family]
        jobs[family] = subprocess.Popen(
            [sys.executable, "-c", LOADER, family, MARKER.decode(), json.dumps(pairs)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work["folder"])
    results = {}
    for family, job in jobs.items():
        stdout, stderr = job.communicate(timeout=300)
        line = [text for text in stdout.splitlines() if text.startswith("RESULTS ")]
        assert line, stderr[-2000:]
        results.update(json.loads(line[0][len("RESULTS "):]))
    return results


LOADABLE = [case for case in CASES if CONTAINERS[case[0]][3] is not None]


@pytest.mark.parametrize("case", LOADABLE, ids=_case_id)
def test_plain_keras_on_the_same_file(work, plain_keras, case):
    """What each loader does with the file our gate refuses.

    tf_keras load_model opens the file through a Python file object (GFile, or the zip
    member), and HDF5 then opens external-link and VDS targets through that same object,
    i.e. the model file itself: those fail or read fill values. External raw storage is
    read with plain POSIX calls and leaks. tf_keras load_weights opens the path directly,
    and every one of these attacks leaks. Keras 3.15 refuses all of them itself
    (saving_lib.safe_get_h5_dataset); our gate does not depend on that.
    """
    container, attack = case
    outcome = plain_keras[str(work["files"][case])]
    family = CONTAINERS[container][3]
    if attack == "dangling_soft_link":
        # Nothing to steal: every loader fails on the missing weight.
        assert all(text.startswith("refused") for text in outcome.values()), outcome
    elif family == "keras3":
        assert all(text.startswith("refused: ValueError") and "Not allowed" in text
                   for text in outcome.values()), outcome
    else:
        if attack == "external_storage":
            assert outcome["load_model"] == "leaked", outcome
        elif attack == "virtual_dataset":
            assert outcome["load_model"] == "loaded clean", outcome  # fill values
        else:
            assert outcome["load_model"].startswith("refused: KeyError"), outcome
        if "load_weights" in outcome:
            assert outcome["load_weights"] == "leaked", outcome


def test_a_link_name_with_a_slash_is_refused_without_following_it(tmp_path):
    """HDF5 link names are plain names, but a crafted file can hold 'grp/ext' (bytes patched in
    an old-style local heap): opening it would walk through 'grp' into the external link 'ext'
    and make libhdf5 open another file. The scan reports it and opens nothing by that name."""
    path = tmp_path / "slash.h5"
    missing = tmp_path / "never_opened.h5"
    with h5py.File(path, "w") as handle:  # libver earliest: names in a local heap, no checksums
        handle.create_group("grp")
        handle["grp"]["ext"] = h5py.ExternalLink(str(missing), "/")
        handle["zz_AAext"] = np.zeros(3)
    data = bytearray(path.read_bytes())
    at = data.find(b"zz_AAext")
    assert at > 0 and data.count(b"zz_AAext") == 1
    data[at:at + 8] = b"grp/ext\x00"
    path.write_bytes(bytes(data))
    names = []
    with h5py.File(path, "r") as handle:
        handle.id.links.iterate(lambda name, info: names.append(name), info=True)
        assert b"grp/ext" in names  # the crafted name is really there
        _shapes, findings = h5_format.scan_hdf5(str(path), handle, "")
    kinds = {(f.path, f.kind) for f in findings}
    assert ("/grp/ext", "hdf5_link_name") in kinds and ("/grp/ext", "hdf5_external_link") in kinds
    with pytest.raises(UnsafeContentError):
        ensure_artifact_safe(read_artifact(path), allow_unsafe=False)
