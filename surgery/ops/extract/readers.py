"""Data readers for extract-states: .npy, .npz, a folder or glob of them, TFRecord, Parquet.

Every reader yields chunks of at most `rows` sequences, so peak memory depends on the
batch size and never on the dataset's length: .npy is memory-mapped, .npz members are
decompressed as streams, TFRecord and Parquet are read record batch by record batch.
Every chunk is checked against the model's inputs (rank, shape, dtype, NaN, id range) and
a bad one is a one-line UsageError naming the file and the array.
"""

from __future__ import annotations

import abc
import glob
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from surgery.errors import UsageError

SUFFIXES = (".npy", ".npz", ".tfrecord", ".tfrecords", ".parquet")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputSpec:
    """One model input: its config name, shape with batch (None for free dims), dtype, id bound."""

    name: str
    shape: tuple
    dtype: np.dtype
    id_limit: int | None = None


def specs_for(model) -> list[InputSpec]:
    from surgery.check.verify import tensor_np_dtype, input_id_limits, input_names

    return [InputSpec(name, tuple(t.shape), tensor_np_dtype(t), limit)
            for name, t, limit in zip(input_names(model), model.inputs, input_id_limits(model))]


def checked(label: str, key: str, array: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The chunk as the input's dtype (a new array: the caller's is never touched), or UsageError."""
    from surgery.check.verify import checked_array

    class _Tensor:  # what checked_array reads off a model input
        shape = spec.shape
        dtype = spec.dtype

    return checked_array(label, key, np.asarray(array), _Tensor, spec.id_limit)


def resolve_files(data) -> list[Path]:
    """The data files a path names: one file, a folder's data files, or a glob's matches (sorted)."""
    text = os.fspath(data)
    if _GLOB_CHARS & set(text):
        files = sorted(Path(p) for p in glob.glob(text) if Path(p).suffix.lower() in SUFFIXES)
        if not files:
            raise UsageError(f"--data glob {text!r} matches no .npy/.npz/.tfrecord/.parquet file")
        return files
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise UsageError(f"--data folder {text!r} holds no .npy/.npz/.tfrecord/.parquet file")
        return files
    if not path.is_file():
        raise UsageError(f"--data file {text!r} not found")
    if path.suffix.lower() not in SUFFIXES:
        raise UsageError(f"--data file {text!r} is not .npy, .npz, .tfrecord or .parquet")
    return [path]


def _label(path: Path) -> str:
    return f"--data file {str(path)!r}"


def _match(label: str, available: list[str], specs: list[InputSpec]) -> list[str]:
    """Which stored array feeds each model input: by input name, else (same count) in order."""
    names = [s.name for s in specs]
    if all(n in available for n in names):
        return names
    if len(available) == len(names):
        return list(available)
    raise UsageError(f"{label} holds arrays {sorted(available)}; the model's inputs are {names}")


class DataFile(abc.ABC):
    """One data file: its sequence count (None where only a scan would tell) and its chunks.
    Each format (npy, npz, TFRecord, Parquet) is a subclass that supplies `chunks`."""

    def __init__(self, path: Path, specs: list[InputSpec]):
        self.path, self.specs, self.label = path, specs, _label(path)

    def count(self) -> int | None:
        return None

    @abc.abstractmethod
    def chunks(self, rows: int, start: int = 0, stop: int | None = None) -> Iterator[list[np.ndarray]]:
        """Lists of arrays (one per model input) of at most `rows` sequences, rows start:stop."""

    def _checked(self, arrays: dict, keys: list[str]) -> list[np.ndarray]:
        out = [checked(self.label, key, arrays[key], spec) for key, spec in zip(keys, self.specs)]
        if len({a.shape[0] for a in out}) > 1:
            raise UsageError(f"{self.label}: arrays have different lengths {sorted({a.shape[0] for a in out})}")
        return out


class NpyFile(DataFile):
    def _open(self):
        try:
            return np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise UsageError(f"{self.label} is not a .npy array file ({_reason(error)})") from None

    def count(self) -> int:
        array = self._open()
        return int(array.shape[0]) if array.ndim else 0

    def chunks(self, rows, start=0, stop=None):
        if len(self.specs) != 1:
            raise UsageError(f"{self.label} holds one array; the model has {len(self.specs)} inputs "
                             f"{[s.name for s in self.specs]} (use .npz, TFRecord Examples or Parquet)")
        array = self._open()
        if array.ndim == 0:
            checked(self.label, "array", array, self.specs[0])  # raises: wrong rank
        stop = array.shape[0] if stop is None else min(stop, array.shape[0])
        for begin in range(start, stop, rows):
            yield self._checked({"array": array[begin:min(begin + rows, stop)]}, ["array"])


class _NpyStream:
    """Rows of one .npy member of an .npz, read from its (decompressing) stream."""

    def __init__(self, handle, label: str, key: str):
        self.handle, self.where = handle, f"{label}, array {key!r}"
        try:
            version = np.lib.format.read_magic(handle)
            header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            self.shape, fortran, self.dtype = header(handle)
        except ValueError as error:
            raise UsageError(f"{self.where} is not a readable array ({_reason(error)})") from None
        if self.dtype.hasobject:
            raise UsageError(f"{self.where} is not numeric (dtype {self.dtype})")
        if fortran and len(self.shape) > 1:
            raise UsageError(f"{self.where} is stored in Fortran order; save it C-ordered to read it in chunks")
        if not self.shape:
            raise UsageError(f"{self.where} is a scalar; sequences need a batch axis")
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def read(self, count: int) -> np.ndarray:
        want = count * self.row_bytes
        data = self.handle.read(want)
        if len(data) != want:
            raise UsageError(f"{self.where} is truncated")
        return np.frombuffer(data, dtype=self.dtype).reshape((count, *self.shape[1:]))

    def skip(self, count: int) -> None:
        left = count * self.row_bytes
        while left:  # in pieces: a skip must not hold the skipped rows
            got = len(self.handle.read(min(left, 1 << 24)))
            if not got:
                raise UsageError(f"{self.where} is truncated")
            left -= got


class NpzFile(DataFile):
    def _zip(self):
        try:
            return zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile) as error:
            raise UsageError(f"{self.label} is not a .npz array file ({_reason(error)})") from None

    def _members(self, archive) -> dict[str, str]:
        return {name[:-4]: name for name in archive.namelist() if name.endswith(".npy")}

    def count(self) -> int:
        with self._zip() as archive:
            members = self._members(archive)
            keys = _match(self.label, list(members), self.specs)
            with archive.open(members[keys[0]]) as handle:
                return int(_NpyStream(handle, self.label, keys[0]).shape[0])

    def chunks(self, rows, start=0, stop=None):
        with self._zip() as archive:
            members = self._members(archive)
            keys = _match(self.label, list(members), self.specs)
            handles = [archive.open(members[k]) for k in keys]
            try:
                streams = [_NpyStream(h, self.label, k) for h, k in zip(handles, keys)]
                lengths = {s.shape[0] for s in streams}
                if len(lengths) > 1:
                    raise UsageError(f"{self.label}: arrays have different lengths {sorted(lengths)}")
                total = lengths.pop()
                stop = total if stop is None else min(stop, total)
                for stream in streams:
                    stream.skip(start)
                for begin in range(start, stop, rows):
                    count = min(rows, stop - begin)
                    yield self._checked({k: s.read(count) for k, s in zip(keys, streams)}, keys)
            except (OSError, zipfile.BadZipFile, EOFError) as error:
                raise UsageError(f"{self.label} is corrupt ({_reason(error)})") from None
            finally:
                for handle in handles:
                    handle.close()


class TFRecordFile(DataFile):
    """Records of serialized tensors: a TensorProto (tf.io.serialize_tensor) per sequence for a
    one-input model, or a tf.train.Example whose bytes features, named by input, hold them."""

    def _records(self, start=0, stop=None):
        from surgery.io.quiet import import_tensorflow

        tf = import_tensorflow()
        dataset = tf.data.TFRecordDataset(str(self.path)).skip(start)
        if stop is not None:
            dataset = dataset.take(stop - start)
        try:
            yield from dataset.as_numpy_iterator()
        except (tf.errors.DataLossError, tf.errors.OpError) as error:
            raise UsageError(f"{self.label} is not a readable TFRecord file ({_reason(error.message)})") from None

    def count(self) -> int:
        return sum(1 for _ in self._records())

    def _decode(self, record: bytes) -> dict:
        from tensorflow.core.example import example_pb2
        from tensorflow.core.framework import tensor_pb2

        from surgery.io.quiet import import_tensorflow

        tf = import_tensorflow()
        try:
            example = example_pb2.Example.FromString(record)
            features = dict(example.features.feature)
        except Exception:  # noqa: BLE001 - not an Example: a bare tensor
            features = {}
        try:
            if features and all(f.HasField("bytes_list") for f in features.values()):
                return {name: tf.make_ndarray(tensor_pb2.TensorProto.FromString(f.bytes_list.value[0]))
                        for name, f in features.items()}
            return {"tensor": tf.make_ndarray(tensor_pb2.TensorProto.FromString(record))}
        except Exception as error:  # noqa: BLE001 - protobuf/TF raise several kinds for garbage
            raise UsageError(f"{self.label} holds a record that is not a serialized tensor ({_reason(error)})") from None

    def chunks(self, rows, start=0, stop=None):
        pending: list[dict] = []
        for record in self._records(start, stop):
            pending.append(self._decode(record))
            if len(pending) == rows:
                yield self._stack(pending)
                pending = []
        if pending:
            yield self._stack(pending)

    def _stack(self, records: list[dict]) -> list[np.ndarray]:
        keys = _match(self.label, list(records[0]), self.specs)
        stacked = {}
        for key in keys:
            shapes = {np.shape(r.get(key)) for r in records}
            if len(shapes) > 1 or any(key not in r for r in records):
                raise UsageError(f"{self.label}, array {key!r}: records have different shapes {sorted(shapes)}")
            stacked[key] = np.stack([r[key] for r in records])
        return self._checked(stacked, keys)


class ParquetFile(DataFile):
    """Columns named by model input, each row one sequence as (nested) lists."""

    def _file(self):
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self.path)
        except Exception as error:  # noqa: BLE001 - pyarrow raises ArrowInvalid/OSError for non-Parquet
            raise UsageError(f"{self.label} is not a Parquet file ({_reason(error)})") from None

    def count(self) -> int:
        return int(self._file().metadata.num_rows)

    def chunks(self, rows, start=0, stop=None):
        handle = self._file()
        keys = _match(self.label, handle.schema_arrow.names, self.specs)
        seen = 0
        stop = handle.metadata.num_rows if stop is None else stop
        for batch in handle.iter_batches(batch_size=rows, columns=keys):
            begin, end = seen, seen + batch.num_rows
            seen = end
            if end <= start:
                continue
            if begin >= stop:
                break
            batch = batch.slice(max(start - begin, 0), min(end, stop) - max(begin, start))
            arrays = {key: column_to_numpy(batch.column(key), f"{self.label}, array {key!r}")
                      for key in keys}
            yield self._checked(arrays, keys)


def column_to_numpy(column, where: str) -> np.ndarray:
    """A (nested) list column as one array (rows, *dims); ragged rows are an error."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = len(column)
    if column.null_count:
        raise UsageError(f"{where} holds nulls")
    dims, values = [], column
    while pa.types.is_list(values.type) or pa.types.is_large_list(values.type) \
            or pa.types.is_fixed_size_list(values.type):
        lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            raise UsageError(f"{where} has rows of different lengths {sorted(set(lengths.tolist()))[:4]}")
        dims.append(int(lengths[0]) if len(lengths) else 0)
        values = values.flatten()
    try:
        flat = values.to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise UsageError(f"{where} is not numeric ({_reason(error)})") from None
    if flat.dtype == object:
        raise UsageError(f"{where} is not numeric (type {values.type})")
    return flat.reshape((rows, *dims))


