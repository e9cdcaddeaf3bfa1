"""The one write pipeline every writing operation goes through.

    open the inputs (read + safety scan)  ->  check every output (before any work)
        ->  hash the sources (background)  ->  [the operation's own rewrite]
        ->  stage temporaries  ->  write  ->  verify  ->  manifests  ->  commit (manifests first)

A `WriteJob` owns that order and its guarantees; an operation supplies only its own parts:
what it reads, where it writes, its rewrite (its own code between `check` and `write`), how
to write, how to verify, and what its manifests say beyond the common fields.

    with WriteJob("convert", force=force, unsafe=unsafe, progress=progress) as job:
        artifact = job.open(source, needs="convert")
        job.check(Target(output))
        model = ...                                            # the operation's rewrite
        done = job.write(lambda temps: save(model, temps[output]), verify=check_written,
                         manifests=lambda: {output: ModelManifest("keras", "keras3")})

Guarantees: no output is written that was not checked first (overlap with any input, exists
without --force, what --force may replace, its directory); a failing write or verification
(or any exception, also KeyboardInterrupt) leaves nothing at the targets and no temporaries
(surgery.io.saving.staged_outputs), and removes the output directories this job created when
they are still empty; every artifact lands after its manifest, all outputs in one commit.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from surgery.check.report import raise_if_failed
from surgery.errors import SurgeryError, UsageError
from surgery.io import formats, saving, writers
from surgery.io.artifact import ModelArtifact
from surgery.io.safety import ensure_artifact_safe

Temps = Mapping[Path, Path]  # target -> the temporary to write it into
Hashes = Callable[[list], dict]  # hashed source paths -> {path: Future of its sha256}


def open_model(source, *, unsafe: bool = False, custom_objects=None, needs: str | None = None) -> ModelArtifact:
    """Read a model file statically and pass it through the safety scan (before anything loads
    it). needs: the operation's name when it needs a full model (a weights-only file is refused)."""
    artifact = formats.read_artifact(source)
    if needs is not None and artifact.weights_only:
        raise UsageError(f"{str(source)!r} holds weights only; {needs} needs a full model file")
    ensure_artifact_safe(artifact, allow_unsafe=unsafe, trusted=(custom_objects or {}).keys())
    return artifact


def in_background(function: Callable[[Path], str]) -> Hashes:
    """A `hashes` for WriteJob.check: `function(path)` of each source, each on a thread of its
    own. Daemon threads: a run that fails before it needs a hash exits without waiting for it."""

    def start(paths: list) -> dict:
        return {path: _on_daemon_thread(function, path) for path in paths}

    return start


def _on_daemon_thread(function, *args) -> concurrent.futures.Future:
    future = concurrent.futures.Future()

    def run():
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(function(*args))
        except BaseException as error:  # handed to whoever asks for the result
            future.set_exception(error)

    threading.Thread(target=run, name="lstm-surgery-hash", daemon=True).start()
    return future


@dataclass(frozen=True)
class Target:
    """One output of a job: a file, or a directory (a SavedModel)."""

    path: Path
    directory: bool = False
    suffix: str | None = None  # the temporary's extension; None: the output's own

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def model(cls, path, fmt: str) -> "Target":
        """A model written in `fmt`: a SavedModel is a directory; a model file's temporary
        carries its format's extension whatever the output is named (Keras picks the format
        it saves from the name: `-o model --format h5` must still be saved as HDF5)."""
        path = Path(path)
        if fmt == "savedmodel":
            return cls(path, directory=True)
        own = saving.EXTENSION_FORMATS.get(path.suffix.lower()) == fmt
        return cls(path, suffix=None if own else saving.FORMAT_EXTENSIONS[fmt])


@dataclass(frozen=True)
class ModelManifest:
    """What an operation says about one written model. The job adds the rest: the operation,
    the artifact's name, the source (the first input) and its sha256, and "verification"."""

    fmt: str
    family: str
    plan: object = None  # the RewirePlan naming the state inputs/outputs, if any
    model_inputs: list = field(default_factory=list)
    model_outputs: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Written:
    outputs: tuple        # the targets' paths, as given to check()
    manifests: dict       # target path -> its manifest's path
    report: object | None  # what the verification returned; None when not verified


