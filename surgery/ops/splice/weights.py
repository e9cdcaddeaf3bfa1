"""splice --mode weights: transplant the trained parameters of A's recurrent layers into B.

Everything up to the written file is static (no TensorFlow): the recurrent layers of both
files and where their weights are stored are found from the configs and the HDF5 metadata
(surgery.io.weight_store), matched (`match`, `plan_weights`), and the result is written as a
copy of B in which only the mapped weight datasets change. When they are contiguous, the new
file is stitched in one pass (`write_weights`): B's bytes between them, and A's bytes that
need no conversion, are copied by the kernel (copy_file_range); converted weights are written
row block by row block as they are produced, so memory stays flat whatever the model size.
A and B are each read once meanwhile, on a background thread (`SourceDigests`): their SHA-256
for the manifest, their zip members' CRC-32 checked, and the CRC-32s the new member's is
combined from. The checks of a written file are in weights_check.py.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from surgery.graph import layouts
from surgery.io import copying
from surgery.io.artifact import ModelArtifact
from surgery.errors import UnreadableModelError, UsageError, VerificationError
from surgery.io.formats import keras_zip
from surgery.io.weight_store import (
    CHUNK_BYTES,
    COPY_BYTES,
    OpenStore,
    StoredLayer,
    WeightStore,
    member_info,
    open_store,
    read_range,
    read_store,
)


@dataclass(frozen=True)
class WeightPair:
    source: StoredLayer
    dest: StoredLayer
    how: str                    # map | name | order
    transforms: tuple           # per cell: tuple of WeightTransform

    def as_dict(self) -> dict:
        weights = []
        for s_cell, d_cell, transforms in zip(self.source.cells, self.dest.cells, self.transforms):
            for t in transforms:
                weights.append({
                    "weight": f"{d_cell.label}/{t.role}" if d_cell.label else t.role,
                    "source_dataset": s_cell.datasets[t.source_role],
                    "dest_dataset": d_cell.datasets[t.role],
                    "source_shape": list(t.source_shape), "shape": list(t.shape),
                    "conversion": t.note() or None,
                })
        return {"source": self.source.path, "source_class": self.source.class_name,
                "dest": self.dest.path, "dest_class": self.dest.class_name, "matched_by": self.how,
                "source_layout": [c.layout.describe() for c in self.source.cells], "weights": weights}


@dataclass
class WeightsPlan:
    source: WeightStore
    dest: WeightStore
    pairs: list
    unmatched_sources: list
    unmatched_dests: list

    @property
    def notes(self) -> list:
        return self.source.notes + self.dest.notes

    def as_dict(self) -> dict:
        return {"mode": "weights", "pairs": [p.as_dict() for p in self.pairs],
                "unmatched_in_a": [s.path for s in self.unmatched_sources],
                "unchanged_in_b": [d.path for d in self.unmatched_dests], "notes": self.notes}

    def lines(self) -> list:
        out = []
        for pair in self.pairs:
            out.append(f"A:{pair.source.path} ({pair.source.class_name}) -> B:{pair.dest.path} "
                       f"({pair.dest.class_name})  [by {pair.how}]")
            for item in pair.as_dict()["weights"]:
                conv = f"  ({item['conversion']})" if item["conversion"] else ""
                out.append(f"    {item['weight']}: {tuple(item['source_shape'])} -> {tuple(item['shape'])}{conv}")
        for d in self.unmatched_dests:
            out.append(f"B:{d.path} ({d.class_name}) keeps its weights (no match in A)")
        for s in self.unmatched_sources:
            out.append(f"A:{s.path} ({s.class_name}) is not used")
        out.extend(f"note: {n}" for n in self.notes)
        return out


def _names_of(layer: StoredLayer) -> set:
    return {layer.name, layer.path, *layer.sites, layer.group}


def _find(layers: list, wanted: str, side: str, artifact) -> StoredLayer:
    hits = [layer for layer in layers if wanted in _names_of(layer)]
    if not hits:
        known = ", ".join(layer.path for layer in layers) or "none"
        raise UsageError(f"{side} ({artifact.path}) has no recurrent layer {wanted!r}; its recurrent layers: {known}")
    if len(hits) > 1:
        raise UsageError(f"{wanted!r} names {len(hits)} layers of {side}: {', '.join(h.path for h in hits)}; use a path")
    return hits[0]


def pair_layers(source: StoredLayer, dest: StoredLayer, how: str) -> WeightPair:
    where = f"A:{source.path} ({source.class_name}) into B:{dest.path} ({dest.class_name})"
    if len(source.cells) != len(dest.cells):
        raise UsageError(
            f"cannot splice {where}: {len(source.cells)} cell(s) {_shapes_of(source)} vs "
            f"{len(dest.cells)} cell(s) {_shapes_of(dest)}"
        )
    transforms = []
    for s_cell, d_cell in zip(source.cells, dest.cells):
        transforms.append(tuple(layouts.plan_conversion(
            s_cell.layout, d_cell.layout,
            source_name=f"A:{source.path}{'/' + s_cell.label if s_cell.label else ''}",
            dest_name=f"B:{dest.path}{'/' + d_cell.label if d_cell.label else ''}")))
    return WeightPair(source, dest, how, tuple(transforms))


def _shapes_of(layer: StoredLayer) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in layer.shapes().items()) + "}"


def _compatible(source: StoredLayer, dest: StoredLayer) -> bool:
    try:
        pair_layers(source, dest, "order")
        return True
    except UsageError:
        return False


def match(source: WeightStore, dest: WeightStore, mapping: list) -> WeightsPlan:
    """Explicit SRC=DST pairs when given; otherwise same name, then same order among compatible."""
    if not source.layers:
        raise UsageError(f"A ({source.model_artifact.path}) holds no recurrent layer weights to splice")
    if not dest.layers:
        raise UsageError(f"B ({dest.model_artifact.path}) has no recurrent layer whose weights can be replaced")
    pairs = []
    if mapping:
        used_src, used_dst = set(), set()
        for src_name, dst_name in mapping:
            src = _find(source.layers, src_name, "A", source.model_artifact)
            dst = _find(dest.layers, dst_name, "B", dest.model_artifact)
            if id(dst) in used_dst:
                raise UsageError(f"B:{dst.path} is mapped twice")
            used_src.add(id(src))
            used_dst.add(id(dst))
            pairs.append(pair_layers(src, dst, "map"))
    else:
        free_src = list(source.layers)
        free_dst = list(dest.layers)
        for dst in list(free_dst):
            src = next((s for s in free_src if s.path == dst.path or s.name == dst.name), None)
            if src is not None:
                pairs.append(pair_layers(src, dst, "name"))
                free_src.remove(src)
                free_dst.remove(dst)
        for dst in list(free_dst):
            src = next((s for s in free_src if _compatible(s, dst)), None)
            if src is not None:
                pairs.append(pair_layers(src, dst, "order"))
                free_src.remove(src)
                free_dst.remove(dst)
        if not pairs:
            raise UsageError(
                "no layer of A fits a layer of B (by name or by order with compatible shapes): A has "
                + "; ".join(f"{s.path} {_shapes_of(s)}" for s in source.layers) + " and B has "
                + "; ".join(f"{d.path} {_shapes_of(d)}" for d in dest.layers) + "; pass --map SRC=DST"
            )
    paired_src = {id(p.source) for p in pairs}
    paired_dst = {id(p.dest) for p in pairs}
    order = {id(d): i for i, d in enumerate(dest.layers)}
    pairs.sort(key=lambda p: order[id(p.dest)])
    return WeightsPlan(source, dest, pairs,
                       [s for s in source.layers if id(s) not in paired_src],
                       [d for d in dest.layers if id(d) not in paired_dst])


def plan_weights(a: ModelArtifact, b: ModelArtifact, mapping: list, *, unsafe: bool = False,
                 custom_objects=None) -> WeightsPlan:
    if b.weights_only:
        raise UsageError(f"B ({b.path}) holds weights only; splice writes a model, so B must be a full model file")
    return match(read_store(a, unsafe=unsafe, custom_objects=custom_objects),
                 read_store(b, unsafe=unsafe, custom_objects=custom_objects), mapping)


# ----------------------------------------------------------------------------------------
# Producing the new weights


@dataclass(frozen=True)
class Assignment:
    """One destination dataset and how to produce its new bytes from A."""

    dest_dataset: str
    source_dataset: str
    transform: layouts.WeightTransform
    label: str                  # "B:<layer path>/<weight>"


def assignments(plan: WeightsPlan) -> list:
    out = []
    for pair in plan.pairs:
        for s_cell, d_cell, transforms in zip(pair.source.cells, pair.dest.cells, pair.transforms):
            for t in transforms:
                label = f"B:{pair.dest.path}/{d_cell.label + '/' if d_cell.label else ''}{t.role}"
                out.append(Assignment(d_cell.datasets[t.role], s_cell.datasets[t.source_role], t, label))
    return out


def produce(source: OpenStore, item: Assignment, dtype: np.dtype, chunk_bytes: int = CHUNK_BYTES,
            reuse: bool = False) -> Iterator:
    """The destination weight's bytes in C order, as consecutive pieces (arrays of `dtype`, or
    raw memoryviews when A's bytes are copied as they are). Memory stays at one piece."""
    dataset = source[item.source_dataset]
    dtype = np.dtype(dtype)
    location = raw_location(source, item, dtype)
    if location is not None:
        yield from read_range(source.path, *location, chunk_bytes=chunk_bytes, reuse=reuse)
        return
    if item.transform.kind == "copy" and dataset.ndim >= 2 and dataset.shape[0] > 1:
        row_bytes = max(1, int(np.prod(dataset.shape[1:])) * dataset.dtype.itemsize)
        step = max(1, chunk_bytes // row_bytes)
        for start in range(0, dataset.shape[0], step):
            yield np.ascontiguousarray(dataset[start:start + step], dtype=dtype)
        return
    # Small (biases) or relayouts that need whole gate blocks: one array.
    yield np.ascontiguousarray(item.transform.apply(dataset[()]), dtype=dtype)


def raw_location(source: OpenStore, item: Assignment, dtype) -> tuple | None:
    """(offset in A's file, nbytes) when the destination weight's bytes are A's bytes as they
    are (a plain copy of a contiguous dataset of the same dtype), else None."""
    dataset = source[item.source_dataset]
    if item.transform.kind != "copy" or dataset.dtype != np.dtype(dtype):
        return None
    return source.raw(dataset)


def converted(source: OpenStore, item: Assignment, dtype) -> np.ndarray:
    """The whole converted weight as one array (for Keras; small models)."""
    dtype = np.dtype(dtype)
    pieces = [np.frombuffer(bytes(c), dtype=dtype) if isinstance(c, memoryview) else np.asarray(c).reshape(-1)
              for c in produce(source, item, dtype)]
    return np.concatenate(pieces).reshape(item.transform.shape)


# ----------------------------------------------------------------------------------------
# Writing


@dataclass
class _Target:
    item: Assignment
    offset: int | None          # byte offset in the HDF5 store, None if not contiguous
    nbytes: int
    dtype: np.dtype
    shape: tuple


def _targets(dest: OpenStore, items: list) -> list:
    out = []
    for item in items:
        dataset = dest.get(item.dest_dataset)
        if not isinstance(dataset, h5py.Dataset):
            raise UnreadableModelError(f"B has no dataset {item.dest_dataset!r} for {item.label}")
        if tuple(dataset.shape) != tuple(item.transform.shape):
            raise UsageError(f"{item.label}: B stores shape {tuple(dataset.shape)}, A's weight converts to "
                             f"{tuple(item.transform.shape)}")
        offset = None
        if dataset.chunks is None and dataset.compression is None and not dataset.fletcher32:
            offset = dataset.id.get_offset()
            if offset is not None and dataset.id.get_storage_size() != dataset.nbytes:
                offset = None
        out.append(_Target(item, offset, int(dataset.nbytes), dataset.dtype, tuple(dataset.shape)))
    return out


def write_weights(plan: WeightsPlan, temp: Path, *, progress=None, digests: SourceDigests | None = None) -> dict:
    """Write B with the planned weights replaced to `temp` (same format as B). Returns facts
    about the write: {"streamed": bool, "cast": [...]}.

    Streamed (every mapped dataset of B contiguous, B's weights addressable in its file): the
    new file is B's bytes with the mapped datasets' ranges replaced, B's own bytes and A's
    bytes that need no conversion copied by the kernel, converted weights written as they
    are produced. `digests` (SourceDigests, started by the caller; else here) read A and B
    once meanwhile; this waits for them, so a corrupt input has failed when it returns.
    """
    step = progress or (lambda _m: None)
    if digests is None:
        digests = SourceDigests(plan.source.model_artifact, plan.dest.model_artifact, copy_ranges(plan))
    try:
        streamed, casts = _write(plan, temp, digests, step)
    except BaseException:
        digests.cancel()  # nobody waits for them any more
        raise
    digests.wait()
    return {"streamed": streamed, "cast": casts}


def _write(plan: WeightsPlan, temp: Path, digests: SourceDigests, step) -> tuple[bool, list]:
    b, a = plan.dest.artifact, plan.source.artifact
    with open_store(a) as source, open_store(b) as dest:
        targets = _targets(dest, assignments(plan))
        casts = sorted({f"{t.item.label}: {source[t.item.source_dataset].dtype} -> {t.dtype}"
                        for t in targets if source[t.item.source_dataset].dtype != t.dtype})
        streamed = dest.base is not None and all(t.offset is not None for t in targets)
        if streamed:
            step("writing (B copied, mapped weights copied or converted from A)")
            pieces = _pieces(dest, _image_size(b, dest), targets, source)
            if b.format == "keras":
                _write_stitched_zip(b.path, temp, pieces, digests)
            else:
                with open(temp, "wb") as out:
                    copying.write_pieces(out.fileno(), 0, pieces)
        else:
            step("writing (B copied, mapped weights edited in place)")
            _write_edited(b, temp, targets, source)
    return streamed, casts


def copy_ranges(plan: WeightsPlan) -> list:
    """The ranges of A's and B's files (copying.FileRange) a streamed write copies by the kernel
    (none when it cannot stream): what SourceDigests takes the CRC-32 of."""
    with open_store(plan.source.artifact) as source, open_store(plan.dest.artifact) as dest:
        targets = _targets(dest, assignments(plan))
        if dest.base is None or any(t.offset is None for t in targets):
            return []
        pieces = _pieces(dest, _image_size(plan.dest.artifact, dest), targets, source)
        return [piece for piece in pieces if isinstance(piece, copying.FileRange)]


def _image_size(b: ModelArtifact, dest: OpenStore) -> int:
    if b.format != "keras":
        return os.path.getsize(b.path)
    with zipfile.ZipFile(b.path) as archive:
        return member_info(b.path, archive).file_size


def _pieces(dest: OpenStore, size: int, targets: list, source: OpenStore) -> list:
    """B's weights image as pieces in order: B's own bytes between the mapped datasets, and for
    each of those A's bytes as they are or A's weight converted (produced when written)."""
    pieces, position = [], 0
    for target in sorted(targets, key=lambda t: t.offset):
        if target.offset < position or target.offset + target.nbytes > size:
            raise UnreadableModelError(f"B's dataset {target.item.dest_dataset!r} overlaps another or the end")
        if target.offset > position:
            pieces.append(copying.FileRange(dest.path, dest.base + position, dest.base + target.offset))
        location = raw_location(source, target.item, target.dtype)
        if location is not None and location[1] == target.nbytes:
            pieces.append(copying.FileRange(source.path, location[0], location[0] + location[1]))
        else:
            pieces.append(_produced(source, target))
        position = target.offset + target.nbytes
    if position < size:
        pieces.append(copying.FileRange(dest.path, dest.base + position, dest.base + size))
    return pieces


def _produced(source: OpenStore, target: _Target):
    written = 0
    for chunk in produce(source, target.item, target.dtype, reuse=True):
        view = memoryview(chunk).cast("B")
        written += len(view)
        yield view
    if written != target.nbytes:
        raise VerificationError(f"{target.item.label}: produced {written} bytes for a {target.nbytes}-byte weight")


def _write_stitched_zip(b_path: str, temp: Path, pieces: list, digests: SourceDigests) -> None:
    """B's zip with its weights member stitched from `pieces`; the other members copied raw
    (their CRC-32 checked by B's digest). The new member's CRC-32 is combined from the CRC-32s
    of its pieces: those the digests took of the copied ranges, and the produced ones'."""

    def member_crc(written: list) -> int:
        return copying.crc32_of_runs(
            (crc if crc is not None else digests.crc32(piece.path, piece.start, piece.end), length)
            for piece, (length, crc) in zip(pieces, written))

    with zipfile.ZipFile(b_path) as archive, zipfile.ZipFile(temp, "w", allowZip64=True) as out:
        out.comment = archive.comment
        for info in archive.infolist():
            if info.filename == keras_zip.WEIGHTS_MEMBER:
                keras_zip.copy_member_stitched(b_path, out, info, pieces, member_crc)
            else:
                keras_zip.copy_member(b_path, archive, out, info, crc_checked=True)


def _write_zip(b_path: str, temp: Path, write_weights_member) -> None:
    with zipfile.ZipFile(b_path) as archive, zipfile.ZipFile(temp, "w", allowZip64=True) as out:
        out.comment = archive.comment
        for info in archive.infolist():
            if info.filename == keras_zip.WEIGHTS_MEMBER:
                clone = keras_zip.clone_info(info)
                with keras_zip.open_member_seekable(b_path, archive, info) as reader, \
                        out.open(clone, "w", force_zip64=info.file_size > 0x7FFFFFFF) as writer:
                    write_weights_member(writer, reader, info.file_size)
            else:
                keras_zip.copy_member(b_path, archive, out, info)


def _write_edited(b: ModelArtifact, temp: Path, targets: list, source: OpenStore) -> None:
    """B's weights store copied to a temporary HDF5 file, edited in place with h5py."""
    from surgery.io.saving import scratch_dir

    with scratch_dir(temp) as work:  # beside the output, and in the temp log for a supervisor
        store = work / "weights.h5"
        if b.format == "keras":
            with zipfile.ZipFile(b.path) as archive, archive.open(member_info(b.path, archive)) as member, \
                    open(store, "wb") as out:
                shutil.copyfileobj(member, out, COPY_BYTES)
        else:
            shutil.copyfile(b.path, store)
        with h5py.File(store, "r+", locking=False) as handle:
            for target in targets:
                dataset = handle[target.item.dest_dataset]
                flat = dataset.shape[0] if dataset.ndim else 0
                row = 0
                for chunk in produce(source, target.item, target.dtype):
                    if isinstance(chunk, memoryview):
                        chunk = _rows(np.frombuffer(chunk, dtype=target.dtype), dataset.shape)
                    if dataset.ndim == 0 or chunk.shape == dataset.shape:
                        dataset[...] = chunk
                    else:
                        dataset[row:row + chunk.shape[0]] = chunk
                        row += chunk.shape[0]
                if dataset.ndim and row not in (0, flat):
                    raise VerificationError(f"{target.item.label}: wrote {row} of {flat} rows")
        if b.format == "keras":
            with open(store, "rb") as reader:
                _write_zip(b.path, temp, lambda writer, _r, _s: shutil.copyfileobj(reader, writer, COPY_BYTES))
        else:
            shutil.copyfile(store, temp)


def _rows(flat: np.ndarray, shape: tuple) -> np.ndarray:
    if len(shape) < 2:
        return flat.reshape(shape)
    row = int(np.prod(shape[1:]))
    if flat.size % row:
        raise VerificationError(f"a piece of {flat.size} values does not split into rows of {row}")
    return flat.reshape((-1, *shape[1:]))


# ----------------------------------------------------------------------------------------
# Source hashing (on a second thread while the write runs)


# ----------------------------------------------------------------------------------------
# One read of each input, beside the write


class SourceDigests:
    """One read each of A and B on a background thread while the new file is written:

    - the SHA-256 of each, for the manifest (iterating gives A's and B's, each with result());
    - the CRC-32 of every stored zip member of each, checked against the recorded one, so a
      corrupt input fails before anything is committed (result(), crc32() and wait() raise);
    - the CRC-32 of each range a streamed write copies (`ranges`, from copy_ranges), from which
      the new weights member's own is combined without reading anything again.

    A SavedModel directory is hashed file by file (writers.sha256_of). `cancel()` stops the
    reads when their results are no longer wanted (the write failed).
    """

    def __init__(self, a: ModelArtifact, b: ModelArtifact, ranges=()):
        self._stop = threading.Event()
        wanted: dict = {}
        for piece in ranges:
            wanted.setdefault(os.path.realpath(piece.path), []).append((piece.start, piece.end))
        # One input after the other: reading and hashing A and B at once (a thread each) was
        # measured slower on a busy 2-core machine (1 GB: 4.0 s vs 3.4 s, CPU +0.2 s), with
        # the kernel copies of the write competing for the same cores.
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="splice-digest")
        self._tasks: dict = {}
        for artifact in (b, a):  # B first: its members' check gates every member copied raw
            key = os.path.realpath(artifact.path)
            if key not in self._tasks:
                self._tasks[key] = pool.submit(_digest_checked, artifact.path, wanted.pop(key, []),
                                               artifact.format == "keras", True, self._stop)
        for path, extra in wanted.items():  # a SavedModel's weights, materialized as an .h5
            self._tasks[path] = pool.submit(_digest_checked, path, extra, False, False, self._stop)
        pool.shutdown(wait=False)
        self._shas = [_Sha(self._tasks[os.path.realpath(artifact.path)]) for artifact in (a, b)]

    def __iter__(self):
        return iter(self._shas)

    def crc32(self, path: str, start: int, end: int) -> int:
        return self._tasks[os.path.realpath(path)].result().crc32(start, end)

    def wait(self) -> None:
        for task in self._tasks.values():
            task.result()

    def cancel(self) -> None:
        self._stop.set()


class _Sha:
    def __init__(self, task: concurrent.futures.Future):
        self._task = task

    def result(self) -> str:
        return self._task.result().sha256


def _digest_checked(path: str, ranges: list, zip_members: bool, sha256: bool, stop) -> copying.FileDigest:
    if os.path.isdir(path):
        from surgery.io.writers import sha256_of

        return copying.FileDigest(path, 0, sha256_of(path), ())
    members = keras_zip.stored_members(path) if zip_members else []
    digest = copying.digest_file(path, [*ranges, *((start, end) for start, end, _info in members)], sha256=sha256,
                                 stop=stop)
    keras_zip.check_stored_members(path, members, digest)
    return digest
