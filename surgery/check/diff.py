"""diff: what changed between two model files, read statically (TensorFlow is never imported).

Inputs/outputs added or removed, layers added/removed/changed (which config keys), and the
stored weights identical or changed, compared by SHA-256 of each dataset's bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile

from surgery.errors import UnsafeContentError
from surgery.io.formats import read_artifact
from surgery.graph.level import walk_values

SCHEMA = "lstm-surgery/diff/v1"
_IGNORED_KEYS = ("inbound_nodes", "build_config", "name")  # graph wiring is reported as I/O and layers


def _refs(structure) -> list[str]:
    if isinstance(structure, list) and len(structure) == 3 and isinstance(structure[0], str):
        return [structure[0]]
    if isinstance(structure, dict):
        return list(structure)
    return [item[0] for item in structure or [] if isinstance(item, list) and item]


def _layers(config: dict, prefix: str = "") -> dict[str, dict]:
    """Every layer entry by path (nested models' layers as model/layer), Sequential included."""
    out = {}
    for entry in config.get("config", {}).get("layers", []) or []:
        name = entry.get("name") or entry.get("config", {}).get("name")
        path = f"{prefix}{name}"
        out[path] = entry
        if "layers" in entry.get("config", {}):
            out.update(_layers(entry, prefix=f"{path}/"))
    return out


def _changed_keys(a: dict, b: dict) -> list[str]:
    keys = []
    if a.get("class_name") != b.get("class_name"):
        keys.append("class_name")
    ca, cb = a.get("config", {}), b.get("config", {})
    for key in sorted(set(ca) | set(cb)):
        if key in _IGNORED_KEYS or key == "layers":
            continue
        if ca.get(key) != cb.get(key):
            keys.append(key)
    return keys


def _io(config: dict) -> tuple[list[str], list[str]]:
    cfg = config.get("config", {})
    if "input_layers" in cfg:
        return _refs(cfg.get("input_layers")), _refs(cfg.get("output_layers"))
    layers = cfg.get("layers") or []
    first = layers[0]["config"].get("name") if layers and layers[0].get("class_name") == "InputLayer" else "input"
    return [first], [layers[-1]["config"].get("name")] if layers else []


def weight_hashes(artifact) -> dict[str, str] | None:
    """{dataset path: sha256 of dtype, shape and bytes}, or None where weights are not read
    statically (SavedModel variables)."""
    import h5py

    if artifact.hazards:
        raise UnsafeContentError(f"{artifact.path!r}: {artifact.hazards[0].kind}: {artifact.hazards[0].detail}")
    if artifact.format == "savedmodel":
        return None
    wanted = set(artifact.weight_shapes)
    if artifact.format == "keras":
        with zipfile.ZipFile(artifact.path) as archive:
            names = [n for n in archive.namelist() if n.endswith(".weights.h5")]
            if not names:
                return {}
            handle = io.BytesIO(archive.read(names[0]))
        source = h5py.File(handle, "r")
    else:
        source = h5py.File(os.fspath(artifact.path), "r")
    hashes = {}
    with source:
        def visit(name, item):
            if isinstance(item, h5py.Dataset) and (not wanted or name in wanted):
                digest = hashlib.sha256(f"{item.dtype}{item.shape}".encode())
                digest.update(item[()].tobytes() if item.shape != () else bytes(item[()]) if isinstance(item[()], bytes)
                              else str(item[()]).encode())
                hashes[name] = digest.hexdigest()
        source.visititems(visit)
    return hashes


def diff(a: str | os.PathLike, b: str | os.PathLike) -> dict:
    """The differences from A to B as a dict (the `diff --json` schema)."""
    art_a, art_b = read_artifact(a), read_artifact(b)
    cfg_a, cfg_b = art_a.model_config or {}, art_b.model_config or {}
    (in_a, out_a), (in_b, out_b) = _io(cfg_a), _io(cfg_b)
    layers_a, layers_b = _layers(cfg_a), _layers(cfg_b)
    changed = {path: keys for path in layers_a.keys() & layers_b.keys()
               if (keys := _changed_keys(layers_a[path], layers_b[path]))}
    hashes_a, hashes_b = weight_hashes(art_a), weight_hashes(art_b)
    weights = None
    if hashes_a is not None and hashes_b is not None:
        common = hashes_a.keys() & hashes_b.keys()
        weights = {
            "identical": sorted(k for k in common if hashes_a[k] == hashes_b[k]),
            "changed": sorted(k for k in common if hashes_a[k] != hashes_b[k]),
            "added": sorted(hashes_b.keys() - hashes_a.keys()),
            "removed": sorted(hashes_a.keys() - hashes_b.keys()),
        }
    report = {
        "schema": SCHEMA,
        "a": {"path": str(a), "format": art_a.format, "family": art_a.family},
        "b": {"path": str(b), "format": art_b.format, "family": art_b.family},
        "inputs": {"added": [n for n in in_b if n not in in_a], "removed": [n for n in in_a if n not in in_b]},
        "outputs": {"added": [n for n in out_b if n not in out_a], "removed": [n for n in out_a if n not in out_b]},
        "layers": {"added": sorted(layers_b.keys() - layers_a.keys()),
                   "removed": sorted(layers_a.keys() - layers_b.keys()),
                   "changed": {k: changed[k] for k in sorted(changed)}},
        "weights": weights,
    }
    report["identical"] = not any([*report["inputs"].values(), *report["outputs"].values(),
                                   report["layers"]["added"], report["layers"]["removed"], changed,
                                   weights and (weights["changed"] or weights["added"] or weights["removed"])])
    return report


def format_table(report: dict) -> str:
    """The human-readable rendering of a diff report."""
    lines = [f"A: {report['a']['path']} ({report['a']['format']}, {report['a']['family']})",
             f"B: {report['b']['path']} ({report['b']['format']}, {report['b']['family']})"]
    rows = []
    for kind in ("inputs", "outputs"):
        for change in ("added", "removed"):
            rows += [(kind[:-1], change, name, "") for name in report[kind][change]]
    layers = report["layers"]
    rows += [("layer", "added", name, "") for name in layers["added"]]
    rows += [("layer", "removed", name, "") for name in layers["removed"]]
    rows += [("layer", "changed", name, ", ".join(keys)) for name, keys in layers["changed"].items()]
    weights = report["weights"]
    if weights is not None:
        rows += [("weight", change, name, "sha256 differs" if change == "changed" else "")
                 for change in ("changed", "added", "removed") for name in weights[change]]
    if rows:
        header = ("what", "change", "name", "detail")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
        for row in [header, *rows]:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + ("  " + row[3] if row[3] else ""))
    if weights is None:
        lines.append("weights: not compared (a SavedModel's variables are not read statically)")
    else:
        lines.append(f"weights: {len(weights['identical'])} identical, {len(weights['changed'])} changed "
                     f"(by sha256), {len(weights['added'])} added, {len(weights['removed'])} removed")
    lines.append("identical" if report["identical"] else "different")
    return "\n".join(lines)