READERS = {".npy": NpyFile, ".npz": NpzFile, ".tfrecord": TFRecordFile, ".tfrecords": TFRecordFile,
           ".parquet": ParquetFile}


class ArraysSource(DataFile):
    """Arrays already in memory (the Python API): sliced, never modified."""

    def __init__(self, arrays, specs: list[InputSpec]):
        super().__init__(Path("<arrays>"), specs)
        self.label = "the given arrays"
        if isinstance(arrays, dict):
            self.keys = _match(self.label, list(arrays), specs)
            self.arrays = dict(arrays)
        else:
            listed = list(arrays) if isinstance(arrays, (list, tuple)) else [arrays]
            if len(listed) != len(specs):
                raise UsageError(f"{len(listed)} array(s) given; the model has {len(specs)} input(s) "
                                 f"{[s.name for s in specs]}")
            self.keys = [f"array {i}" if len(listed) > 1 else "array" for i in range(len(listed))]
            self.arrays = dict(zip(self.keys, listed))

    def count(self) -> int:
        return int(np.shape(self.arrays[self.keys[0]])[0])

    def chunks(self, rows, start=0, stop=None):
        stop = self.count() if stop is None else stop
        for begin in range(start, stop, rows):
            end = min(begin + rows, stop)
            yield self._checked({k: np.asarray(self.arrays[k])[begin:end] for k in self.keys}, self.keys)


class DataSource:
    """The data of one run: files in order (or in-memory arrays), read in chunks."""

    def __init__(self, data, specs: list[InputSpec]):
        if isinstance(data, (str, os.PathLike)):
            self.files = [READERS[p.suffix.lower()](p, specs) for p in resolve_files(data)]
            self.description = os.fspath(data)
        else:
            self.files = [ArraysSource(data, specs)]
            self.description = "the given arrays"
        self.specs = specs

    @property
    def paths(self) -> list[str]:
        return [str(f.path) for f in self.files if not isinstance(f, ArraysSource)]

    def counts(self) -> list[int]:
        """Sequences per file (a TFRecord file is scanned once for it)."""
        return [f.count() for f in self.files]

    def known_total(self) -> int | None:
        """The total without scanning record files: for a progress bar."""
        if any(isinstance(f, TFRecordFile) for f in self.files):
            return None
        return sum(f.count() for f in self.files)

    def chunks(self, rows: int) -> Iterator[list[np.ndarray]]:
        for data_file in self.files:
            yield from data_file.chunks(rows)


def _reason(error) -> str:
    return " ".join(str(error).split())[:160]
