"""inspect: a static report of a model file's recurrent sites. Never imports TensorFlow.

The JSON schema (`SCHEMA`) is stable for pipelines; see the README for every field.
"""

from __future__ import annotations

import dataclasses
import os

from surgery.errors import NotSupportedError, UnreadableModelError
from surgery.io.formats import read_artifact
from surgery.io.safety import scan_config, training_only
from surgery.graph.sites import Site, find_sites
from surgery.ops.state_io import find_state_io, read_manifest

SCHEMA = "lstm-surgery/inspect/v1"


def _site_dict(site: Site) -> dict:
    return {
        "name": site.name,
        "path": site.path,
        "layer": site.layer,
        "model_path": list(site.model_path),
        "call_index": site.call_index,
        "class": site.class_name,
        "wrapper": site.wrapper,
        "units": site.units,
        "return_sequences": site.return_sequences,
        "return_state": site.return_state,
        "stateful": site.stateful,
        "go_backwards": site.go_backwards,
        "initial_state_from_graph": site.fed_by_graph,
        "input_shape": list(site.input_shape) if site.input_shape is not None else None,
        "states": [
            {"role": s.role, "output_name": s.output_name, "input_name": s.input_name,
             "shape": [None, *s.shape], "dtype": s.dtype}
            for s in site.states
        ],
        "weights": {name: list(shape) for name, shape in site.weight_shapes.items()},
    }


def _with_stored_weights(site: dict, weight_shapes: dict) -> dict:
    """Keras 2 HDF5 configs record no input shapes: show the stored datasets instead."""
    if site["weights"] or not weight_shapes:
        return site
    marker = f"/{site['layer']}/"
    site["weights"] = {
        name.rsplit(marker, 1)[1]: list(shape)
        for name, shape in weight_shapes.items() if marker in f"/{name}"
    }
    return site


def inspect(path: str | os.PathLike) -> dict:
    """Describe a model file: format, family, recurrent sites, and content that would run code."""
    try:
        artifact = read_artifact(path)
    except (UnreadableModelError, NotSupportedError):
        served = _serving_savedmodel(path)
        if served is None:
            raise
        return served
    report = {
        "schema": SCHEMA,
        "path": str(path),
        "format": artifact.format,
        "family": artifact.family,
        "keras_version": artifact.keras_version,
        "weights_only": artifact.weights_only,
        "model": None,
        "supported": True,
        "unsupported_reason": None,
        "sites": [],
        "unsafe": [],
        "training_only": [],
        "weights": {name: list(shape) for name, shape in artifact.weight_shapes.items()}
        if artifact.weights_only else {},
    }
    if artifact.weights_only:
        report["supported"] = False
        report["unsupported_reason"] = "weights-only file: no model graph to rewire"
        report["unsafe"] = [{"path": f.path, "kind": f.kind, "detail": f.detail} for f in artifact.hazards]
        return report
    config = artifact.model_config
    report["model"] = {"class_name": config.get("class_name"), "name": config.get("config", {}).get("name")}
    findings = [*artifact.hazards, *scan_config(config)]
    for where, embedded in artifact.embedded_configs:
        findings += [dataclasses.replace(f, path=f"{where}: {f.path}") for f in scan_config(embedded)]
    report["unsafe"] = [{"path": f.path, "kind": f.kind, "detail": f.detail} for f in findings
                        if not training_only(f)]
    # Custom objects only the training configuration names: listed, never refused (see safety).
    report["training_only"] = [{"path": f.path, "kind": f.kind, "detail": f.detail} for f in findings
                               if training_only(f)]
    try:
        sites = find_sites(config, artifact.family)
        report["sites"] = [_with_stored_weights(_site_dict(site), artifact.weight_shapes) for site in sites]
        found = find_state_io(config, artifact.family, read_manifest(artifact.path), sites=sites)
        report["state_io"] = {"outputs": list(found.outputs), "inputs": list(found.inputs), "from": found.source}
    except NotSupportedError as error:
        report["supported"] = False
        report["unsupported_reason"] = str(error)
    return report


