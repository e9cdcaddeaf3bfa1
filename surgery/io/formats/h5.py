"""Keras HDF5 files: full models (`model.save("x.h5")`, Keras 2 or Keras 3 legacy format)
and weights-only files (`save_weights("x.weights.h5")`).

A full model carries its serialized config as the JSON root attribute `model_config`,
next to `keras_version` and `backend`. A weights-only file has no `model_config`; its
artifact has model_config None. Only metadata is read: attributes and dataset shapes,
plus the container hazards of scan_hdf5 (links, storage and filters that would make a
loader read another file or load a plugin), which become ModelArtifact.hazards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
from typing import Any, Iterator

import h5py
import numpy as np
from h5py import h5a, h5d, h5g, h5l, h5o, h5s, h5t, h5z

from surgery.io.artifact import ModelArtifact
from surgery.errors import UsageError
from surgery.io.formats import (
    check_model_config,
    family_from_version,
    parse_json,
    refuse_same_file,
    short_repr,
    unreadable,
)
from surgery.io.formats import h5_open
from surgery.io.safety import Finding

MODEL_CONFIG_ATTR = "model_config"
KERAS_VERSION_ATTR = "keras_version"

# Parsing a hostile HDF5 file can make the HDF5 library allocate (and touch) memory
# without bound: fuzzing found files with a corrupt object header that took >20 GiB before
# the OOM killer stepped in. While HDF5 parses metadata, the address space is capped at
# what the process already uses plus this much; real metadata needs a few MB.
HDF5_MEMORY_HEADROOM_BYTES = 1 << 30

# A real model has thousands of weights at most; a file with millions of datasets is
# hostile or not a Keras file, and walking it would take minutes.
MAX_DATASETS = 1_000_000


def read_h5(path: str) -> ModelArtifact:
    with hdf5_memory_guard():
        try:
            handle = h5_open.open_file(path)
        except OSError as error:
            raise unreadable(path, f"corrupt or truncated HDF5 file ({error})") from None
        with handle:
            try:
                keras_version = _optional_text_attr(path, handle.attrs, KERAS_VERSION_ATTR)
                raw_config = _optional_text_attr(path, handle.attrs, MODEL_CONFIG_ATTR)
                # Keras 2 weights files mark themselves with layer_names; Keras 3 do not.
                has_keras2_layout = "layer_names" in handle.attrs
                shapes, hazards = scan_hdf5(path, handle)
            except (OSError, RuntimeError, KeyError, ValueError, TypeError) as error:
                # h5py's wording for HDF5 failures deep in a damaged file.
                raise unreadable(path, f"corrupt HDF5 file ({error})") from None

    if raw_config is None:
        # A file whose only content is hazards is still returned, so that it is refused
        # as unsafe rather than reported as merely unreadable.
        if not shapes and not hazards:
            raise unreadable(
                path,
                "HDF5 file holds neither a Keras model (no model_config attribute) "
                "nor any weight datasets",
            )
        default_family = "keras2" if has_keras2_layout else "keras3"
        return ModelArtifact(
            path=path,
            format="h5",
            family=family_from_version(keras_version, default_family),
            model_config=None,
            keras_version=keras_version,
            weight_shapes=shapes,
            hazards=hazards,
        )

    config = check_model_config(
        path, parse_json(path, raw_config, "the model_config attribute"), "model_config"
    )
    return ModelArtifact(
        path=path,
        format="h5",
        family=family_from_version(keras_version),
        model_config=config,
        keras_version=keras_version,
        weight_shapes=shapes,
        hazards=hazards,
    )


def _optional_text_attr(path: str, attrs: h5py.AttributeManager, name: str) -> str | None:
    """A string attribute as str, whichever way h5py hands it back; None if absent."""
    if name not in attrs:
        return None
    value = attrs[name]
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "OSU":
        value = value.reshape(-1)[0]  # a one-element string array, as some writers do
    if isinstance(value, (bytes, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as error:
            raise unreadable(path, f"attribute {name!r} is not UTF-8 text ({error})") from None
    if isinstance(value, str):
        return str(value)
    raise unreadable(
        path,
        f"attribute {name!r} is not a string but {type(value).__name__} {short_repr(value, 40)}",
    )


_GUARD_LOCK = threading.Lock()


@contextlib.contextmanager
def hdf5_memory_guard(headroom: int = HDF5_MEMORY_HEADROOM_BYTES) -> Iterator[None]:
    """Cap the address space (RLIMIT_AS) while HDF5 parses an untrusted file.

    An allocation past the cap fails inside HDF5, which reports it as an ordinary error
    ("memory allocation failed for chunk") that becomes UnreadableModelError, instead of
    the OOM killer ending the process. The previous limit is restored on exit.

    Skipped where it could hurt or cannot work: off Linux, and once TensorFlow is loaded
    (the limit is process-wide and TF's own threads must not hit it).
    """
    current = _address_space_in_use()
    if current is None or "tensorflow" in sys.modules:
        yield
        return
    import resource

    with _GUARD_LOCK:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = current + headroom
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        if soft != resource.RLIM_INFINITY and soft <= cap:
            yield  # already at least this tight
            return
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _address_space_in_use() -> int | None:
    """The process' virtual size in bytes (Linux /proc), or None where unknown."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[0])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def collect_dataset_shapes(path: str, group: h5py.Group) -> dict[str, tuple[int, ...]]:
    """Dataset path -> shape for every dataset under `group` (see scan_hdf5)."""
    return scan_hdf5(path, group)[0]


def scan_hdf5(
    path: str, group: h5py.Group, where: str = ""
) -> tuple[dict[str, tuple[int, ...]], tuple[Finding, ...]]:
    """Dataset shapes and container hazards of everything under `group`, from metadata only.

    Hazards are every way the file can make a reader touch another file or load code:
    external links, soft links that do not resolve inside the file, user-defined links,
    datasets with external raw storage, virtual datasets, filters that are not built in
    (an unknown id makes libhdf5 dlopen a plugin) and reference-typed data. Findings are
    named by HDF5 path, prefixed with `where` (the zip member of a .keras).

    The walk reports every link in H5Lvisit's order but descends hard links only and
    enters each group once, so cycles terminate; soft links are resolved by hand, one
    component at a time, so no external link is ever traversed. No dataset data is read.
    """
    return _Scan(path, group, where).run()


# Filters built into libhdf5 or registered by h5py itself; any other id is looked up as a
# plugin (HDF5_PLUGIN_PATH) when the data is read.
BUILTIN_FILTERS = {
    h5z.FILTER_DEFLATE: "deflate",
    h5z.FILTER_SHUFFLE: "shuffle",
    h5z.FILTER_FLETCHER32: "fletcher32",
    h5z.FILTER_SZIP: "szip",
    h5z.FILTER_NBIT: "nbit",
    h5z.FILTER_SCALEOFFSET: "scaleoffset",
    h5z.FILTER_LZF: "lzf",
}
# Every link is a callback; a hostile file can hold millions of them.
MAX_LINKS = 2 * MAX_DATASETS
# Findings kept per file: the first few name the problem, the rest only add noise.
MAX_FINDINGS = 100
# Soft-link resolution: HDF5's own default hop limit, and a per-file budget of lookups so
# deep or numerous soft links cannot make the walk quadratic.
MAX_SOFT_HOPS = 16
MAX_RESOLVE_STEPS = 100_000
# Object header message types (H5Opublic.h / the file format spec) that bring a dataset
# creation property the scan must read: external file list (7) and filter pipeline (11).
_STORAGE_MESSAGES = (1 << 0x0007) | (1 << 0x000B)

class _Scan:
    def __init__(self, path: str, group: h5py.Group, where: str):
        self.path = path
        self.group = group
        self.root = group.id
        self.where = where
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.findings: list[Finding] = []
        self.dropped = 0
        self.seen: set[int] = set()
        self.links = 0
        self.resolve_budget = MAX_RESOLVE_STEPS

    def run(self) -> tuple[dict[str, tuple[int, ...]], tuple[Finding, ...]]:
        self._check_attributes(self.root, "", h5a.get_num_attrs(self.root))
        self._walk()
        if self.dropped:
            more = f"{self.dropped} more HDF5 hazards not listed"
            self.findings.append(Finding(self._where("/"), "hdf5_more", more))
        return self.shapes, tuple(self.findings)

    def _walk(self) -> None:
        """Every link below the root in H5Lvisit's order (by name; a group's links right
        after the link to it), with an explicit stack of open groups: each object is opened
        from its open group by one name, not by its whole path from the root (libhdf5
        opening and closing objects is most of the scan's time). As in H5Lvisit, only hard
        links are descended and each group entered once, the root never again."""
        entered = {h5o.get_info(self.root).addr}
        stack = [(self.root, b"", self._links(self.root))]
        while stack:
            group, prefix, links = stack[-1]
            link = next(links, None)
            if link is None:
                stack.pop()
                continue
            last, kind, address = link
            raw_name = prefix + last
            if b"/" in last or last in (b"", b"."):
                # libhdf5 reads such a name as a path: opening it would follow other links
                # (an external one opens another file) or name another object than the link's.
                self._add(self._name(raw_name), "hdf5_link_name",
                          f"link name {_text(last)} is not a plain name (HDF5 would follow it as a path)")
            elif kind != h5l.TYPE_HARD:
                self._check_link(group, raw_name, last, kind)
            elif address not in self.seen:  # the object's address: an object counts once
                self.seen.add(address)
                child = self._check_object(group, raw_name, last)
                if child is not None and address not in entered:
                    entered.add(address)
                    stack.append((child, raw_name + b"/", self._links(child)))

    def _links(self, group: Any) -> Iterator[tuple[bytes, int, int]]:
        """(name, link type, address for a hard link) of each link of an open group."""
        found: list[tuple[bytes, int, int]] = []

        def collect(name: bytes, info: Any) -> int | None:
            self.links += 1
            if self.links > MAX_LINKS:
                return 1  # stop; reported below (an exception here would come out mangled)
            found.append((name, info.type, info.u))
            return None

        group.links.iterate(collect, info=True)
        if self.links > MAX_LINKS:
            raise unreadable(self.path, f"HDF5 file holds more than {MAX_LINKS} links")
        return iter(found)

    def _where(self, name: str) -> str:
        return f"{self.where}/{name.lstrip('/')}"

    def _add(self, name: str, kind: str, detail: str) -> None:
        if len(self.findings) >= MAX_FINDINGS:
            self.dropped += 1
            return
        self.findings.append(Finding(self._where(name), kind, detail))

    def _name(self, raw_name: bytes) -> str:
        name = self.group._d(raw_name)
        return name.decode("utf-8", "backslashreplace") if isinstance(name, bytes) else name

    def _check_link(self, group: Any, raw_name: bytes, last: bytes, kind: int) -> None:
        """A soft, external or user-defined link named `last` in the open `group`."""
        name = self._name(raw_name)
        if kind == h5l.TYPE_SOFT:
            target = group.links.get_val(last)
            problem = self._resolve(group, target)
            if problem is not None:
                self._add(name, "hdf5_soft_link", f"soft link to {_text(target)} {problem}")
        elif kind == h5l.TYPE_EXTERNAL:
            filename, target = group.links.get_val(last)
            self._add(
                name, "hdf5_external_link",
                f"external link to {_text(target)} in file {_text(filename)}",
            )
        else:
            self._add(name, "hdf5_user_link", f"user-defined link of class {kind}")

    def _check_object(self, group: Any, raw_name: bytes, last: bytes) -> Any:
        """Check the object a hard link names; the open group if it is one, else None."""
        node = h5o.open(group, last)
        is_dataset = isinstance(node, h5d.DatasetID)
        attributes = h5a.get_num_attrs(node)
        if attributes:
            self._check_attributes(node, self._name(raw_name), attributes)
        if not is_dataset:
            return node if isinstance(node, h5g.GroupID) else None
        name = self._name(raw_name)
        if len(self.shapes) >= MAX_DATASETS:
            raise unreadable(self.path, f"HDF5 file holds more than {MAX_DATASETS} datasets")
        if is_plain_contiguous(node):  # nothing in its creation properties can point elsewhere
            self._add_shape(node, name)
        elif not self._check_storage(node, name):
            return None  # a virtual dataset: named as such, nothing more to read
        if _has_reference(node.get_type()):
            self._add(name, "hdf5_reference", "dataset holds HDF5 object or region references")
        return None

    def _add_shape(self, node: Any, name: str) -> None:
        space = node.get_space()
        shape = space.shape
        # Rank 0 is a scalar or a null dataspace; null has no shape to report.
        if shape or space.get_simple_extent_type() != h5s.NULL:
            self.shapes[name] = shape

    def _check_storage(self, node: Any, name: str) -> bool:
        """Virtual datasets, external raw storage and filters that are not built in; False
        for a virtual dataset."""
        dcpl = node.get_create_plist()
        if dcpl.get_layout() == h5d.VIRTUAL:
            # No shape: the extent of an unlimited VDS comes from opening its sources.
            sources = sorted({
                f"{_text(dcpl.get_virtual_filename(i))}:{_text(dcpl.get_virtual_dsetname(i))}"
                for i in range(min(dcpl.get_virtual_count(), 3))
            })
            self._add(
                name, "hdf5_virtual_dataset",
                f"virtual dataset reading {', '.join(sources)}"
                + (" ..." if dcpl.get_virtual_count() > 3 else ""),
            )
            return False
        self._add_shape(node, name)
        count = dcpl.get_external_count()
        if count:
            files = sorted({_text(dcpl.get_external(i)[0]) for i in range(min(count, 3))})
            self._add(
                name, "hdf5_external_storage",
                f"dataset stored in external file {', '.join(files)}"
                + (" ..." if count > 3 else ""),
            )
        for index in range(dcpl.get_nfilters()):
            code = dcpl.get_filter(index)[0]
            if code not in BUILTIN_FILTERS:
                self._add(
                    name, "hdf5_filter_plugin",
                    f"dataset needs filter {code}, not built into HDF5 (loaded as a plugin)",
                )
        return True

    def _check_attributes(self, node: Any, name: str, count: int) -> None:
        for index in range(count):
            attr = h5a.open(node, index=index)
            if _has_reference(attr.get_type()):
                self._add(
                    name, "hdf5_reference",
                    f"attribute {_text(attr.name)} holds HDF5 object or region references",
                )

    def _resolve(self, group: Any, target: bytes) -> str | None:
        """Follow a soft link's target (in `group`) inside this file; say why it fails,
        None if it resolves."""
        location = self.root if target.startswith(b"/") else group
        pending = list(reversed(target.split(b"/")))
        hops = 0
        while pending:
            part = pending.pop()
            if part in (b"", b"."):
                continue
            self.resolve_budget -= 1
            if self.resolve_budget < 0:
                return "was not checked (too many soft-link lookups in this file)"
            if not isinstance(location, h5g.GroupID):
                return "does not resolve (passes through a non-group)"
            if not location.links.exists(part):
                return f"does not resolve ({_text(part)} is missing)"
            kind = location.links.get_info(part).type
            if kind == h5l.TYPE_HARD:
                location = h5o.open(location, part)
            elif kind == h5l.TYPE_SOFT:
                hops += 1
                if hops > MAX_SOFT_HOPS:
                    return f"does not resolve (more than {MAX_SOFT_HOPS} soft links deep)"
                value = location.links.get_val(part)
                if value.startswith(b"/"):
                    location = self.root
                pending.extend(reversed(value.split(b"/")))
            elif kind == h5l.TYPE_EXTERNAL:
                filename, inner = location.links.get_val(part)
                return f"leaves the file (external link to {_text(inner)} in {_text(filename)})"
            else:
                return f"leaves the file (user-defined link of class {kind})"
        return None


def is_plain_contiguous(dataset: Any) -> bool:
    """True for a dataset (a DatasetID) whose data lies contiguously inside this file and
    whose object header holds no filter pipeline and no external file list message.

    HDF5 reports a data offset for contiguous storage only: not for virtual, chunked,
    compact or externally stored data (H5Dget_offset). Nothing in the creation properties
    of such a dataset can make a reader go elsewhere, so the scan skips copying them.
    """
    if dataset.get_offset() is None:
        return False
    return not h5o.get_info(dataset).hdr.mesg.present & _STORAGE_MESSAGES


def _has_reference(type_id: Any) -> bool:
    """True if a datatype is, or contains, an HDF5 reference."""
    stack = [type_id]
    while stack:
        current = stack.pop()
        kind = current.get_class()
        if kind == h5t.REFERENCE:
            return True
        if kind == h5t.COMPOUND:
            stack.extend(current.get_member_type(i) for i in range(current.get_nmembers()))
        elif kind in (h5t.ARRAY, h5t.VLEN, h5t.ENUM):
            stack.append(current.get_super())
    return False


def _text(value: bytes | str) -> str:
    """A name from the file, quoted and capped for a one-line message."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    return short_repr(value, 120)


def write_h5_with_config(
    source_path: str | os.PathLike, dest_path: str | os.PathLike, new_config: dict
) -> None:
    """Copy an HDF5 model file and replace its `model_config` attribute.

    Weights and every other attribute are untouched. Atomicity is the caller's business:
    dest_path is overwritten.
    """
    if not isinstance(new_config, dict) or not isinstance(new_config.get("class_name"), str):
        raise UsageError(
            f"new config must be a dict with a class_name, got {short_repr(new_config)}"
        )
    try:
        config_text = json.dumps(new_config)
    except (TypeError, ValueError) as error:
        raise UsageError(f"new config is not JSON-serializable: {error}") from None
    refuse_same_file(source_path, dest_path)
    shutil.copyfile(source_path, dest_path)
    with h5py.File(dest_path, "r+", locking=False) as handle:
        if MODEL_CONFIG_ATTR not in handle.attrs:
            raise UsageError(
                f"{os.fspath(source_path)} has no model_config attribute "
                "(a weights-only file); there is no config to replace"
            )
        # A str becomes a variable-length UTF-8 attribute, as Keras writes it; its data
        # lives in the global heap, so no 64 KiB attribute limit applies.
        handle.attrs[MODEL_CONFIG_ATTR] = config_text
