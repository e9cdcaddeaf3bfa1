"""Results of unknown final length, streamed to raw column files, then assembled once.

An .npz member's header holds its final shape, so rows cannot go straight into it: each
column's rows go to a raw file in a scratch folder beside the output (appended in order, or
placed at their row by `write_at` when a distributed run delivers them out of order), and
`finish` writes the .npz or Parquet into the staged temporary in bounded pieces. Peak
memory stays at one piece whatever the row count.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PIECE_BYTES = 1 << 24   # what finish() holds of one column at a time


@dataclass(frozen=True)
class Column:
    key: str          # `<site>_<role>` (or `<site>_mask` beside a trajectory)
    shape: tuple      # per row
    dtype: np.dtype

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def as_dict(self, rows: int) -> dict:
        return {"key": self.key, "shape": [rows, *self.shape], "dtype": self.dtype.name}


class ColumnStore:
    def __init__(self, scratch: Path, columns: list[Column]):
        self.columns = columns
        self.rows = 0
        self._files = {c.key: open(scratch / f"{i}.raw", "w+b") for i, c in enumerate(columns)}

    def append(self, arrays: dict[str, np.ndarray]) -> None:
        counts = {len(arrays[c.key]) for c in self.columns}
        for column in self.columns:
            self._files[column.key].write(np.ascontiguousarray(arrays[column.key], dtype=column.dtype).tobytes())
        self.rows += counts.pop() if counts else 0

    def write_at(self, row: int, arrays: dict[str, np.ndarray]) -> None:
        """Rows delivered out of order (a distributed run): placed at their index."""
        count = 0
        for column in self.columns:
            handle = self._files[column.key]
            handle.seek(row * column.row_bytes)
            value = np.ascontiguousarray(arrays[column.key], dtype=column.dtype)
            handle.write(value.tobytes())
            count = len(value)
        self.rows = max(self.rows, row + count)

    def read_rows(self, start: int, count: int) -> dict[str, np.ndarray]:
        """Rows already written (the sample a distributed run is checked on)."""
        out = {}
        for column in self.columns:
            handle = self._files[column.key]
            handle.flush()
            handle.seek(start * column.row_bytes)
            data = handle.read(count * column.row_bytes)
            out[column.key] = np.frombuffer(data, dtype=column.dtype).reshape((-1, *column.shape))
        return out

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()

    def _pieces(self, column: Column):
        """(rows, array) pieces of one column in order, each at most PIECE_BYTES."""
        handle = self._files[column.key]
        handle.flush()
        handle.seek(0)
        per_piece = max(1, PIECE_BYTES // max(column.row_bytes, 1))
        for begin in range(0, self.rows, per_piece):
            count = min(per_piece, self.rows - begin)
            data = handle.read(count * column.row_bytes)
            yield np.frombuffer(data, dtype=column.dtype).reshape((count, *column.shape))

    def finish(self, temp: Path, fmt: str) -> None:
        if fmt == "npz":
            self._write_npz(temp)
        else:
            self._write_parquet(temp)

    def _write_npz(self, temp: Path) -> None:
        # Stored, not deflated: what np.savez writes, and members stay memory-mappable-fast to read.
        with zipfile.ZipFile(temp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for column in self.columns:
                with archive.open(f"{column.key}.npy", "w", force_zip64=True) as member:
                    header = {"descr": np.lib.format.dtype_to_descr(column.dtype), "fortran_order": False,
                              "shape": (self.rows, *column.shape)}
                    np.lib.format.write_array_header_1_0(member, header)
                    for piece in self._pieces(column):
                        member.write(piece.tobytes())

    def _write_parquet(self, temp: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([pa.field(c.key, _arrow_type(c)) for c in self.columns],
                           metadata={b"lstm_surgery_shapes": json.dumps(
                               {c.key: list(c.shape) for c in self.columns}).encode()})
        # Row groups of equal row counts across columns: the widest column sets the count.
        per_group = max(1, PIECE_BYTES // max(max((c.row_bytes for c in self.columns), default=1), 1))
        with pq.ParquetWriter(temp, schema) as writer:
            readers = {c.key: self._row_reader(c) for c in self.columns}
            for begin in range(0, self.rows, per_group):
                count = min(per_group, self.rows - begin)
                arrays = [_arrow_array(readers[c.key](count), c) for c in self.columns]
                writer.write_table(pa.Table.from_arrays(arrays, schema=schema))

    def _row_reader(self, column: Column):
        handle = self._files[column.key]
        handle.flush()
        handle.seek(0)

        def read(count: int) -> np.ndarray:
            data = handle.read(count * column.row_bytes)
            return np.frombuffer(data, dtype=column.dtype).reshape((count, *column.shape))

        return read


def _arrow_type(column: Column):
    import pyarrow as pa

    kind = pa.from_numpy_dtype(column.dtype)
    for size in reversed(column.shape):
        kind = pa.list_(kind, size)
    return kind


def _arrow_array(values: np.ndarray, column: Column):
    import pyarrow as pa

    array = pa.array(values.reshape(-1), type=pa.from_numpy_dtype(column.dtype))
    for size in reversed(column.shape):
        array = pa.FixedSizeListArray.from_arrays(array, size)
    return array
