"""State inputs/outputs a model already has: found, then taken off so an operation can redo them.

Every command adds state I/O under the same names (`<site>_<role>` outputs, `<site>_<role>_in`
inputs). A model that went through one command already has some; the next command takes them
off (`strip_state_io`), works on the plain model underneath, and puts its own back under the
same names, so state I/O is reused and never duplicated. What counts as state I/O: the names
in the manifest beside the artifact, else the naming convention (an Identity output named for a
site's state, an Input named for a site's state input that only feeds that site's initial
state). Configs are edited on copies; the input is never modified.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from surgery.errors import NotSupportedError
from surgery.graph.level import Level, dialect_for, top_level_entry
from surgery.graph.sites import Site, find_sites


@dataclass(frozen=True)
class StateIO:
    """State inputs and outputs found at a model's top level: {name: (site, role)}."""

    outputs: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    source: str = "none"  # "manifest", "names" (the naming convention) or "none"

    def __bool__(self) -> bool:
        return bool(self.outputs or self.inputs)

    @property
    def sites(self) -> list[str]:
        seen: dict[str, None] = {}
        for site, _role in (*self.outputs.values(), *self.inputs.values()):
            seen.setdefault(site)
        return list(seen)

    def describe(self) -> str:
        parts = []
        if self.outputs:
            parts.append(f"{len(self.outputs)} state output(s) ({', '.join(self.outputs)})")
        if self.inputs:
            parts.append(f"{len(self.inputs)} state input(s) ({', '.join(self.inputs)})")
        return " and ".join(parts) or "no state I/O"


def read_manifest(artifact_path: str | os.PathLike | None) -> dict | None:
    """The manifest beside an artifact, or None (absent, unreadable or not this tool's)."""
    if artifact_path is None:
        return None
    path = Path(artifact_path)
    path = path.with_name(path.name + ".manifest.json")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "lstm_surgery" in manifest else None


def _refs(structure) -> list[tuple]:
    if isinstance(structure, list) and len(structure) == 3 and isinstance(structure[0], str):
        return [tuple(structure)]
    if isinstance(structure, dict):
        return [tuple(v) for v in structure.values()]
    return [tuple(item) for item in structure or []]


def find_state_io(model_config: dict, family: str = "keras3", manifest: dict | None = None,
                  sites: list[Site] | None = None) -> StateIO:
    """The top-level state I/O of a model config (see the module doc for what counts).
    `sites`: find_sites(model_config, family) when the caller already has them."""
    if model_config.get("class_name") not in ("Functional", "Model") or "layers" not in model_config.get("config", {}):
        return StateIO()  # a Sequential (or subclassed) model has no extra inputs/outputs
    sites = find_sites(model_config, family) if sites is None else sites
    by_name = {st.output_name: (site.name, st.role) for site in sites for st in site.states}
    in_names = {st.input_name: (site.name, st.role) for site in sites for st in site.states}
    source = "names"
    if manifest is not None and (manifest.get("state_outputs") or manifest.get("state_inputs")):
        # The manifest is the record; the graph must still agree with it.
        known = {site.name for site in sites}
        by_name = {e["name"]: (e["site"], e["role"]) for e in manifest.get("state_outputs", [])
                   if "name" in e and e.get("site") in known}
        in_names = {e["name"]: (e["site"], e["role"]) for e in manifest.get("state_inputs", [])
                    if "name" in e and e.get("site") in known}
        source = "manifest"
    config = model_config["config"]
    layers = {(e.get("name") or e["config"]["name"]): e for e in config["layers"]}
    outputs = {ref[0]: by_name[ref[0]] for ref in _refs(config.get("output_layers"))
               if ref[0] in by_name and layers.get(ref[0], {}).get("class_name") == "Identity"}
    dialect = dialect_for(family)
    inputs = {ref[0]: in_names[ref[0]] for ref in _refs(config.get("input_layers"))
              if ref[0] in in_names and _feeds_initial_state_only(layers, ref[0], dialect)}
    # Where the states are all a model has (a split encoder's outputs), they are its own I/O.
    if len(outputs) == len(_refs(config.get("output_layers"))):
        outputs = {}
    if len(inputs) == len(_refs(config.get("input_layers"))):
        inputs = {}
    if not outputs and not inputs:
        return StateIO()
    return StateIO(outputs, inputs, source)


def _feeds_initial_state_only(layers: dict, name: str, dialect) -> bool:
    users = [(entry, node) for entry in layers.values() for node in entry.get("inbound_nodes", [])
             if any(dialect.ref_of(t)[0] == name for t in dialect.iter_tensors(node))]
    if not users:
        return False
    for entry, node in users:
        if dialect.family == "keras3":
            initial = (node.get("kwargs") or {}).get("initial_state")
            if not any(dialect.ref_of(t)[0] == name for t in dialect.iter_tensors(initial or [])):
                return False
            if any(dialect.ref_of(t)[0] == name for t in dialect.iter_tensors(node.get("args", []))):
                return False
        else:
            entries = dialect._entries(node)
            if not entries or dialect.ref_of(entries[0])[0] == name:
                return False  # the layer's sequence input, not its initial state
    return True


