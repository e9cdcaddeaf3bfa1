"""splice --mode weights: transplant the trained parameters of A's recurrent layers into B.

Everything up to the written file is static (no TensorFlow): the recurrent layers of both
files and where their weights are stored are found from the configs and the HDF5 metadata,
matched, and the result is written as a copy of B in which only the mapped weight datasets
change. For a `.keras` B the new zip is streamed in one pass: B's bytes are copied and the
byte ranges of the mapped (contiguous) datasets are replaced by A's converted weights, read
row block by row block, so memory stays flat whatever the model size. A written file is
then checked statically (every unmapped weight hashes the same as in B, every mapped one
equals A's converted weights), and by default numerically in Keras: B's layers hold exactly
A's converted weights and the spliced layers' outputs equal the NumPy oracle run with them.

Where the weights live:

- `.keras` (Keras 3) and Keras 3 `.weights.h5`: `layers/<snake_class>[_n]/...`, keyed by
  class-name counters in `model.layers` order (config order), not by layer names. Recent
  Keras also records each layer's name as a `name` attribute on its `vars` group; it is
  used when present, the counters otherwise. Inside a layer: `cell/vars/{0,1,2}` (kernel,
  recurrent_kernel, bias), `forward_layer/...`/`backward_layer/...` (Bidirectional),
  `cell/cells/<snake_cell_class>[_n]/vars` (StackedRNNCells).
- legacy HDF5 (Keras 2 full or weights-only, Keras 3 `model.save("x.h5")`): a group per
  top-level layer, named after it, whose `weight_names` attribute lists its datasets in
  the order Keras loads them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import re
import shutil
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from surgery.graph import layouts, registry
from surgery.io.artifact import ModelArtifact
from surgery.errors import (
    NotSupportedError,
    UnreadableModelError,
    UsageError,
    VerificationError,
)
from surgery.io.formats import keras_zip
from surgery.graph.level import is_model_entry
from surgery.graph.sites import find_sites

CHUNK_BYTES = 8 << 20  # rows of a mapped weight read and written at a time
COPY_BYTES = 1 << 20

_CLASS_FROM_SNAKE = {
    "lstm": "LSTM", "gru": "GRU", "simple_rnn": "SimpleRNN", "conv_lstm1d": "ConvLSTM1D",
    "conv_lstm2d": "ConvLSTM2D", "conv_lstm3d": "ConvLSTM3D", "rnn": "RNN", "bidirectional": "Bidirectional",
    "cu_dnnlstm": "CuDNNLSTM", "cu_dnngru": "CuDNNGRU",
}
_CELL_SNAKE = {"lstm_cell": "LSTMCell", "gru_cell": "GRUCell", "simple_rnn_cell": "SimpleRNNCell",
               "conv_lstm_cell": "ConvLSTMCell"}


# ----------------------------------------------------------------------------------------
# What is stored where


@dataclass(frozen=True)
class StoredCell:
    """One recurrent cell's weights in a file."""

    label: str                  # "" | "forward" | "backward" | "cells[1]" | "forward.cells[0]" ...
    layout: layouts.CellLayout
    datasets: dict              # role -> dataset path in the HDF5 store
    class_name: str | None = None


@dataclass(frozen=True)
class StoredLayer:
    """One recurrent layer's weights in a file (all calls of a shared layer share them)."""

    name: str
    path: str                   # nested model names and the layer name, joined by "/"
    class_name: str
    cells: tuple
    sites: tuple = ()           # site names of its calls (models with a config)
    group: str = ""             # HDF5 group holding it

    def shapes(self) -> dict:
        out = {}
        for cell in self.cells:
            for role, shape in cell.layout.shapes().items():
                out[f"{cell.label}/{role}" if cell.label else role] = tuple(shape)
        return out

    def as_dict(self) -> dict:
        return {"name": self.name, "path": self.path, "class": self.class_name,
                "layout": [c.layout.describe() for c in self.cells],
                "weights": {k: list(v) for k, v in self.shapes().items()}}


@dataclass
class WeightStore:
    """The HDF5 weights of a model file: the file itself, or the `.keras` weights member.

    For a SavedModel, `artifact` is a temporary legacy .h5 written from the loaded model and
    `origin` the SavedModel itself (what is loaded, hashed and named in messages).
    """

    artifact: ModelArtifact
    layers: list
    notes: list = field(default_factory=list)
    kind: str = ""              # keras3 | legacy
    origin: ModelArtifact | None = None
    keepalive: object = None    # the temporary directory behind a materialized store

    @property
    def model_artifact(self) -> ModelArtifact:
        return self.origin or self.artifact

    @property
    def member(self) -> str | None:
        return keras_zip.WEIGHTS_MEMBER if self.artifact.format == "keras" else None


