"""Where a model file keeps its weights, read statically (no TensorFlow): the recurrent layers of
a .keras / .weights.h5 / legacy HDF5 file, their cells and the HDF5 datasets that hold each
weight (`read_store` -> WeightStore of StoredLayer/StoredCell), and an open handle on them
(`open_store` -> OpenStore, `read_range`). `materialize` turns a SavedModel into a file this can read.

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

import contextlib
import re
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from surgery.graph import layouts, registry
from surgery.io.artifact import ModelArtifact
from surgery.errors import NotSupportedError, UnreadableModelError
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
            yield from blocks(dataset, chunk_bytes)
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
                info = member_info(path, archive)
                base = (keras_zip.stored_data_offset(path, archive, info)
                        if info.compress_type == zipfile.ZIP_STORED else None)
                with keras_zip.open_member_seekable(path, archive, info) as member, \
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


def member_info(path: str, archive: zipfile.ZipFile) -> zipfile.ZipInfo:
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

def blocks(dataset: h5py.Dataset, chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
    if dataset.ndim < 2 or dataset.shape[0] <= 1:
        yield np.asarray(dataset[()])
        return
    row_bytes = max(1, int(np.prod(dataset.shape[1:])) * dataset.dtype.itemsize)
    step = max(1, chunk_bytes // row_bytes)
    for start in range(0, dataset.shape[0], step):
        yield dataset[start:start + step]