def strip_state_io(model_config: dict, family: str = "keras3", found: StateIO | None = None) -> dict:
    """A copy of the config without the given (default: found) state inputs and outputs."""
    found = find_state_io(model_config, family) if found is None else found
    entry = top_level_entry(model_config)
    if not found:
        return entry
    dialect = dialect_for(family)
    level = Level(entry, dialect)
    config = level.config
    gone_out, gone_in = set(found.outputs), set(found.inputs)
    config["output_layers"] = _without(config["output_layers"], gone_out)
    config["input_layers"] = _without(config["input_layers"], gone_in)
    for layer in config["layers"]:
        for node in layer.get("inbound_nodes", []):
            _drop_initial_state(dialect, node, gone_in)
    # An Identity output is dropped only when nothing else reads it.
    still_read = {dialect.ref_of(t)[0] for layer in config["layers"] for node in layer.get("inbound_nodes", [])
                  for t in dialect.iter_tensors(node)}
    still_read |= {ref[0] for ref in _refs(config["output_layers"])}
    config["layers"] = [layer for layer in config["layers"]
                        if Level.name_of(layer) not in gone_in
                        and not (Level.name_of(layer) in gone_out and Level.name_of(layer) not in still_read)]
    return entry


def _without(structure, names: set):
    if isinstance(structure, list) and len(structure) == 3 and isinstance(structure[0], str):
        if structure[0] in names:
            raise NotSupportedError(f"{structure[0]!r} is the model's only input/output; nothing would be left")
        return structure
    if isinstance(structure, dict):
        return {k: v for k, v in structure.items() if v[0] not in names}
    kept = [item for item in structure if item[0] not in names]
    if not kept:
        raise NotSupportedError(f"every input/output of the model is state I/O ({sorted(names)}); nothing would be left")
    return kept


def _drop_initial_state(dialect, node, names: set) -> None:
    if not names:
        return
    if dialect.family == "keras3":
        kwargs = node.get("kwargs") or {}
        initial = kwargs.get("initial_state")
        if initial is None:
            return
        refs = [dialect.ref_of(t)[0] for t in dialect.iter_tensors(initial)]
        if refs and all(r in names for r in refs):
            del kwargs["initial_state"]
        elif any(r in names for r in refs):
            raise NotSupportedError(
                f"an initial state mixes state inputs ({sorted(set(refs) & names)}) with other tensors")
        return
    if isinstance(node, list):
        node[:] = [item for i, item in enumerate(node) if i == 0 or dialect.ref_of(item)[0] not in names]


# ------------------------------------------------------------------------------------------
# Live models


def base_model(model, *, manifest: dict | None = None, custom_objects=None):
    """(model without its state I/O, StateIO). The same model object when it has none; a new
    model otherwise (the input is not modified)."""
    from surgery.io import families
    from surgery.ops.expose import transfer_weights
    from surgery.io.quiet import quiet

    family = families.of_model(model)
    config = family.serialize(model)
    found = find_state_io(config, family.name, manifest)
    if not found:
        return model, found
    stripped = strip_state_io(config, family.name, found)
    built = family.deserialize(copy.deepcopy(stripped), custom_objects)
    with quiet():
        transfer_weights(model, built)
    return built, found


@dataclass(frozen=True)
class Plain:
    """A model ready for an operation: its state I/O taken off and, when asked, in Keras 3."""

    model: object
    found: StateIO
    translated: bool = False          # a Keras 2 model translated to Keras 3 on the way
    translation: object | None = None  # CheckReport: the translation against the Keras 2 original
    notes: tuple = ()

    @property
    def translation_check(self) -> str | None:
        return self.translation.summary() if self.translation is not None else None

    def report_lines(self) -> list[str]:
        lines = []
        if self.found:
            lines.append(f"reused: the input already had {self.found.describe()} (from its {self.found.source}); "
                         "taken off and redone under the same names")
        if self.translated:
            lines.append(f"translated: Keras 2 input converted to Keras 3 on the way; {self.translation_check}")
        return lines

    def as_dict(self) -> dict:
        return {"reused_state_outputs": list(self.found.outputs), "reused_state_inputs": list(self.found.inputs),
                "reused_from": self.found.source if self.found else None, "translated_from_keras2": self.translated,
                "translation_check": self.translation_check,
                "translation_verification": self.translation.as_dict() if self.translation is not None else None,
                "translation_notes": list(self.notes)}


def plain_model(source, *, keras3: bool = False, unsafe: bool = False, custom_objects=None, progress=None) -> Plain:
    """Load `source` (path, artifact or live model), take its state I/O off and, with `keras3`,
    translate a Keras 2 model to Keras 3, checked against the (plain) Keras 2 original."""
    from surgery.io import families
    from surgery.io.artifact import ModelArtifact
    from surgery.check.report import raise_if_failed
    from surgery.io import formats
    from surgery.io.loading import load_model
    from surgery.ops import translation_check
    from surgery.ops.translate import translate, translate_live

    step = progress or (lambda _message: None)
    artifact = None
    if isinstance(source, (str, os.PathLike, ModelArtifact)):
        artifact = source if isinstance(source, ModelArtifact) else formats.read_artifact(source)
        step("loading the model")
        model = load_model(artifact, unsafe=unsafe, custom_objects=custom_objects)
    else:
        model = source
    manifest = read_manifest(artifact.path) if artifact is not None else None
    model, found = base_model(model, manifest=manifest, custom_objects=custom_objects)
    if not keras3 or families.of_model(model).name == "keras3":
        return Plain(model, found)
    step("translating Keras 2 to Keras 3")
    if artifact is not None and not found:
        # The file's own config and weights: the path `convert` takes (cuDNN layouts, old forms).
        translated, notes = translate(artifact, custom_objects=custom_objects, unsafe=unsafe)
        check = translation_check.check_translation(translated, original=model, artifact=artifact,
                                                    unsafe=unsafe, custom_objects=custom_objects)
    else:
        translated, notes = translate_live(model, custom_objects=custom_objects)
        check = translation_check.check_translation(translated, original=model)
    return Plain(translated, found, True, raise_if_failed(check), tuple(notes))
