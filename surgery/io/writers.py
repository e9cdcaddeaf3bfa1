"""What a writing operation puts into the staged files (surgery.io.saving places them): the JSON
manifest beside an artifact (`build_manifest`, `write_manifest`, `sha256_of`), signature names,
`export_savedmodel` and `save_keras_model`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from surgery.errors import SurgeryError
from surgery.io import copying
from surgery.io.saving import atomic_target, manifest_path


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file (read ahead on a second thread: copying.digest_file), or of a
    directory's files in sorted order."""
    path = Path(path)
    if not path.is_dir():
        return copying.digest_file(path).sha256
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def write_manifest(artifact: str | os.PathLike, manifest: dict) -> Path:
    """Write (or replace) `<artifact>.manifest.json` alone; operations commit theirs with the artifact."""
    target = manifest_path(artifact)
    with atomic_target(target) as temp:
        temp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return target


def build_manifest(*, artifact, fmt: str, family: str, operation: str, plan, source=None,
                   source_sha256: str | None = None, model_inputs=None, model_outputs=None,
                   extra: dict | None = None) -> dict:
    from surgery import __version__

    manifest = {
        "lstm_surgery": __version__,
        "operation": operation,
        "artifact": Path(artifact).name,
        "format": fmt,
        "family": family,
        "source": {"path": str(source) if source else None, "sha256": source_sha256},
        "model_inputs": model_inputs or [],
        "model_outputs": model_outputs or [],
        "state_inputs": [s.as_dict() for s in plan.inputs] if plan else [],
        "state_outputs": [s.as_dict() for s in plan.outputs] if plan else [],
        "skipped": [{"site": site, "reason": reason} for site, reason in plan.skipped] if plan else [],
    }
    if extra:
        manifest.update(extra)
    return manifest


def tensor_entries(tensors, names) -> list[dict]:
    out = []
    for tensor, name in zip(tensors, names):
        out.append({"name": name, "shape": list(tensor.shape), "dtype": str(tensor.dtype)})
    return out


def signature_names(model, plan) -> tuple[list[str], list[str]]:
    """Input and output keys of the serving signature: model names, then state names."""
    from surgery.graph.level import sanitize

    state_inputs = {s.name for s in plan.inputs} if plan else set()
    state_outputs = [s.name for s in plan.outputs] if plan else []
    inputs = [sanitize(t.name.split(":")[0]) if hasattr(t, "name") else f"input_{i}"
              for i, t in enumerate(model.inputs)]
    inputs = [name if name in state_inputs else name for name in inputs]
    originals = len(model.outputs) - len(state_outputs)
    output_names = list(getattr(model, "output_names", []) or [])
    base = [sanitize(n) for n in output_names[:originals]] or [f"output_{i}" for i in range(originals)]
    outputs = _dedupe(base + state_outputs)
    return _dedupe(inputs), outputs


def _dedupe(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 0
        out.append(name)
    return out


def export_savedmodel(model, directory: Path, input_names: list[str], output_names: list[str]) -> None:
    """A SavedModel whose serving signature's input and output keys are the given names."""
    from surgery.io.quiet import import_tensorflow, quiet

    tf = import_tensorflow()
    specs = [
        tf.TensorSpec([None if d is None else d for d in t.shape], t.dtype, name=name)
        for t, name in zip(model.inputs, input_names)
    ]

    class _Serving(tf.Module):
        def __init__(self, keras_model):
            super().__init__()
            self.model = keras_model
            # Tracked explicitly so the SavedModel (and a TFLite conversion of it) carries
            # initialized weights, not only the traced graph.
            self.model_variables = [v.value for v in keras_model.variables]

    module = _Serving(model)

    @tf.function(input_signature=specs)
    def serve(*tensors):
        outputs = module.model(list(tensors) if len(tensors) > 1 else tensors[0], training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return {name: tensor for name, tensor in zip(output_names, outputs)}

    module.serve = serve
    with quiet():
        tf.saved_model.save(module, str(directory), signatures={"serving_default": serve})


def save_keras_model(model, dest: Path, fmt: str) -> None:
    """Write a live model to `dest` (a temporary path) in the given format."""
    from surgery.io.quiet import quiet

    with quiet():
        if fmt == "keras":
            model.save(str(dest))
        elif fmt == "h5":
            model.save(str(dest))
        else:
            raise SurgeryError(f"save_keras_model cannot write format {fmt!r}")