class OpenStore:
    """An open HDF5 weights store, plus raw byte access to its contiguous datasets.

    `base` is the absolute file offset of the HDF5 image: 0 for an .h5 file, the data offset
    of a stored (uncompressed) weights member of a .keras zip; None when the bytes are not
    addressable in place (a compressed member). Raw reads skip h5py for bulk data.
    """

    def __init__(self, handle: h5py.File, path: str, base: int | None):
        self.h5 = handle
        self.path = path
        self.base = base

    def __getitem__(self, key):
        return self.h5[key]

    def get(self, key):
        return self.h5.get(key)

    def raw(self, dataset: h5py.Dataset) -> tuple | None:
        """(absolute offset, nbytes) of a dataset's bytes in the file, when contiguous."""
        if self.base is None or dataset.chunks is not None or dataset.compression is not None:
            return None
        offset = dataset.id.get_offset()
        if offset is None or dataset.id.get_storage_size() != dataset.nbytes:
            return None
        return self.base + offset, int(dataset.nbytes)

    def blocks(self, dataset: h5py.Dataset, chunk_bytes: int = CHUNK_BYTES, reuse: bool = False) -> Iterator:
        """The dataset's bytes (raw, in file byte order) or values, in consecutive pieces."""
        location = self.raw(dataset)
        if location is None:
            yield from _blocks(dataset, chunk_bytes)
            return
        yield from read_range(self.path, *location, chunk_bytes=chunk_bytes, reuse=reuse)


def read_range(path: str, offset: int, nbytes: int, *, chunk_bytes: int = CHUNK_BYTES, reuse: bool = False):
    """memoryviews over bytes [offset, offset + nbytes) of a file, chunk by chunk.

    reuse=True recycles one buffer: each view is only valid until the next one is taken.
    """
    size = max(1, min(chunk_bytes, nbytes))
    buffer = bytearray(size) if reuse else None
    with open(path, "rb", buffering=0) as handle:
        handle.seek(offset)
        remaining = nbytes
        while remaining > 0:
            target = buffer if reuse else bytearray(min(size, remaining))
            view = memoryview(target)[: min(size, remaining)]
            got = handle.readinto(view)
            if not got:
                raise UnreadableModelError(f"{path}: ends {remaining} bytes before a weight's end")
            yield view[:got]
            remaining -= got


@contextlib.contextmanager
def open_store(artifact: ModelArtifact) -> Iterator[OpenStore]:
    """The weights of a model file as an open read-only store."""
    path = artifact.path
    try:
        if artifact.format == "keras":
            with zipfile.ZipFile(path) as archive:
                info = _member_info(path, archive)
                base = (keras_zip._stored_data_offset(path, archive, info)
                        if info.compress_type == zipfile.ZIP_STORED else None)
                with keras_zip._open_member_seekable(path, archive, info) as member, \
                        h5py.File(member, "r") as handle:
                    yield OpenStore(handle, path, base)
        elif artifact.format == "h5":
            with h5py.File(path, "r", locking=False) as handle:
                yield OpenStore(handle, path, 0 if handle.userblock_size == 0 else None)
        else:
            raise NotSupportedError(
                f"{path!r} is a {artifact.format}: splice --mode weights reads weights from .keras "
                "and .h5 files (a SavedModel keeps them in a TensorFlow checkpoint)"
            )
    except (OSError, zipfile.BadZipFile) as error:
        raise UnreadableModelError(f"{path}: cannot read its weights ({error})") from None


def _member_info(path: str, archive: zipfile.ZipFile) -> zipfile.ZipInfo:
    try:
        return archive.getinfo(keras_zip.WEIGHTS_MEMBER)
    except KeyError:
        raise UnreadableModelError(f"{path}: the .keras file has no {keras_zip.WEIGHTS_MEMBER}") from None


def read_store(artifact: ModelArtifact, *, unsafe: bool = False, custom_objects=None) -> WeightStore:
    """Every recurrent layer whose weights the file holds, with dataset paths and layouts.

    A SavedModel keeps its weights in a TensorFlow checkpoint: it is loaded through Keras
    (after the safety scan) and its weights written to a temporary legacy .h5 first.
    """
    if artifact.format == "savedmodel":
        work = tempfile.TemporaryDirectory(prefix="lstm-surgery-splice-")
        store = read_store(materialize(artifact, Path(work.name), unsafe=unsafe, custom_objects=custom_objects))
        store.origin, store.keepalive = artifact, work
        return store
    with open_store(artifact) as store_handle:
        handle = store_handle.h5
        if "layer_names" in handle.attrs or "model_weights" in handle:
            store = WeightStore(artifact, [], kind="legacy")
            _read_legacy(handle, artifact, store)
        elif "layers" in handle or artifact.format == "keras":
            store = WeightStore(artifact, [], kind="keras3")
            if artifact.model_config is not None:
                _read_keras3_with_config(handle, artifact, store)
            else:
                _read_keras3_without_config(handle, store)
        else:
            raise UnreadableModelError(
                f"{artifact.path}: no Keras weights layout found (neither a 'layers' group nor "
                "'layer_names'/'model_weights')"
            )
    return store


