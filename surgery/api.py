"""The Python API: every function takes a path or a live model (Keras 3 or tf_keras), returns
new objects and never modifies its input. TensorFlow is imported on first use only.

The command line is a thin layer over the same library; these functions are what a notebook
or a pipeline calls.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Union

if TYPE_CHECKING:  # pragma: no cover
    from surgery.ops.seq2seq import Seq2SeqSplit
    from surgery.ops.stream import StreamReport
    from surgery.check.verify import VerifyReport

PathLike = Union[str, os.PathLike]
ModelOrPath = Any  # a path (str / os.PathLike) or a live keras.Model / tf_keras Model


def _is_path(value) -> bool:
    return isinstance(value, (str, os.PathLike))


def _live(source: ModelOrPath, *, unsafe: bool = False, custom_objects: dict | None = None):
    if _is_path(source):
        from surgery.io.loading import load_model as _load

        return _load(source, unsafe=unsafe, custom_objects=custom_objects)
    return source


def _plain(source: ModelOrPath, *, keras3: bool = False, unsafe: bool = False, custom_objects=None):
    """A live model without the state I/O a command already added (see surgery.ops.state_io)."""
    from surgery.ops import state_io

    return state_io.plain_model(source, keras3=keras3, unsafe=unsafe, custom_objects=custom_objects).model


@contextlib.contextmanager
def _as_file(source: ModelOrPath, directory: Path, name: str) -> Iterator[str]:
    """A path for `source`: itself, or a private copy of a live model saved in `directory`."""
    if _is_path(source):
        yield os.fspath(source)
        return
    from surgery.io import families

    family = families.of_model(source)
    path = directory / (name + (".keras" if family.name == "keras3" else ".h5"))
    family.save(source, str(path), "keras" if family.name == "keras3" else "h5")
    yield str(path)


def load_model(path: PathLike, *, unsafe: bool = False, custom_objects: dict | None = None):
    """Load a model file after a static safety scan, in Keras safe mode (exit-3 content refused)."""
    from surgery.io.loading import load_model as _load

    return _load(path, unsafe=unsafe, custom_objects=custom_objects)


def inspect(model: ModelOrPath) -> dict:
    """Static report of a model's recurrent sites (the `inspect --json` schema)."""
    from surgery.ops import inspect as inspect_op

    if _is_path(model):
        return inspect_op.inspect(model)
    with tempfile.TemporaryDirectory(prefix="lstm-surgery-") as directory, \
            _as_file(model, Path(directory), "model") as path:
        report = inspect_op.inspect(path)
    report["path"] = f"<live model {getattr(model, 'name', '?')!r}>"
    return report


def find_sites(model: ModelOrPath | dict, family: str | None = None) -> list:
    """Every recurrent site (surgery.graph.sites.Site) of a path, a live model or a model config dict."""
    from surgery.io import families
    from surgery.graph.sites import find_sites as _find

    if isinstance(model, dict):
        return _find(model, family or "keras3")
    if _is_path(model):
        from surgery.io.formats import read_artifact

        artifact = read_artifact(model)
        return _find(artifact.model_config, artifact.family)
    fam = families.of_model(model)
    return _find(fam.serialize(model), fam.name)


def expose_state(model: ModelOrPath, layers: Iterable[str] | None = None, outputs: bool = True,
                 inputs: bool = False, *, unsafe: bool = False, custom_objects: dict | None = None):
    """A new model whose recurrent states are extra outputs (and, with inputs=True, inputs).

    State I/O the model already has is kept under its names, never duplicated."""
    from surgery.io import families
    from surgery.ops import state_io
    from surgery.ops.expose import rebuild_with_states

    live = _live(model, unsafe=unsafe, custom_objects=custom_objects)
    manifest = state_io.read_manifest(model) if _is_path(model) else None
    base, found = state_io.base_model(live, manifest=manifest, custom_objects=custom_objects)
    if found:
        layers = sorted({*layers, *found.sites}) if layers else None
        outputs, inputs = outputs or bool(found.outputs), inputs or bool(found.inputs)
    rebuilt, _plan = rebuild_with_states(base, layers=layers, outputs=outputs, inputs=inputs,
                                         custom_objects=custom_objects)
    assert families.of_model(rebuilt).name == families.of_model(live).name
    return rebuilt


def verify(original: ModelOrPath, rebuilt: ModelOrPath, *, data=None, unsafe: bool = False,
           custom_objects: dict | None = None) -> "VerifyReport":
    """Check that `rebuilt` reproduces `original` exactly and its states match the NumPy oracle."""
    from surgery.check import verify as module
    with tempfile.TemporaryDirectory(prefix="lstm-surgery-") as directory, \
            _as_file(original, Path(directory), "original") as a, _as_file(rebuilt, Path(directory), "rebuilt") as b:
        return module.verify_files(a, b, unsafe=unsafe, custom_objects=custom_objects, data=data)


