"""Atomic writes of rebuilt models and their JSON manifests.

Every artifact is written to a temporary sibling and renamed into place, so a crash or a
SIGKILL never leaves a partial file at the target path. The tool never writes to its input.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from surgery.errors import SurgeryError, UsageError

EXTENSION_FORMATS = {".keras": "keras", ".h5": "h5", ".hdf5": "h5"}
FORMAT_EXTENSIONS = {"keras": ".keras", "h5": ".h5", "savedmodel": ""}


def infer_format(path: str | os.PathLike, requested: str | None = None) -> str:
    if requested:
        if requested not in FORMAT_EXTENSIONS:
            raise UsageError(f"unknown output format {requested!r}; choose keras, h5 or savedmodel")
        return requested
    suffix = Path(path).suffix.lower()
    return EXTENSION_FORMATS.get(suffix, "savedmodel")


def default_output_path(source: str | os.PathLike, tag: str, fmt: str | None = None) -> Path:
    """<stem>.<tag><ext> next to the source, e.g. model.exposed.keras."""
    source = Path(source)
    if source.is_dir():
        return source.with_name(f"{source.name}.{tag}")
    stem, ext = source.stem, source.suffix
    if fmt is not None and fmt != "savedmodel":
        ext = FORMAT_EXTENSIONS[fmt]
    elif fmt == "savedmodel":
        ext = ""
    return source.with_name(f"{stem}.{tag}{ext}")


def manifest_path(artifact: str | os.PathLike) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".manifest.json")


def check_output(source: str | os.PathLike | None, dest: str | os.PathLike, force: bool) -> Path:
    """Refuse to write onto the input, or over an existing file without --force."""
    dest = Path(dest)
    if source is not None:
        src = Path(source)
        if dest.resolve() == src.resolve() or (dest.exists() and src.exists() and os.path.samefile(dest, src)):
            raise UsageError(f"refusing to write the output onto the input {str(src)!r}")
    if dest.exists() and not force:
        raise UsageError(f"output {str(dest)!r} exists; pass --force to overwrite it")
    if not dest.parent.exists():
        raise UsageError(f"output directory {str(dest.parent)!r} does not exist")
    return dest


@contextlib.contextmanager
def atomic_target(dest: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it onto `dest` only if the block succeeds."""
    dest = Path(dest)
    parent = dest.parent
    prefix = f".{dest.name}.tmp-"
    if directory:
        temp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        shutil.rmtree(temp)  # writers (SavedModel) want to create it themselves
    else:
        handle, name = tempfile.mkstemp(prefix=prefix, suffix=dest.suffix, dir=parent)
        os.close(handle)
        temp = Path(name)
    try:
        yield temp
        _replace(temp, dest)
    except BaseException:
        _remove(temp)
        raise


def _replace(temp: Path, dest: Path) -> None:
    if temp.is_dir():
        if dest.exists():
            # A directory cannot be renamed over another: swap via a second temporary name.
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
            os.replace(temp, dest)
            _remove(old)
        else:
            os.replace(temp, dest)
    else:
        _fsync(temp)
        if dest.is_dir():
            raise UsageError(f"output {str(dest)!r} is a directory; choose a file name")
        os.replace(temp, dest)


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of a directory's files in sorted order."""
    digest = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def write_manifest(artifact: str | os.PathLike, manifest: dict) -> Path:
    """Write `<artifact>.manifest.json` atomically."""
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
    from surgery.graph import sanitize

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
    from surgery.quiet import import_tensorflow, quiet

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
    from surgery.quiet import quiet

    with quiet():
        if fmt == "keras":
            model.save(str(dest))
        elif fmt == "h5":
            model.save(str(dest))
        else:
            raise SurgeryError(f"save_keras_model cannot write format {fmt!r}")
