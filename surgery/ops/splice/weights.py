"""splice --mode weights: transplant the trained parameters of A's recurrent layers into B.

Everything up to the written file is static (no TensorFlow): the recurrent layers of both
files and where their weights are stored are found from the configs and the HDF5 metadata
(surgery.io.weight_store), matched (`match`, `plan_weights`), and the result is written as a
copy of B in which only the mapped weight datasets change. For a `.keras` B the new zip is
streamed in one pass: B's bytes are copied and the byte ranges of the mapped (contiguous)
datasets are replaced by A's converted weights, read row block by row block, so memory stays
flat whatever the model size. The checks of a written file are in weights_check.py.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from surgery.graph import layouts
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
    if item.transform.kind == "copy" and dataset.dtype == dtype:
        location = source.raw(dataset)
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


def write_weights(plan: WeightsPlan, temp: Path, *, progress=None) -> dict:
    """Write B with the planned weights replaced to `temp` (same format as B). Returns facts
    about the write: {"streamed": bool, "cast": [...]}."""
    step = progress or (lambda _m: None)
    b, a = plan.dest.artifact, plan.source.artifact
    items = assignments(plan)
    with open_store(a) as source, open_store(b) as dest:
        targets = _targets(dest, items)
        casts = sorted({f"{t.item.label}: {source[t.item.source_dataset].dtype} -> {t.dtype}"
                        for t in targets if source[t.item.source_dataset].dtype != t.dtype})
        streamed = all(t.offset is not None for t in targets)
        if streamed:
            step("writing (B copied, mapped weights streamed from A)")
            if b.format == "keras":
                _write_zip(b.path, temp, lambda writer, reader, size: _stream(reader, size, writer, targets, source))
            else:
                with open(b.path, "rb") as reader, open(temp, "wb") as writer:
                    _stream(reader, os.path.getsize(b.path), writer, targets, source)
        else:
            step("writing (B copied, mapped weights edited in place)")
            _write_edited(b, temp, targets, source)
    return {"streamed": streamed, "cast": casts}


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


def _copy_range(reader, writer, start: int, end: int) -> None:
    reader.seek(start)
    remaining = end - start
    buffer = bytearray(min(COPY_BYTES, max(remaining, 1)))
    view = memoryview(buffer)
    while remaining > 0:
        got = reader.readinto(view[: min(len(buffer), remaining)])
        if not got:
            raise UnreadableModelError(f"B's weights end {remaining} bytes early")
        writer.write(view[:got])
        remaining -= got


def _stream(reader, size: int, writer, targets: list, source: OpenStore) -> None:
    position = 0
    for target in sorted(targets, key=lambda t: t.offset):
        if target.offset < position or target.offset + target.nbytes > size:
            raise UnreadableModelError(f"B's dataset {target.item.dest_dataset!r} overlaps another or the end")
        _copy_range(reader, writer, position, target.offset)
        written = 0
        for chunk in produce(source, target.item, target.dtype, reuse=True):
            view = memoryview(chunk).cast("B")
            writer.write(view)
            written += len(view)
        if written != target.nbytes:
            raise VerificationError(f"{target.item.label}: produced {written} bytes for a {target.nbytes}-byte weight")
        position = target.offset + target.nbytes
    _copy_range(reader, writer, position, size)


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