def to_step_model(model: ModelOrPath, state: str = "external", steps: int = 1, batch_size: int | None = None, *,
                  unroll: bool | None = None, unsafe: bool = False, custom_objects: dict | None = None):
    """A model that runs `steps` timesteps per call and carries the state (external: as I/O)."""
    from surgery.ops.stream import to_step_model as _step

    return _step(_plain(model, keras3=True, unsafe=unsafe, custom_objects=custom_objects), state, steps,
                 batch_size, unroll=unroll, custom_objects=custom_objects)


def verify_streaming(model: ModelOrPath, *, steps: Iterable[int] = (1, 4, 16), batches: Iterable[int] = (1, 8),
                     length: int = 500, unsafe: bool = False, custom_objects: dict | None = None) -> "StreamReport":
    """Step a step model through `length` timesteps and compare with the full-sequence model."""
    from surgery.ops.stream import verify_streaming as _verify

    return _verify(_plain(model, keras3=True, unsafe=unsafe, custom_objects=custom_objects), steps=steps,
                   batches=batches, length=length, custom_objects=custom_objects)


def split_seq2seq(model: ModelOrPath, *, unsafe: bool = False, custom_objects: dict | None = None) -> "Seq2SeqSplit":
    """(encoder, decoder step model) from a trained teacher-forced encoder-decoder."""
    from surgery.ops.seq2seq import split_seq2seq as _split

    return _split(_plain(model, keras3=True, unsafe=unsafe, custom_objects=custom_objects),
                  custom_objects=custom_objects)


def splice(a: ModelOrPath, b: ModelOrPath, mode: str = "chain", mapping: Iterable[str] | None = None, *,
           data=None, store: str = "constant", unsafe: bool = False, custom_objects: dict | None = None):
    """A new model: A's final state starts B (chain), A's weights in B (weights), or A's state baked into B (prime)."""
    from surgery.ops import splice as module
    with tempfile.TemporaryDirectory(prefix="lstm-surgery-") as directory:
        work = Path(directory)
        with _as_file(a, work, "a") as path_a, _as_file(b, work, "b") as path_b:
            ext = Path(path_b).suffix if Path(path_b).suffix in (".keras", ".h5") else ".keras"
            out = work / f"spliced{ext}"
            module.splice(path_a, path_b, mode, list(mapping or []), output=out, data=data, store=store,
                          unsafe=unsafe, custom_objects=custom_objects)
            return load_model(out, unsafe=unsafe, custom_objects=custom_objects)


def save(model, path: PathLike, *, fmt: str | None = None, force: bool = False, operation: str = "save",
         source: PathLike | None = None) -> Path:
    """Write a live model atomically with its manifest (state I/O named); returns the manifest's path."""
    from surgery.io import families, saving
    from surgery.ops import pipeline, state_io

    family = families.of_model(model)
    fmt = saving.infer_format(path, fmt)
    with pipeline.WriteJob(operation, force=force) as job:
        if source:
            job.add_source(source)
        out = Path(path)
        job.check(pipeline.Target.model(out, fmt))
        found = state_io.find_state_io(family.serialize(model), family.name)
        manifest = pipeline.ModelManifest(
            fmt, family.name, model_inputs=[t.name.split(":")[0] for t in model.inputs],
            model_outputs=list(getattr(model, "output_names", None) or []),
            extra={"state_outputs": [{"name": n, "site": s, "role": r} for n, (s, r) in found.outputs.items()],
                   "state_inputs": [{"name": n, "site": s, "role": r} for n, (s, r) in found.inputs.items()]})
        done = job.write(lambda temps: family.save(model, str(temps[out]), fmt), manifests=lambda: {out: manifest})
    return done.manifests[out]


def diff(a: ModelOrPath, b: ModelOrPath) -> dict:
    """What changed from A to B: inputs/outputs, layers (config keys), weights (by hash). Static for paths."""
    from surgery.check.diff import diff as _diff

    with tempfile.TemporaryDirectory(prefix="lstm-surgery-") as directory, \
            _as_file(a, Path(directory), "a") as path_a, _as_file(b, Path(directory), "b") as path_b:
        return _diff(path_a, path_b)


PUBLIC_FUNCTIONS = ("inspect", "find_sites", "load_model", "expose_state", "verify", "to_step_model",
                    "verify_streaming", "split_seq2seq", "splice", "save", "diff")