class WriteJob:
    """One writing operation, in the one order (see the module doc). Use it as a `with` block."""

    def __init__(self, operation: str, *, force: bool = False, unsafe: bool = False, custom_objects=None,
                 progress=None):
        self.operation = operation
        self.force, self.unsafe, self.custom_objects = force, unsafe, custom_objects
        self.step = progress or (lambda _message: None)
        self._sources: list[tuple[Path, bool]] = []  # (path, hashed)
        self._targets: list[Target] | None = None
        self._hashes: dict = {}
        self._created: list[Path] = []  # output directories this job made, outermost first
        self._active = False
        self._written = False

    def __enter__(self) -> "WriteJob":
        self._active = True
        return self

    def __exit__(self, kind, error, trace) -> None:
        self._active = False
        if error is not None:
            _remove_empty(self._created)

    # -- inputs ------------------------------------------------------------------------

    def open(self, source, *, needs: str | None = None) -> ModelArtifact:
        """Read and scan an input model (see open_model); it becomes one of the job's sources."""
        artifact = open_model(source, unsafe=self.unsafe, custom_objects=self.custom_objects, needs=needs)
        self.add_source(artifact.path)
        return artifact

    def add_source(self, path, *, hashed: bool = True) -> None:
        """An input opened elsewhere (or a data file): refused as an output; hashed for the
        manifests unless hashed=False. The first source is the one the manifests name."""
        if self._targets is not None:
            raise SurgeryError(f"internal: input {str(path)!r} added after the outputs were checked")
        self._sources.append((Path(path), hashed))

    def load(self, artifact: ModelArtifact, *, message: str | None = "loading the original model"):
        """The opened input as a live Keras model (safe mode unless --unsafe)."""
        from surgery.io.loading import load_model

        if message:
            self.step(message)
        return load_model(artifact, unsafe=self.unsafe, custom_objects=self.custom_objects)

    # -- outputs -----------------------------------------------------------------------

    def check(self, *targets: Target, hashes: Hashes | None = None) -> None:
        """Refuse, before any work, an output that overlaps an input, exists (without --force)
        or that --force may not replace; create missing output directories. Then start hashing
        the sources in the background (hashes: how, default writers.sha256_of on threads)."""
        if not self._active:
            raise SurgeryError("internal: a WriteJob runs in a `with` block")
        if self._targets is not None:
            raise SurgeryError("internal: outputs checked twice")
        sources = [path for path, _hashed in self._sources] or None
        for target in targets:
            missing = _missing_directories(target.path.parent)
            saving.check_output(sources, target.path, self.force, directory=target.directory)
            self._created += [d for d in missing if d not in self._created]
        self._targets = list(targets)
        hashed = [path for path, wanted in self._sources if wanted]
        started = (hashes or in_background(writers.sha256_of))(hashed) if hashed else {}
        self._hashes = {Path(path): future for path, future in started.items()}

    def sha256(self, path=None) -> str | None:
        """A source's sha256 (default: the first source's), waiting for its hash to finish."""
        if path is None:
            path = self._sources[0][0] if self._sources else None
        future = self._hashes.get(Path(path)) if path is not None else None
        return future.result() if future is not None else None

    def write(self, write: Callable[[Temps], None], *, verify: Callable[[Temps], object] | None = None,
              verify_step: str = "verifying", manifests: Callable[[], dict]) -> Written:
        """Stage every target, `write(temps)`, `verify(temps)` (the report; raising, or a report
        that is not ok, stops here), then commit {target: manifest} from `manifests()`: a
        ModelManifest, or a complete manifest dict for an artifact that is not a model."""
        if self._targets is None:
            raise SurgeryError("internal: outputs are checked (WriteJob.check) before anything is written")
        if self._written:
            raise SurgeryError("internal: a WriteJob writes once")
        self._written = True
        report = None
        with saving.staged_outputs(force=self.force) as staged:
            temps = {t.path: staged.temp(t.path, directory=t.directory, suffix=t.suffix) for t in self._targets}
            write(temps)
            if verify is not None:
                self.step(verify_step)
                report = verify(temps)
                raise_if_failed(report)
            documents = {Path(target): fields if isinstance(fields, dict) else self._manifest(target, fields, report)
                         for target, fields in manifests().items()}
            placed = staged.commit(documents)
        return Written(tuple(t.path for t in self._targets), placed, report)

    def _manifest(self, target, fields: ModelManifest, report) -> dict:
        source = self._sources[0][0] if self._sources else None
        return writers.build_manifest(
            artifact=target, fmt=fields.fmt, family=fields.family, operation=self.operation, plan=fields.plan,
            source=source, source_sha256=self.sha256(source), model_inputs=fields.model_inputs,
            model_outputs=fields.model_outputs, extra={**fields.extra, "verification": None if report is None else report.as_dict()})


def _missing_directories(directory: Path) -> list[Path]:
    """The directories `mkdir -p directory` would create, outermost first."""
    missing = []
    directory = Path(os.path.abspath(directory))
    while not os.path.lexists(directory) and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    return missing[::-1]


def _remove_empty(directories: Iterable[Path]) -> None:
    """Take back the output directories a failed job created: innermost first, each only while
    it is still empty (another run may have put something there meanwhile)."""
    for directory in sorted(directories, key=lambda d: len(d.parts), reverse=True):
        try:
            directory.rmdir()
        except OSError:
            continue