def _serving_savedmodel(path) -> dict | None:
    """A SavedModel with only a serving signature (what `stream` writes for Keras 3) has no
    Keras config to read; its manifest describes it. None when there is no such manifest."""
    manifest = read_manifest(path)
    if manifest is None or not os.path.isdir(path):
        return None
    return {
        "schema": SCHEMA, "path": str(path), "format": manifest.get("format", "savedmodel"),
        "family": manifest.get("family"), "keras_version": None, "weights_only": False,
        "model": {"class_name": "serving SavedModel", "name": manifest.get("operation")},
        "supported": True, "unsupported_reason": None, "sites": [], "unsafe": [], "training_only": [], "weights": {},
        "state_io": {"outputs": [s["name"] for s in manifest.get("state_outputs", [])],
                     "inputs": [s["name"] for s in manifest.get("state_inputs", [])], "from": "manifest"},
        "serving": {"operation": manifest.get("operation"), "inputs": manifest.get("model_inputs", []),
                    "outputs": manifest.get("model_outputs", []), "signatures": manifest.get("signatures"),
                    "state": manifest.get("state")},
    }


def format_table(report: dict) -> str:
    """Human-readable rendering of an inspect report."""
    lines = [
        f"{report['path']}: {report['format']} ({report['family']}"
        + (f", Keras {report['keras_version']}" if report["keras_version"] else "") + ")",
    ]
    if report["model"]:
        lines.append(f"model: {report['model']['name']} ({report['model']['class_name']})")
    if not report["supported"]:
        lines.append(f"not supported: {report['unsupported_reason']}")
    serving = report.get("serving")
    if serving:
        lines.append(f"written by `{serving['operation']}` ({serving.get('state')} state); no Keras config inside, "
                     "described by its manifest")
        lines.append("signature serving_default: " + ", ".join(serving["inputs"]) + " -> "
                     + ", ".join(serving["outputs"]))
    state_io = report.get("state_io") or {}
    if state_io.get("outputs") or state_io.get("inputs"):
        lines.append(f"state I/O already there (from its {state_io['from']}; reused by every command): "
                     + ", ".join([*state_io["inputs"], *state_io["outputs"]]))
    if report["weights_only"]:
        lines.append(f"weights: {len(report['weights'])} tensors")
        for name, shape in sorted(report["weights"].items()):
            lines.append(f"  {name}  {tuple(shape)}")
    sites = report["sites"]
    if sites:
        lines.append(f"recurrent sites: {len(sites)}")
        header = ("site", "class", "units", "flags", "states (name shape dtype)")
        rows = []
        for site in sites:
            flags = ",".join(
                flag for flag, on in (
                    ("seq", site["return_sequences"]), ("state", site["return_state"]),
                    ("stateful", site["stateful"]), ("backwards", site["go_backwards"]),
                    ("init<-graph", site["initial_state_from_graph"]),
                ) if on
            ) or "-"
            states = "; ".join(
                f"{s['output_name']} {_shape(s['shape'])} {s['dtype']}" for s in site["states"]
            )
            rows.append((site["path"], site["class"], str(site["units"]), flags, states))
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
        for row in [header, *rows]:
            lines.append("  " + "  ".join(str(c).ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
        lines.append("weights:")
        for site in sites:
            if site["call_index"] == 0 and site["weights"]:
                shapes = ", ".join(f"{k} {_shape(v)}" for k, v in site["weights"].items())
                lines.append(f"  {site['path']}: {shapes}")
    elif report["supported"] and not report["weights_only"]:
        lines.append("recurrent sites: none")
    if report["unsafe"]:
        lines.append(f"would run code or read other files on load ({len(report['unsafe'])}; refused unless --unsafe):")
        for finding in report["unsafe"]:
            lines.append(f"  {finding['kind']}: {finding['path']}: {finding['detail']}")
    if report.get("training_only"):
        lines.append("named by the training configuration only (models here are never compiled; not refused):")
        for finding in report["training_only"]:
            lines.append(f"  {finding['kind']}: {finding['path']}: {finding['detail']}")
    return "\n".join(lines)


def _shape(shape) -> str:
    return str(tuple(shape))
