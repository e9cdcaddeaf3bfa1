"""extract-states as an Apache Beam pipeline (the optional `beam` extra).

`ExtractStates` is a PTransform from (key, example) to (key, {`<site>_<role>`: array}); an
example is a tuple of one sequence per model input. It runs `RunInference` with
`ExposedModelHandler`, which loads the model file through the safety scan and runs the same
extraction model as the local command (Beam's stock TensorFlow handler loads a .keras file
but not a Keras 3 SavedModel, and knows nothing of exposed states or trajectories).

`run_pipeline` is `extract-states --runner beam`: file ranges are read on the workers, results
are written as TFRecord shards of (index, arrays) into a scratch folder beside the output, and
the driver places every row at its index into the same staged .npz/Parquet writer the local
command uses, then checks a sample against the NumPy oracle.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np

try:
    import apache_beam as beam
    from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference
except ImportError:  # the optional extra: a clear message where it is used
    beam = None
    ModelHandler = object

from surgery.io import saving
from surgery.errors import UsageError

INDEX_KEY = "__index__"


def require_beam():
    if beam is None:
        raise UsageError("--runner beam needs Apache Beam: pip install 'lstm-surgery[beam]'")
    return beam


class ExposedModelHandler(ModelHandler):
    """Loads MODEL (safety scan first) and runs its state-extraction model on batches of examples."""

    def __init__(self, model_path, *, layers=None, trajectory=False, unsafe=False, batch_size=256):
        require_beam()
        super().__init__()
        self.model_path, self.layers, self.trajectory = os.fspath(model_path), layers, trajectory
        self.unsafe, self.batch_size = unsafe, batch_size

    def load_model(self):
        from surgery.ops.extract.core import build_extractor
        from surgery.io.loading import load_model

        model = load_model(self.model_path, unsafe=self.unsafe)
        return build_extractor(model, layers=self.layers, trajectory=self.trajectory, source_path=self.model_path,
                               unsafe=self.unsafe)

    def run_inference(self, batch, model, inference_args=None):
        arrays = [np.stack([example[i] for example in batch]) for i in range(len(batch[0]))]
        results = model.run(arrays)
        return [{key: value[row] for key, value in results.items()} for row in range(len(batch))]

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": self.batch_size}

    def share_model_across_processes(self) -> bool:
        return False


if beam is not None:
    class ExtractStates(beam.PTransform):
        """(key, example) -> (key, {state name: array}): the states of one sequence per element."""

        def __init__(self, model_path, *, layers=None, trajectory=False, unsafe=False, batch_size=256):
            super().__init__()
            self.handler = KeyedModelHandler(ExposedModelHandler(
                model_path, layers=layers, trajectory=trajectory, unsafe=unsafe, batch_size=batch_size))

        def expand(self, examples):
            return examples | "RunInference" >> RunInference(self.handler)
else:
    class ExtractStates:  # noqa: D101 - stands in so that the import works; using it says why not
        def __init__(self, *args, **kwargs):
            require_beam()


def read_range(item, rows: int):
    """(global index, example) for the sequences [start, stop) of one data file."""
    data_file, start, stop, offset = item
    index = offset
    for chunk in data_file.chunks(rows, start, stop):
        for row in range(len(chunk[0])):
            yield index, tuple(array[row] for array in chunk)
            index += 1


def encode(element) -> str:
    """One result as a text line (base64 of an .npz): text shards need no extra codec package."""
    index, states = element
    buffer = io.BytesIO()
    np.savez(buffer, **{INDEX_KEY: np.asarray(index, dtype=np.int64)}, **states)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode(line) -> tuple[int, dict]:
    with np.load(io.BytesIO(base64.b64decode(line)), allow_pickle=False) as loaded:
        arrays = {key: loaded[key] for key in loaded.files}
    return int(arrays.pop(INDEX_KEY)), arrays


def pipeline_options(beam_options):
    from apache_beam.options.pipeline_options import PipelineOptions

    options = list(beam_options)
    if not any(o.startswith("--runner") for o in options):
        options.append("--runner=DirectRunner")
    return PipelineOptions(options)


def run_pipeline(job, model_path, data, output: Path, *, layers, trajectory, batch_size, fmt, beam_options):
    """`extract-states --runner beam` through `job` (a pipeline.WriteJob, its output checked)."""
    require_beam()
    from surgery.ops.extract import core
    from surgery.ops.extract.readers import DataSource, specs_for
    from surgery.ops.extract.store import ColumnStore

    if not isinstance(model_path, (str, os.PathLike)):
        raise UsageError("--runner beam takes a model file path (workers load it), not a live model")
    unsafe = job.unsafe
    if job.custom_objects:
        raise UsageError("--runner beam does not take --custom-objects (workers load the file in safe mode)")
    model, model_path, digest = core.resolve_model(model_path, unsafe=unsafe)
    extractor = core.build_extractor(model, layers=layers, trajectory=trajectory, source_path=model_path,
                                     unsafe=unsafe)
    source = DataSource(data, specs_for(extractor.model))
    counts = source.counts()
    if not sum(counts):
        raise UsageError(f"--data {source.description!r} holds no sequences")
    ranges, offset = [], 0
    span = batch_size * 8
    for data_file, count in zip(source.files, counts):
        ranges += [(data_file, start, min(start + span, count), offset + start) for start in range(0, count, span)]
        offset += count
    options = pipeline_options(beam_options)
    run = core.ExtractRun(rows=offset, per_file=counts)
    import time

    started = time.perf_counter()
    runner = f"beam:{options.get_all_options()['runner']}"

    def write(temps):
        with saving.scratch_dir(output) as scratch:
            with beam.Pipeline(options=options) as pipeline:
                _ = (pipeline
                     | "Ranges" >> beam.Create(ranges)
                     | "Read" >> beam.FlatMap(read_range, batch_size)
                     | "Extract" >> ExtractStates(model_path, layers=layers, trajectory=trajectory, unsafe=unsafe,
                                                  batch_size=batch_size)
                     | "Encode" >> beam.Map(encode)
                     | "Write" >> beam.io.WriteToText(str(scratch / "shard"), file_name_suffix=".b64"))
            store = None
            try:
                for shard in sorted(scratch.glob("shard*.b64")):
                    for line in _lines(shard):
                        index, states = decode(line)
                        if store is None:
                            run.columns = core.columns_of({k: v[None] for k, v in states.items()})
                            store = ColumnStore(scratch, run.columns)
                        store.write_at(index, {k: v[None] for k, v in states.items()})
                if store is None or store.rows != offset:
                    raise UsageError(f"the Beam pipeline returned {0 if store is None else store.rows} of "
                                     f"{offset} sequences")
                run.seconds = time.perf_counter() - started
                _check(extractor, source, store, run)
                store.finish(temps[output], fmt)
            finally:
                if store is not None:
                    store.close()

    def manifests():
        return {output: core.build_manifest(output, fmt, model_path, digest.result(), extractor, source, run,
                                            layers=layers, runner=runner)}

    done = job.write(write, manifests=manifests)
    return core.ExtractResult(output, done.manifests[output], run.rows, run.column_dicts(), run.check, run.checks,
                              seconds=run.seconds, runner=runner)


def _lines(path: Path):
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield line.strip()


def _check(extractor, source, store, run) -> None:
    """The first sequences' states from the pipeline against the NumPy oracle, as locally."""
    from surgery.check.report import raise_if_failed
    from surgery.ops.extract import core

    first_file = source.files[0]
    inputs = next(first_file.chunks(core.SAMPLE))
    results = store.read_rows(0, len(inputs[0]))
    checks = {f"{k}@first": c for k, c in core.check_sample(extractor, inputs, results).items()}
    run.report = raise_if_failed(core.sample_report(checks, len(inputs[0])))
