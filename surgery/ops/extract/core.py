"""extract-states: run a saved model over a whole dataset and keep its recurrent states.

Final states come from the exposed model (expose.rebuild_with_states) cut down to its state
outputs; `trajectory=True` steps each selected site's own cell (extract.trajectory). Results
stream into a staged output (ops.pipeline.WriteJob): an error or an interruption leaves no
partial file. A sample of every run is checked against the NumPy oracle.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from surgery.io import families, saving
from surgery.io import writers
from surgery.check import tolerance
from surgery.check.report import CheckReport, raise_if_failed
from surgery.errors import UsageError
from surgery.ops import pipeline
from surgery.ops.extract.readers import DataSource, specs_for
from surgery.ops.extract.store import Column, ColumnStore

FORMATS = ("npz", "parquet")
SAMPLE = 8          # sequences checked against the oracle from the first and the last batch


@dataclass
class Extractor:
    """What a run executes: `runner` maps model inputs to the arrays named by `keys`."""

    model: object          # the (possibly translated) source model: graph probes for the oracle
    runner: object         # the Keras model that runs
    keys: list[str]
    sites: list            # selected sites (surgery.graph.sites.Site)
    trajectory: bool
    family: object

    def run(self, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._compiled()(*arrays)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return {key: np.asarray(value) for key, value in zip(self.keys, outputs)}

    def _compiled(self):
        # One traced function, batch and time left free: the last, short batch does not retrace.
        if getattr(self, "_fn", None) is None:
            from surgery.io.quiet import import_tensorflow

            tf = import_tensorflow()
            runner = self.runner
            signature = [tf.TensorSpec((None, *t.shape[1:]), t.dtype) for t in runner.inputs]

            @tf.function(input_signature=signature, reduce_retracing=True)
            def fn(*xs):
                return runner(list(xs), training=False)

            self._fn = fn
        return self._fn


def build_extractor(model, *, layers=None, trajectory: bool = False, custom_objects=None, source_path=None,
                    unsafe: bool = False) -> Extractor:
    """The extraction model for a live model (either family; never modified). source_path: the
    file it was loaded from, translated from the file when a Keras 2 model needs Keras 3."""
    from surgery.ops.expose import rebuild_with_states
    from surgery.graph.rewire import rewire_states
    from surgery.graph.sites import find_sites

    family = families.of_model(model)
    if trajectory and family.name == "keras2":
        from surgery.ops import translate

        # The trajectory layer is Keras 3: a Keras 2 model runs as its verified translation.
        if source_path is not None:
            from surgery.io.formats import read_artifact

            model, _notes = translate.translate(read_artifact(source_path), custom_objects=custom_objects,
                                                unsafe=unsafe)
        else:
            model, _notes = translate.translate_live(model, custom_objects=custom_objects)
        family = families.of_model(model)
    config = family.serialize(model)
    _config, plan = rewire_states(config, family.name, layers=layers, outputs=True)
    if not plan.outputs:
        raise UsageError("the model has no recurrent state to extract")
    chosen = list(dict.fromkeys(s.site for s in plan.outputs))
    by_name = {site.name: site for site in find_sites(config, family.name)}
    sites = [by_name[name] for name in chosen]
    if trajectory:
        from surgery.ops.extract.trajectory import trajectory_model

        runner, keys = trajectory_model(model, sites, family)
    else:
        exposed, exposed_plan = rebuild_with_states(model, layers=layers, outputs=True,
                                                    custom_objects=custom_objects)
        # Only the state outputs: layers past the last site are not run.
        runner = family.keras.Model(exposed.inputs, exposed.outputs[exposed_plan.original_outputs:])
        keys = [s.name for s in exposed_plan.outputs]
    return Extractor(model, runner, keys, sites, trajectory, family)


# ------------------------------------------------------------------------------------------
# The oracle check of a sample
# ------------------------------------------------------------------------------------------

def check_sample(extractor: Extractor, inputs: list[np.ndarray], results: dict[str, np.ndarray]
                 ) -> dict[str, tolerance.Comparison]:
    """Every extracted state of the sample against the NumPy oracle on the site's own inputs.
    Trajectories are checked at the first, middle and last step: the oracle's final state of
    the prefix (suffix, for a backward layer) ending there."""
    from surgery.check.verify import site_call_values, oracle_states, sequence_steps

    checks = {}
    for site in extractor.sites:
        layer, sequence, mask, initial = site_call_values(extractor.family, extractor.model, inputs, site)
        steps = sequence_steps(sequence)
        roles = [s.role for s in site.states]
        if not extractor.trajectory:
            expected = oracle_states(extractor.family, layer, sequence, mask, initial)
            for state, ref in zip(site.states, expected):
                if state.output_name in results:
                    bound = tolerance.bound_for(state.dtype, steps=steps)
                    checks[state.output_name] = tolerance.compare(results[state.output_name], ref, bound)
            continue
        for t in sorted({0, steps // 2, steps - 1}):
            prefix = oracle_states(extractor.family, layer, sequence[:, :t + 1],
                                   None if mask is None else mask[:, :t + 1], initial)
            suffix = oracle_states(extractor.family, layer, sequence[:, t:],
                                   None if mask is None else mask[:, t:], initial)
            for state, role, ref_fw, ref_bw in zip(site.states, roles, prefix, suffix):
                backward = role.startswith("bw_") or site.go_backwards
                bound = tolerance.bound_for(state.dtype, steps=steps)
                name = f"{state.output_name}[t={t}]"
                checks[name] = tolerance.compare(results[state.output_name][:, t], ref_bw if backward else ref_fw,
                                                 bound)
    return checks


def sample_report(checks: dict, sequences: int) -> CheckReport:
    """The sample check (names `<state>@first|last`) as the one report type."""
    return CheckReport(what=f"{sequences} sampled sequence(s) of the extracted states", checks=checks,
                       batch=sequences, checks_label="state value(s) vs NumPy oracle")


# ------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------

@dataclass
class ExtractResult:
    output: Path | None
    manifest: Path | None
    sequences: int
    columns: list[dict]
    check: str
    checks: dict = field(default_factory=dict)
    arrays: dict | None = None        # in memory, when no output path was given
    seconds: float = 0.0
    runner: str = "local"

    @property
    def sequences_per_second(self) -> float:
        return self.sequences / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {"ok": True, "output": str(self.output) if self.output else None,
                "manifest": str(self.manifest) if self.manifest else None, "sequences": self.sequences,
                "arrays": self.columns, "check": self.check,
                "checks": {k: c.as_dict() for k, c in self.checks.items()},
                "seconds": round(self.seconds, 3), "sequences_per_second": round(self.sequences_per_second, 1),
                "runner": self.runner}

    def lines(self) -> list[str]:
        head = f"wrote {self.output} and {self.manifest.name}" if self.output else "extracted in memory"
        keys = ", ".join(f"{c['key']} {tuple(c['shape'])}" for c in self.columns)
        return [head, f"{self.sequences} sequence(s) in {self.seconds:.2f} s "
                      f"({self.sequences_per_second:.0f} sequences/s, runner {self.runner}): {keys}", self.check]


def output_format(output, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise UsageError(f"--format {fmt!r}: extract-states writes {' or '.join(FORMATS)}")
        return fmt
    return "parquet" if output is not None and Path(output).suffix.lower() == ".parquet" else "npz"


def resolve_model(model_or_path, *, unsafe=False, custom_objects=None):
    """(live model, path or None, sha256): a path is loaded through the safety scan; a live
    model is used as is (never modified) and hashed by its config and weights."""
    if isinstance(model_or_path, (str, os.PathLike)):
        from surgery.io.loading import load_model

        hasher = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        digest = hasher.submit(writers.sha256_of, model_or_path)
        hasher.shutdown(wait=False)
        model = load_model(model_or_path, unsafe=unsafe, custom_objects=custom_objects)
        return model, str(model_or_path), digest
    family = families.of_model(model_or_path)
    digest = hashlib.sha256(json.dumps(family.serialize(model_or_path), sort_keys=True, default=str).encode())
    for weight in model_or_path.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    done = concurrent.futures.Future()
    done.set_result(digest.hexdigest())
    return model_or_path, None, done


def extract_states(model_or_path, data, output=None, *, layers=None, trajectory: bool = False,
                   batch_size: int = 256, fmt: str | None = None, force: bool = False, unsafe: bool = False,
                   custom_objects=None, progress=None, runner: str = "local", beam_options=()) -> ExtractResult:
    """Run a model (a path, or a live Keras 2/3 model: never modified) over `data` and keep the
    final states of its recurrent sites (`trajectory=True`: every state at every step, and the
    mask). data: a .npy/.npz/.tfrecord/.parquet path, a folder or glob of them, or arrays (one,
    a list, or a dict by input name: never modified). output: .npz or .parquet path (written
    atomically with a manifest beside it), or None to get the arrays back in memory.
    progress: callable(done, total or None, seconds). runner "beam": the same extraction as an
    Apache Beam pipeline (extract.beam), with `beam_options` as its pipeline options."""
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: must be at least 1")
    fmt = output_format(output, fmt)
    if runner not in ("local", "beam"):
        raise UsageError(f"--runner {runner!r}: local or beam")
    if output is None:
        if runner == "beam":
            raise UsageError("--runner beam needs an output path")
        extractor, source, _model_path, _digest = _prepare(model_or_path, data, layers=layers, trajectory=trajectory,
                                                           unsafe=unsafe, custom_objects=custom_objects)
        return _run_in_memory(extractor, source, batch_size, progress)
    output = Path(output)
    with pipeline.WriteJob("extract-states", force=force, unsafe=unsafe, custom_objects=custom_objects) as job:
        # Every input is refused as the output; the model's sha256 comes from resolve_model (a
        # live model has one too), the data files are not hashed.
        sources = [model_or_path] if isinstance(model_or_path, (str, os.PathLike)) else []
        if isinstance(data, (str, os.PathLike)):
            from surgery.ops.extract.readers import resolve_files

            sources += resolve_files(data)
        for path in sources:
            job.add_source(path, hashed=False)
        job.check(pipeline.Target(output))
        if runner == "beam":
            from surgery.ops.extract.beam import run_pipeline

            return run_pipeline(job, model_or_path, data, output, layers=layers, trajectory=trajectory,
                                batch_size=batch_size, fmt=fmt, beam_options=list(beam_options))
        extractor, source, model_path, digest = _prepare(model_or_path, data, layers=layers, trajectory=trajectory,
                                                         unsafe=unsafe, custom_objects=custom_objects)
        run = None

        def write(temps):
            nonlocal run
            with saving.scratch_dir(output) as scratch:
                run = _stream(extractor, source, batch_size, progress, lambda columns: ColumnStore(scratch, columns))
                try:
                    run.store.finish(temps[output], fmt)
                finally:
                    run.store.close()

        def manifests():  # a states file, not a model: the manifest is its own
            return {output: build_manifest(output, fmt, model_path, digest.result(), extractor, source, run,
                                           layers=layers, runner="local")}

        done = job.write(write, manifests=manifests)
    return ExtractResult(output, done.manifests[output], run.rows, run.column_dicts(), run.check, run.checks,
                         seconds=run.seconds)


def _prepare(model_or_path, data, *, layers, trajectory, unsafe, custom_objects):
    """(extractor, data source, model path or None, sha256 future) of a local run."""
    model, model_path, digest = resolve_model(model_or_path, unsafe=unsafe, custom_objects=custom_objects)
    extractor = build_extractor(model, layers=layers, trajectory=trajectory, custom_objects=custom_objects,
                                source_path=model_path, unsafe=unsafe)
    return extractor, DataSource(data, specs_for(extractor.model)), model_path, digest


@dataclass
class ExtractRun:
    store: object = None
    rows: int = 0
    per_file: list = field(default_factory=list)
    report: CheckReport | None = None   # the sample check, once made
    seconds: float = 0.0
    columns: list = field(default_factory=list)

    @property
    def check(self) -> str:
        return self.report.summary() if self.report is not None else ""

    @property
    def checks(self) -> dict:
        return self.report.checks if self.report is not None else {}

    def column_dicts(self) -> list[dict]:
        return [c.as_dict(self.rows) for c in self.columns]


def columns_of(results: dict[str, np.ndarray]) -> list[Column]:
    return [Column(key, tuple(value.shape[1:]), value.dtype) for key, value in results.items()]


def _stream(extractor: Extractor, source: DataSource, batch_size: int, progress, make_store) -> ExtractRun:
    run = ExtractRun()
    total = source.known_total()
    started = time.perf_counter()
    first = last = None
    for file_index, chunk in _prefetch(_file_chunks(source, batch_size)):
        results = extractor.run(chunk)
        if run.store is None:
            run.columns = columns_of(results)
            run.store = make_store(run.columns)
        for column in run.columns:
            got = results[column.key]
            if got.shape[1:] != column.shape:
                raise UsageError(f"--data file {source.files[file_index].path.name!r}: {column.key} has shape "
                                 f"{got.shape[1:]} per sequence here, {column.shape} before (sequences of one "
                                 "run must share their length for --trajectory)")
        run.store.append(results)
        count = len(chunk[0])
        while len(run.per_file) <= file_index:
            run.per_file.append(0)
        run.per_file[file_index] += count
        run.rows += count
        sample = ([a[:SAMPLE] for a in chunk], {k: v[:SAMPLE] for k, v in results.items()})
        first = first or sample
        last = sample
        if progress is not None:
            progress(run.rows, total, time.perf_counter() - started)
    if run.rows == 0:
        raise UsageError(f"--data {source.description!r} holds no sequences")
    run.seconds = time.perf_counter() - started
    checks = {}
    for tag, (inputs, results) in (("first", first), ("last", last)) if last is not first else (("first", first),):
        for name, comparison in check_sample(extractor, inputs, results).items():
            checks[f"{name}@{tag}"] = comparison
    sampled = len(first[0][0]) + (len(last[0][0]) if last is not first else 0)
    run.report = raise_if_failed(sample_report(checks, sampled))
    return run


class _Memory:
    def __init__(self, columns):
        self.columns, self.parts = columns, {c.key: [] for c in columns}

    def append(self, results):
        for key, parts in self.parts.items():
            parts.append(results[key])


def _run_in_memory(extractor, source, batch_size, progress) -> ExtractResult:
    run = _stream(extractor, source, batch_size, progress, _Memory)
    arrays = {key: np.concatenate(parts) for key, parts in run.store.parts.items()}
    return ExtractResult(None, None, run.rows, run.column_dicts(), run.check, run.checks, arrays=arrays,
                         seconds=run.seconds)


def _file_chunks(source: DataSource, rows: int):
    for index, data_file in enumerate(source.files):
        for chunk in data_file.chunks(rows):
            yield index, chunk


def _prefetch(iterator, depth: int = 2):
    """Read the next batches on a thread while the model runs (numpy and file reads release the GIL)."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def produce():
        try:
            for item in iterator:
                if stop.is_set():
                    return
                items.put(item)
            items.put(end)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            items.put(error)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def build_manifest(output: Path, fmt: str, model_path, model_sha256: str, extractor: Extractor,
                   source: DataSource, run, *, layers, runner: str) -> dict:
    from surgery import __version__

    files = source.paths
    return {
        "lstm_surgery": __version__,
        "operation": "extract-states",
        "artifact": output.name,
        "format": fmt,
        "model": {"path": model_path, "sha256": model_sha256, "family": extractor.family.name},
        "data": {"source": source.description,
                 "files": [{"path": p, "sequences": n} for p, n in zip(files, run.per_file)]},
        "sequences": run.rows,
        "trajectory": extractor.trajectory,
        "layers": list(layers or []),
        "sites": [s.name for s in extractor.sites],
        "arrays": run.column_dicts(),
        "check": {**run.report.as_dict(), "states": {k: c.as_dict() for k, c in run.checks.items()}},
        "runner": runner,
    }