def materialize(artifact: ModelArtifact, folder: Path, *, unsafe: bool = False, custom_objects=None) -> ModelArtifact:
    """The weights of a model Keras can load, written as a legacy .h5 beside its config."""
    from surgery.io.loading import load_model
    from surgery.io.quiet import quiet

    model = load_model(artifact, unsafe=unsafe, custom_objects=custom_objects)
    path = folder / "weights.h5"
    with quiet():
        model.save_weights(str(path))
    return ModelArtifact(str(path), "h5", artifact.family, artifact.model_config, artifact.keras_version, {})


# ---- Keras 3 layout ---------------------------------------------------------------------


def snake_case(name: str) -> str:
    """keras.src.utils.naming.to_snake_case, which names the groups of a .keras weights file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _entry_name(entry: dict) -> str:
    return entry.get("name") or entry.get("config", {}).get("name", "")


def _container_entries(model_entry: dict) -> list:
    """The layers of a model config in `model.layers` order (Sequential hides its InputLayer)."""
    layers = model_entry.get("config", {}).get("layers", [])
    if model_entry.get("class_name") == "Sequential":
        layers = [e for e in layers if e.get("class_name") != "InputLayer"]
    return layers


def _counter_names(entries: list) -> list:
    used: dict = {}
    names = []
    for entry in entries:
        base = snake_case(entry.get("class_name", "layer"))
        if base in used:
            used[base] += 1
            names.append(f"{base}_{used[base]}")
        else:
            used[base] = 0
            names.append(base)
    return names


def _child_group(handle, container: str, entries: list, wanted: str, where: str) -> str:
    """HDF5 group of the layer named `wanted` inside the `layers` container at `container`."""
    group = handle.get(container)
    if group is None:
        raise UnreadableModelError(f"{where}: weights file has no group {container!r}")
    named = {}
    for key in group:
        sub = group[key]
        vars_group = sub.get("vars") if isinstance(sub, h5py.Group) else None
        if vars_group is not None and "name" in vars_group.attrs:
            value = vars_group.attrs["name"]
            named[value.decode() if isinstance(value, bytes) else str(value)] = f"{container}/{key}"
    if wanted in named:
        return named[wanted]
    # Older files carry no names: Keras numbers groups by class in model.layers order.
    for entry, counter in zip(entries, _counter_names(entries)):
        if _entry_name(entry) == wanted:
            path = f"{container}/{counter}"
            if path in handle:
                return path
    raise UnreadableModelError(f"{where}: no weights group for layer {wanted!r} under {container!r}")


def _cell_groups(entry: dict, base: str) -> list:
    """(label, cell config, vars group path) for each cell of a recurrent layer entry."""
    out = []
    for _prefix, cell, label in registry.layer_kind(entry).cells(entry):
        out.append((label, cell, _cell_group_path(entry, label, base)))
    return out


def _cell_group_path(entry: dict, label: str, base: str) -> str:
    parts = label.split(".") if label else []
    layer = entry
    path = base
    if entry.get("class_name") == "Bidirectional" and parts and parts[0] in ("forward", "backward"):
        direction = parts.pop(0)
        path += f"/{direction}_layer"
        inner = entry["config"]
        layer = inner["layer"] if direction == "forward" or not inner.get("backward_layer") else inner["backward_layer"]
    rest = ".".join(parts)
    if rest in ("", "cell"):
        return f"{path}/cell/vars"
    match = re.fullmatch(r"cells\[(\d+)\]", rest)
    if match:
        cells = layer["config"]["cell"]["config"]["cells"]
        names = _counter_names(cells)
        return f"{path}/cell/cells/{names[int(match.group(1))]}/vars"
    raise NotSupportedError(f"no weights layout known for cell {label!r} of {_entry_name(entry)!r}")


def _read_keras3_with_config(handle, artifact: ModelArtifact, store: WeightStore) -> None:
    config = artifact.model_config
    sites = find_sites(config, artifact.family)
    by_path: dict = {}
    for site in sites:
        by_path.setdefault(site.path, []).append(site)
    for path, calls in by_path.items():
        site = calls[0]
        if site.wrapper:
            store.notes.append(f"{path}: wrapped in {site.wrapper}; its weights are not spliced")
            continue
        entry, group = _locate_keras3(handle, artifact, config, site.model_path, site.layer)
        cells = []
        for label, cell_cfg, vars_path in _cell_groups(entry, group):
            key = f"{label}/" if label else ""
            wanted = {k[len(key):]: v for k, v in site.weight_shapes.items() if k.startswith(key) and "/" not in k[len(key):]}
            if not wanted:
                raise NotSupportedError(f"{artifact.path}: the input shape of {path!r} is not recorded; "
                                        "its weight shapes are unknown")
            roles = [r for r in layouts.ROLES if r in wanted]
            datasets = {role: f"{vars_path}/{i}" for i, role in enumerate(roles)}
            _check_datasets(handle, datasets, wanted, f"{artifact.path}: {path}{'/' + label if label else ''}")
            layout = layouts.expected_layout(cell_cfg, wanted)
            cells.append(StoredCell(label, layout, datasets, cell_cfg.get("class_name")))
        store.layers.append(StoredLayer(site.layer, path, site.class_name, tuple(cells),
                                        tuple(s.name for s in calls), group))


def _locate_keras3(handle, artifact, config: dict, model_path: tuple, layer: str) -> tuple[dict, str]:
    model_entry = config
    container = "layers"
    for name in (*model_path, layer):
        entries = _container_entries(model_entry)
        entry = next((e for e in entries if _entry_name(e) == name), None)
        if entry is None:
            raise UnreadableModelError(f"{artifact.path}: layer {name!r} not found in the config")
        group = _child_group(handle, container, entries, name, str(artifact.path))
        if name == layer:
            return entry, group
        if not is_model_entry(entry):
            raise UnreadableModelError(f"{artifact.path}: {name!r} is not a nested model")
        model_entry, container = entry, f"{group}/layers"
    raise AssertionError("unreachable")


def _check_datasets(handle, datasets: dict, wanted: dict, where: str) -> None:
    for role, dataset_path in datasets.items():
        node = handle.get(dataset_path)
        if not isinstance(node, h5py.Dataset):
            raise UnreadableModelError(f"{where}: weight {role} missing (no dataset {dataset_path!r})")
        if tuple(node.shape) != tuple(wanted[role]):
            raise UnreadableModelError(
                f"{where}: weight {role} at {dataset_path!r} has shape {tuple(node.shape)}, "
                f"the config implies {tuple(wanted[role])}"
            )


def _read_keras3_without_config(handle, store: WeightStore) -> None:
    """A Keras 3 weights-only file: recurrent layers recognised by their group structure."""

    def walk(container: str, model_path: tuple) -> None:
        group = handle.get(container)
        if not isinstance(group, h5py.Group):
            return
        for key in sorted(group, key=_natural_key):
            sub = group[key]
            if not isinstance(sub, h5py.Group):
                continue
            base = re.sub(r"_\d+$", "", key)
            name = _vars_name(sub) or key
            path = f"{container}/{key}"
            if "layers" in sub:
                walk(f"{path}/layers", (*model_path, name))
                continue
            class_name = _CLASS_FROM_SNAKE.get(base)
            if class_name is None:
                continue
            cells = _cells_from_structure(handle, path, class_name, store)
            if cells:
                store.layers.append(StoredLayer(name, "/".join((*model_path, name)), class_name, tuple(cells),
                                                (), path))

    walk("layers", ())


def _natural_key(text: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _vars_name(group) -> str | None:
    vars_group = group.get("vars")
    if isinstance(vars_group, h5py.Group) and "name" in vars_group.attrs:
        value = vars_group.attrs["name"]
        return value.decode() if isinstance(value, bytes) else str(value)
    return None


def _cells_from_structure(handle, path: str, class_name: str, store: WeightStore) -> list:
    cells = []
    prefixes = [("forward", f"{path}/forward_layer"), ("backward", f"{path}/backward_layer")] \
        if class_name == "Bidirectional" else [("", path)]
    for direction, base in prefixes:
        cell_root = f"{base}/cell"
        if f"{cell_root}/cells" in handle:
            keys = sorted(handle[f"{cell_root}/cells"], key=_natural_key)
            # Counters follow list order: lstm_cell, gru_cell, lstm_cell_1 ... ; the order
            # across classes is not recorded without a config, so keep the file order.
            for i, key in enumerate(keys):
                label = f"{direction}.cells[{i}]" if direction else f"cells[{i}]"
                cell = _stored_cell(handle, f"{cell_root}/cells/{key}/vars", label,
                                    _CELL_SNAKE.get(re.sub(r"_\d+$", "", key)), store)
                if cell:
                    cells.append(cell)
        elif f"{cell_root}/vars" in handle:
            cell = _stored_cell(handle, f"{cell_root}/vars", direction, None, store)
            if cell:
                cells.append(cell)
    return cells


def _stored_cell(handle, vars_path: str, label: str, class_hint, store: WeightStore):
    group = handle[vars_path]
    keys = sorted((k for k in group if isinstance(group[k], h5py.Dataset)), key=_natural_key)
    if len(keys) not in (2, 3):
        store.notes.append(f"{vars_path}: {len(keys)} weights, not a recurrent cell; skipped")
        return None
    roles = layouts.ROLES[: len(keys)]
    datasets = {role: f"{vars_path}/{key}" for role, key in zip(roles, keys)}
    shapes = {role: tuple(handle[p].shape) for role, p in datasets.items()}
    layout = layouts.classify(shapes, class_hint, where=vars_path)
    return StoredCell(label, layout, datasets, class_hint)


# ---- legacy HDF5 layout (Keras 2, Keras 3 model.save("x.h5")) ----------------------------


def _text_list(value) -> list:
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in np.asarray(value).reshape(-1)]


def _read_legacy(handle, artifact: ModelArtifact, store: WeightStore) -> None:
    root = handle.get("model_weights", handle)
    names = _text_list(root.attrs.get("layer_names", [])) if "layer_names" in root.attrs else list(root)
    entries = {}
    sites_by_layer: dict = {}
    if artifact.model_config is not None:
        for entry in _container_entries(artifact.model_config):
            entries[_entry_name(entry)] = entry
        for site in find_sites(artifact.model_config, artifact.family):
            if not site.model_path:
                sites_by_layer.setdefault(site.layer, []).append(site)
            else:
                note = f"{site.path}: inside a nested model of a legacy HDF5 file; not spliced (save it as .keras)"
                if note not in store.notes:
                    store.notes.append(note)
    for name in names:
        group = root.get(name)
        if not isinstance(group, h5py.Group) or "weight_names" not in group.attrs:
            continue
        weight_names = _text_list(group.attrs["weight_names"])
        entry = entries.get(name)
        if entry is not None and is_model_entry(entry):
            continue
        if entry is not None and entry.get("class_name") not in registry.LAYER_KINDS:
            if registry.is_recurrent(entry):
                store.notes.append(f"{name}: wrapped in {entry.get('class_name')}; its weights are not spliced")
            continue  # not a plain recurrent layer (wrappers hold other weights)
        cells = _legacy_cells(group, name, weight_names, entry, artifact, store)
        if not cells:
            continue
        class_name = _legacy_class(entry, cells)
        sites = tuple(s.name for s in sites_by_layer.get(name, ()))
        store.layers.append(StoredLayer(name, name, class_name, tuple(cells), sites, group.name.lstrip("/")))


def _legacy_class(entry, cells) -> str:
    if entry is not None:
        from surgery.graph.sites import describe_class

        return describe_class(entry)
    layout = cells[0].layout
    base = {"lstm": "LSTM", "gru": "GRU", "simple": "SimpleRNN", "conv_lstm": "ConvLSTM"}[layout.family]
    if layout.layout == "cudnn":
        base = "CuDNN" + base
    return f"Bidirectional({base})" if cells[0].label == "forward" else base


def _legacy_cells(group, layer_name: str, weight_names: list, entry, artifact, store) -> list:
    # Weights of one cell share a directory: ".../lstm_cell/kernel:0", "cu_dnnlstm/bias:0".
    by_dir: dict = {}
    for weight in weight_names:
        directory, _, base = weight.rpartition("/")
        by_dir.setdefault(directory, {})[base.split(":")[0]] = weight
    config_cells = registry.layer_kind(entry).cells(entry) if entry is not None else None
    groups = [d for d in by_dir.values() if "kernel" in d and "recurrent_kernel" in d]
    if not groups:
        return []
    if config_cells is not None and len(config_cells) != len(groups):
        raise UnreadableModelError(
            f"{artifact.path}: layer {layer_name!r} stores {len(groups)} cells of weights, its config has "
            f"{len(config_cells)}"
        )
    cells = []
    for index, weights in enumerate(groups):
        datasets = {role: weights[role] for role in layouts.ROLES if role in weights}
        for dataset in datasets.values():
            if dataset not in group:
                raise UnreadableModelError(f"{artifact.path}: layer {layer_name!r} lists {dataset!r} but has no such dataset")
        shapes = {role: tuple(group[d].shape) for role, d in datasets.items()}
        if config_cells is not None:
            _prefix, cell_cfg, label = config_cells[index]
            hint = cell_cfg.get("class_name")
        else:
            cell_cfg = None
            label = ("forward" if index == 0 else "backward") if _is_bidirectional(weights) else \
                (f"cells[{index}]" if len(groups) > 1 else "")
            hint = None
        layout = layouts.classify(shapes, hint, where=f"{artifact.path}: {layer_name}")
        prefix = group.name.lstrip("/")
        cells.append(StoredCell(label, layout, {r: f"{prefix}/{d}" for r, d in datasets.items()}, hint))
    return cells


def _is_bidirectional(weights: dict) -> bool:
    return any(re.search(r"/(forward|backward)_", "/" + w) for w in weights.values())


# ----------------------------------------------------------------------------------------
# Matching A's layers to B's


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
                clone = keras_zip._clone_info(info)
                with keras_zip._open_member_seekable(b_path, archive, info) as reader, \
                        out.open(clone, "w", force_zip64=info.file_size > 0x7FFFFFFF) as writer:
                    write_weights_member(writer, reader, info.file_size)
            else:
                keras_zip._copy_member(b_path, archive, out, info)


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
            with zipfile.ZipFile(b.path) as archive, archive.open(_member_info(b.path, archive)) as member, \
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


HASH_BUFFER = 64 << 10  # small reads stay in cache between the read and the hash


def hash_file(path: str, crc_range: tuple | None = None) -> dict:
    """sha256 of a file, and the CRC-32 of one byte range of it (a stored zip member)."""
    digest = hashlib.sha256()
    crc = 0
    position = 0
    start, end = crc_range or (0, 0)
    buffer = bytearray(HASH_BUFFER)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while got := handle.readinto(buffer):
            chunk = view[:got]
            digest.update(chunk)
            if crc_range and position < end and position + got > start:
                crc = zlib.crc32(chunk[max(0, start - position): max(0, min(got, end - position))], crc)
            position += got
    return {"sha256": digest.hexdigest(), "crc32": crc}


def weights_member_range(path: str) -> tuple | None:
    """(start, end, CRC) of a stored weights member, to check B while it is hashed."""
    with zipfile.ZipFile(path) as archive:
        info = _member_info(path, archive)
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        start = keras_zip._stored_data_offset(path, archive, info)
        return start, start + info.file_size, info.CRC


def _hash_b(path: str, b_range: tuple | None) -> str:
    if os.path.isdir(path):
        return _hash_a(path)
    result = hash_file(path, b_range[:2] if b_range else None)
    if b_range and result["crc32"] != b_range[2]:
        raise UnreadableModelError(
            f"{path}: member {keras_zip.WEIGHTS_MEMBER!r} is corrupt "
            f"(CRC-32 {result['crc32']:08x}, recorded {b_range[2]:08x})")
    return result["sha256"]


def _hash_a(path: str) -> str:
    if os.path.isdir(path):
        from surgery.io.saving import sha256_of

        return sha256_of(path)
    return hash_file(path)["sha256"]


def start_hashing(a: ModelArtifact, b: ModelArtifact):
    """Futures: sha256 of A, and of B (with its stored weights member's CRC checked on the way).

    Hashing both inputs costs more than the write itself, so it runs in two worker processes
    beside the writer: threads would fight the writer for the GIL at every chunk.
    """
    b_range = weights_member_range(b.path) if b.format == "keras" else None
    pool = _hash_pool()
    b_future = pool.submit(_hash_b, b.path, b_range)
    a_future = pool.submit(_hash_a, a.path)
    pool.shutdown(wait=False)
    return a_future, b_future


def _hash_pool():
    import multiprocessing
    import threading

    if ("fork" in multiprocessing.get_all_start_methods() and "tensorflow" not in sys.modules
            and threading.active_count() == 1):
        # fork needs no re-import; only from a single-threaded process without TensorFlow,
        # since threads (and the locks they hold) do not survive a fork.
        return concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("fork"))
    return concurrent.futures.ThreadPoolExecutor(max_workers=2)


# ----------------------------------------------------------------------------------------
# Checking what was written


def _dataset_digest(store: OpenStore, dataset: h5py.Dataset) -> str:
    digest = hashlib.sha256()
    for block in store.blocks(dataset, reuse=True):
        digest.update(memoryview(np.ascontiguousarray(block)).cast("B"))
    return digest.hexdigest()


def _blocks(dataset: h5py.Dataset, chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
    if dataset.ndim < 2 or dataset.shape[0] <= 1:
        yield np.asarray(dataset[()])
        return
    row_bytes = max(1, int(np.prod(dataset.shape[1:])) * dataset.dtype.itemsize)
    step = max(1, chunk_bytes // row_bytes)
    for start in range(0, dataset.shape[0], step):
        yield dataset[start:start + step]


def _all_datasets(store: OpenStore) -> dict:
    found = {}
    store.h5.visititems(lambda name, node: found.__setitem__(name, node) if isinstance(node, h5py.Dataset) else None)
    return found


def check_written(plan: WeightsPlan, written: Path) -> dict:
    """Static integrity check of a written file (no Keras).

    Every weight of B that was not mapped must hash (sha256) the same in the output; every
    mapped one must equal A's converted weight byte for byte. Returns the evidence.
    """
    b, a = plan.dest.artifact, plan.source.artifact
    out_artifact = ModelArtifact(str(written), b.format, b.family, b.model_config, b.keras_version, {})
    items = {item.dest_dataset: item for item in assignments(plan)}
    unchanged: dict = {}
    replaced: dict = {}
    with open_store(b) as original, open_store(out_artifact) as output, open_store(a) as source:
        before, after = _all_datasets(original), _all_datasets(output)
        if set(before) != set(after):
            missing = sorted(set(before) ^ set(after))[:3]
            raise VerificationError(f"the written weights hold other datasets than B's (e.g. {missing})")
        for name, dataset in before.items():
            out_ds = after[name]
            if tuple(out_ds.shape) != tuple(dataset.shape) or out_ds.dtype != dataset.dtype:
                raise VerificationError(f"weight {name!r} changed shape/dtype: {dataset.shape} {dataset.dtype} -> "
                                        f"{out_ds.shape} {out_ds.dtype}")
            item = items.get(name)
            if item is None:
                digest_before, digest_after = _dataset_digest(original, dataset), _dataset_digest(output, out_ds)
                if digest_before != digest_after:
                    raise VerificationError(f"weight {name!r} of B changed although it was not mapped "
                                            f"(sha256 {digest_before[:12]} -> {digest_after[:12]})")
                unchanged[name] = digest_after
            else:
                expected = produce(source, item, dataset.dtype, reuse=True)
                got = output.blocks(out_ds, reuse=True)
                if not _same_stream(expected, got):
                    raise VerificationError(f"{item.label} ({name!r}) does not hold A's weight "
                                            f"{item.source_dataset!r} after the splice")
                replaced[name] = item.source_dataset
    return {"unchanged_sha256": unchanged, "replaced": replaced}


def _same_stream(first: Iterator[np.ndarray], second: Iterator[np.ndarray]) -> bool:
    """Byte equality of two streams of arrays cut at different places."""
    a, b = _byte_chunks(first), _byte_chunks(second)
    pending_a = pending_b = None
    while True:
        if pending_a is None or not len(pending_a):
            pending_a = next(a, None)
        if pending_b is None or not len(pending_b):
            pending_b = next(b, None)
        if pending_a is None or pending_b is None:
            return pending_a is None and pending_b is None
        n = min(len(pending_a), len(pending_b))
        if not np.array_equal(np.frombuffer(pending_a[:n], np.uint8), np.frombuffer(pending_b[:n], np.uint8)):
            return False
        pending_a, pending_b = pending_a[n:], pending_b[n:]


def _byte_chunks(arrays: Iterator[np.ndarray]) -> Iterator[memoryview]:
    for array in arrays:
        view = memoryview(np.ascontiguousarray(array)).cast("B")
        if len(view):
            yield view


# ----------------------------------------------------------------------------------------
# Numerical check in Keras (the default; --no-verify skips it)


def verify_numerically(plan: WeightsPlan, written: Path, *, unsafe=False, custom_objects=None, batch: int = 4,
                       seed: int = 0, data=None) -> dict:
    """Reload the written model and check it three ways.

    1. every layer of the reloaded model holds exactly what it should: A's converted weights
       for mapped layers, B's own for everything else (compared with B loaded by Keras);
    2. its outputs equal B's outputs with the mapped layers' weights set through Keras;
    3. every call of a spliced layer, run on its actual inputs in the model, equals the NumPy
       oracle (surgery.check.oracle) run with A's converted weights.
    """
    from surgery.io import families
    from surgery.check import oracle
    from surgery.io.loading import load_model
    from surgery.check import tolerance
    from surgery.check.verify import _site_call_values, random_inputs, sequence_steps

    b = plan.dest.artifact
    original = load_model(plan.dest.model_artifact, unsafe=unsafe, custom_objects=custom_objects)
    reloaded = load_model(str(written), unsafe=unsafe, custom_objects=custom_objects)
    family = families.of_model(reloaded)
    expected = {}
    with open_store(plan.source.artifact) as source, open_store(b) as dest:
        for pair in plan.pairs:
            arrays = []
            for s_cell, d_cell, transforms in zip(pair.source.cells, pair.dest.cells, pair.transforms):
                for t in transforms:
                    dtype = dest[d_cell.datasets[t.role]].dtype
                    item = Assignment(d_cell.datasets[t.role], s_cell.datasets[t.source_role], t, pair.dest.path)
                    arrays.append(converted(source, item, dtype))
            expected[pair.dest.path] = arrays
    from surgery.check import cudnn_cpu

    # tf_keras cannot rebuild cuDNN layers from its own config, nor run them without a GPU:
    # such models are compared as CPU stand-ins built from the same weights (cudnn_cpu).
    cudnn = cudnn_cpu.cudnn_layers(family.serialize(original))
    note = None
    if cudnn:
        note = cudnn_cpu.note(cudnn_cpu.model_cannot_run(original) or "tf_keras cannot rebuild cuDNN layers")
        reference = cudnn_cpu.standin(original, weights={p.split("/")[-1]: w for p, w in expected.items()})
    else:
        reference = family.deserialize(family.serialize(original), custom_objects)
        _copy_all_weights(family, original, reference)
    # 1. weights, layer by layer
    layers_checked = 0
    for path, (layer, ref_layer) in _walk_layers(family, reloaded, original).items():
        got = layer.get_weights()
        want = expected.get(path)
        if want is not None and not cudnn:
            reference_layer(reference, path).set_weights(want)
        want = want if want is not None else ref_layer.get_weights()
        if len(got) != len(want) or any(g.shape != w.shape or g.tobytes() != np.asarray(w, g.dtype).tobytes()
                                         for g, w in zip(got, want)):
            raise VerificationError(f"layer {path!r} of the written model does not hold the expected weights")
        layers_checked += 1
    if cudnn:
        reloaded = cudnn_cpu.standin(reloaded)
    # 2. whole-model outputs
    values = random_inputs(reloaded, batch=batch, seed=seed, data=data)
    out_got = family.call(reloaded, values)
    out_ref = family.call(reference, values)
    output_diffs = [float(np.max(np.abs(g.astype(np.float64) - r.astype(np.float64)))) if g.size else 0.0
                    for g, r in zip(out_got, out_ref)]
    # 3. spliced layers vs the oracle with A's weights
    checks = {}
    sites = {s.name: s for s in find_sites(b.model_config, b.family)}
    for pair in plan.pairs:
        for site_name in pair.dest.sites:
            site = sites[site_name]
            layer, sequence, mask, initial = _site_call_values(family, reloaded, values, site)
            config = family.layer_config(layer)
            weights = expected[pair.dest.path]
            if pair.dest.path.split("/")[-1] in cudnn:
                weights = cudnn_cpu.to_keras_layout(cudnn[pair.dest.path.split("/")[-1]], weights)
            weights64 = [np.asarray(w, np.float64) for w in weights]
            want, _states = oracle.run_layer(config, weights64, sequence.astype(np.float64),
                                                 mask=None if mask is None else np.asarray(mask, bool),
                                                 initial_state=initial, family=family.name)
            got = _call_layer(family, layer, sequence, mask, initial)
            bound = tolerance.bound_for(site.states[0].dtype if site.states else "float32",
                                        steps=sequence_steps(sequence),
                                        scale=tolerance.magnitude([*_flat(want), *_flat(_states)]))
            checks[site_name] = tolerance.worst(tolerance.compare(g, w, bound)
                                                for g, w in zip(_flat(got), _flat(want)))
    ok = all(d == 0.0 for d in output_diffs) and all(c.ok for c in checks.values())
    report = {"ok": ok, "layers_checked": layers_checked, "outputs_identical": all(d == 0.0 for d in output_diffs),
              "output_max_abs_diff": output_diffs,
              "oracle_max_abs_diff": {k: c.max_abs_diff for k, c in checks.items()},
              "oracle_tolerance": {k: c.bound.describe() for k, c in checks.items()},
              "oracle_check": tolerance.worst(checks.values()).describe(
                  f"{len(checks)} spliced call(s) vs NumPy oracle with A's weights"),
              "batch": len(values[0]) if values else batch, "note": note}
    if not ok:
        raise VerificationError(summary(report))
    return report


def summary(report: dict) -> str:
    verdict = "verified" if report["ok"] else "VERIFICATION FAILED"
    return (f"{verdict}: {report['layers_checked']} layer(s) hold exactly the expected weights; "
            f"{len(report['output_max_abs_diff'])} output(s) "
            f"{'identical' if report['outputs_identical'] else 'differ'} to B with A's weights set by Keras "
            f"(max |diff| {max(report['output_max_abs_diff'], default=0.0):.3g}); "
            f"{report['oracle_check']}" + (f"; {report['note']}" if report.get("note") else ""))


def reference_layer(model, path: str):
    """The leaf layer at a "/"-joined path of nested model names."""
    for name in path.split("/"):
        model = model.get_layer(name)
    return model


def _copy_all_weights(family, source, target) -> None:
    by_name = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        origin = by_name[layer.name]
        if family.is_model(layer):
            _copy_all_weights(family, origin, layer)
        elif layer.weights:
            layer.set_weights(origin.get_weights())


def _walk_layers(family, model, reference, prefix: tuple = ()) -> dict:
    out = {}
    ref_by_name = {layer.name: layer for layer in reference.layers}
    for layer in model.layers:
        ref = ref_by_name.get(layer.name)
        if ref is None:
            raise VerificationError(f"the written model has a layer {layer.name!r} that B does not have")
        if family.is_model(layer):
            out.update(_walk_layers(family, layer, ref, (*prefix, layer.name)))
        elif layer.weights:
            out["/".join((*prefix, layer.name))] = (layer, ref)
    return out


def _call_layer(family, layer, sequence, mask, initial):
    from surgery.io.quiet import quiet

    kwargs = {"training": False}
    if mask is not None:
        kwargs["mask"] = np.asarray(mask, bool)
    if initial:
        kwargs["initial_state"] = [np.asarray(s) for s in initial]
    with quiet():
        # A stateful layer starts from what earlier calls left behind; the oracle from zeros.
        for reset in ("reset_state", "reset_states"):
            if getattr(layer, "stateful", False) and hasattr(layer, reset):
                getattr(layer, reset)()
                break
        return layer(sequence, **kwargs)


def _flat(value) -> list:
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _flat(item)]
    return [np.asarray(value, dtype=np.float64)]