__all__ = ["diff", "format_table", "weight_hashes", "SCHEMA"]
_ = walk_values  # the same walker other static readers use; kept importable here


_STATE_KEYS = ("return_state", "stateful")
# Keys that only matter when a layer is built fresh or trained, never to a loaded model's
# outputs (a live model saved for the check re-serializes its initializers' seeds).
_TRAINING_ONLY = ("_initializer", "_regularizer", "_constraint")


def _comparable(value):
    """`value` without what surgery may change or a save renumbers, in every dict inside it:
    return_state/stateful, training-only keys, Keras 3's shared_object_id (a wrapper's inner
    layer serialized by two saves carries two)."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()
                if k not in _STATE_KEYS and k != "shared_object_id" and not k.endswith(_TRAINING_ONLY)}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def structural_mismatch(original: str | os.PathLike, rebuilt: str | os.PathLike) -> str | None:
    """Why REBUILT cannot be ORIGINAL with state I/O added (one line), or None when it can be.
    Static: checked before anything is run, so unrelated models never reach Keras."""
    report = diff(original, rebuilt)
    layers = report["layers"]
    before = _layers(read_artifact(original).model_config or {})
    after = _layers(read_artifact(rebuilt).model_config or {})
    # Surgery may only turn on return_state (also of a wrapper's inner layers): any other
    # difference, at any depth, is structural.
    changed = {name: [k for k in keys if k not in _STATE_KEYS and not k.endswith(_TRAINING_ONLY) and
                      _comparable(before[name].get("config", {}).get(k))
                      != _comparable(after[name].get("config", {}).get(k))]
               for name, keys in layers["changed"].items()}
    changed = {name: keys for name, keys in changed.items() if keys}
    problems = []
    # A Sequential names no inputs/outputs of its own (surgery writes it as a Functional):
    # its I/O names are only comparable between two graph models.
    graphs = all("input_layers" in (read_artifact(p).model_config or {}).get("config", {})
                 for p in (original, rebuilt))
    for what in ("inputs", "outputs") if graphs else ():
        if report[what]["removed"]:
            problems.append(f"{what} missing in the rebuilt model: {', '.join(report[what]['removed'][:5])}")
    if layers["removed"]:
        problems.append(f"layers missing: {', '.join(layers['removed'][:5])}")
    if changed:
        problems.append("layers changed: " + "; ".join(f"{n} ({', '.join(k[:4])})" for n, k in list(changed.items())[:3]))
    if problems:
        return "the models differ in structure: " + "; ".join(problems)
    return None
