"""Copying bytes at the kernel's pace, and reading a source once for everything that must be
known about its bytes.

- `copy_range`: bytes of one file into another by the kernel (copy_file_range: no trip through
  Python buffers; a reflink on file systems that share extents), starting the writeback of
  what was copied at once (sync_file_range) so that the final fsync has little left to wait for.
- `write_pieces`: a run of bytes stitched from ranges of other files (copied by the kernel)
  and buffers produced in Python (their CRC-32 taken on the way).
- `digest_file` / `start_digest`: one pass over a file for its SHA-256 and the CRC-32 of chosen
  byte ranges (zip members, the pieces a new member is stitched from): one thread reads a
  window and takes its CRC-32s while another hashes the window before (both release the GIL).
  (Not mapped: a file truncated under a mapping kills the process with SIGBUS.)
- `crc32_combine`: the CRC-32 of two runs of bytes joined, from theirs (zlib's algorithm), so a
  member stitched from copied pieces gets its CRC-32 without reading it again.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import errno
import hashlib
import os
import threading
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from surgery.errors import UnreadableModelError

# A window of the file read at a time (two buffers of it): large enough that the two
# hashing threads meet rarely, small enough that memory stays flat and a window is still in
# the CPU's cache when the second thread hashes it.
WINDOW_BYTES = 2 << 20
# Each copy_file_range call, after which the writeback of the copied range is started.
COPY_STEP_BYTES = 64 << 20
FALLBACK_CHUNK_BYTES = 1 << 20
# copy_file_range cannot serve this pair of files: copy through a buffer instead.
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF}


# ----------------------------------------------------------------------------------------
# CRC-32 arithmetic (zlib's crc32_combine, which Python's zlib does not expose)

_CRC_POLY = 0xEDB88320


def _multiply_mod_p(a: int, b: int) -> int:
    """a * b modulo the CRC-32 polynomial (bit-reflected, as zlib's multmodp)."""
    product, bit = 0, 1 << 31
    while True:
        if a & bit:
            product ^= b
            if a & (bit - 1) == 0:
                return product
        bit >>= 1
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1


def _powers_of_x() -> list[int]:
    """x^(2^n) modulo the polynomial, n = 0..31 (zlib's x2n_table)."""
    table, power = [], 1 << 30  # x^1
    for _ in range(32):
        table.append(power)
        power = _multiply_mod_p(power, power)
    return table


_X_TO_2N = _powers_of_x()


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """CRC-32 of A followed by B, from crc1 = CRC-32(A), crc2 = CRC-32(B) and len(B)."""
    shift, n, k = 1 << 31, length2, 3  # x^(8 * length2): bytes to bits is k = 3
    while n:
        if n & 1:
            shift = _multiply_mod_p(_X_TO_2N[k & 31], shift)
        n >>= 1
        k += 1
    return _multiply_mod_p(shift, crc1) ^ (crc2 & 0xFFFFFFFF)


def crc32_of_runs(runs: Iterable[tuple[int, int]]) -> int:
    """CRC-32 of consecutive runs of bytes, each given as (its CRC-32, its length)."""
    crc = 0
    for run_crc, length in runs:
        crc = crc32_combine(crc, run_crc, length)
    return crc


def _libdeflate_crc32():
    """libdeflate's CRC-32 (the same function as zlib's, several times faster where the CPU
    multiplies carry-less) when the system has the library, checked against zlib first."""
    for name in ("libdeflate.so.0", "libdeflate.0.dylib"):  # by soname: no ldconfig run
        try:
            function = ctypes.CDLL(name).libdeflate_crc32
            break
        except (OSError, AttributeError):
            continue
    else:
        return None
    function.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]
    function.restype = ctypes.c_uint32
    sample = bytes(range(256)) * 5
    probe = ctypes.create_string_buffer(sample, len(sample))
    if function(7, probe, len(sample)) != zlib.crc32(sample, 7):
        return None
    return function


_FAST_CRC32 = []
_FAST_CRC32_MIN_BYTES = 1 << 16  # below this, calling out costs more than it saves


def crc32(data, value: int = 0) -> int:
    """zlib.crc32(data, value), by libdeflate where it is available (the GIL released either way)."""
    if not _FAST_CRC32:
        _FAST_CRC32.append(_libdeflate_crc32())
    function = _FAST_CRC32[0]
    view = memoryview(data).cast("B")
    if function is None or len(view) < _FAST_CRC32_MIN_BYTES or view.readonly:
        return zlib.crc32(view, value)  # ctypes takes the address of writable buffers only
    return function(value, (ctypes.c_char * len(view)).from_buffer(view), len(view))


# ----------------------------------------------------------------------------------------
# One read of a file: SHA-256 and CRC-32s


@dataclass(frozen=True)
class FileDigest:
    """What one pass over a file found: its size, its SHA-256 (None when not asked for) and the
    CRC-32 of each run of bytes between consecutive cuts inside the requested ranges."""

    path: str
    size: int
    sha256: str | None
    segments: tuple[tuple[int, int, int], ...]  # (start, end, CRC-32), sorted

    def crc32(self, start: int, end: int) -> int:
        """CRC-32 of bytes [start, end): a requested range, or any run its cuts delimit."""
        crc, position = 0, start
        for seg_start, seg_end, seg_crc in self.segments:
            if seg_end <= position or seg_start >= end:
                continue
            if seg_start != position or seg_end > end:
                break
            crc = crc32_combine(crc, seg_crc, seg_end - seg_start)
            position = seg_end
        if position != end:
            raise ValueError(f"{self.path}: no CRC-32 was taken of bytes [{start}, {end})")
        return crc


def _segments(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The runs between all cut points (range ends) that lie inside at least one range."""
    ranges = [(int(s), int(e)) for s, e in ranges if e > s]
    cuts = sorted({point for bounds in ranges for point in bounds})
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if any(s <= a and b <= e for s, e in ranges)]


class Cancelled(Exception):
    """A digest stopped early because nobody needs its result any more."""


def digest_file(path: str | os.PathLike, ranges: Iterable[tuple[int, int]] = (), *, sha256: bool = True,
                stop: threading.Event | None = None) -> FileDigest:
    """SHA-256 of a file and CRC-32 of byte ranges of it, in one read.

    A second thread reads the next window and takes its CRC-32s while this one hashes the
    window before (two buffers, reused: memory stays flat). Without a SHA-256 only the
    ranges are read. The CRC-32 of a range is also available for every run between the ends
    of the ranges (FileDigest.crc32), so overlapping ranges cost no second pass.
    """
    path = os.fspath(path)
    segments = _segments(ranges)
    crcs = [0] * len(segments)
    digest = hashlib.sha256() if sha256 else None
    try:
        handle = open(path, "rb", buffering=0)
    except OSError as error:
        raise UnreadableModelError(f"{path}: cannot read it ({error.strerror or error})") from None
    with handle, concurrent.futures.ThreadPoolExecutor(max_workers=1) as reader:
        size = os.fstat(handle.fileno()).st_size
        if segments and segments[-1][1] > size:
            raise UnreadableModelError(f"{path}: bytes up to {segments[-1][1]} were expected, the file holds {size}")
        begin, end = (0, size) if digest is not None else (segments[0][0], segments[-1][1]) if segments else (0, 0)
        buffers = [bytearray(min(WINDOW_BYTES, end - begin)) for _ in range(2 if end > begin + WINDOW_BYTES else 1)]

        def read_window(position: int, buffer: bytearray) -> memoryview:
            """Bytes [position, position + window) read into `buffer`, their CRC-32s taken."""
            view = memoryview(buffer)[: min(len(buffer), end - position)]
            got = 0
            while got < len(view):
                count = os.preadv(handle.fileno(), [view[got:]], position + got)
                if count <= 0:
                    raise UnreadableModelError(f"{path}: ends at byte {position + got}, before byte {end}")
                got += count
            for index, (start, stop_at) in enumerate(segments):
                if start < position + got and stop_at > position:
                    crcs[index] = crc32(view[max(0, start - position): stop_at - position], crcs[index])
            return view

        positions = range(begin, end, len(buffers[0]) or 1)
        pending = reader.submit(read_window, begin, buffers[0]) if positions else None
        for index, position in enumerate(positions):
            if stop is not None and stop.is_set():
                raise Cancelled(path)
            view = pending.result()
            if index + 1 < len(positions):  # the other buffer: hashed the window before this one
                pending = reader.submit(read_window, positions[index + 1], buffers[(index + 1) % len(buffers)])
            if digest is not None:
                digest.update(view)
    return FileDigest(path, size, digest.hexdigest() if digest is not None else None,
                      tuple((s, e, c) for (s, e), c in zip(segments, crcs)))


class DigestTask:
    """A digest_file running on a thread of its own: `result()` waits for it (and raises what it
    raised), `cancel()` stops it at the next window when its result is no longer wanted."""

    def __init__(self, path, ranges=(), *, sha256: bool = True, check=None):
        self._stop = threading.Event()
        self._check = check
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest")
        self._future = pool.submit(digest_file, path, tuple(ranges), sha256=sha256, stop=self._stop)
        pool.shutdown(wait=False)

    def result(self) -> FileDigest:
        digest = self._future.result()
        if self._check is not None:
            self._check(digest)
        return digest

    def cancel(self) -> None:
        self._stop.set()


def start_digest(path, ranges=(), *, sha256: bool = True, check=None) -> DigestTask:
    """digest_file on a background thread; `check(digest)` runs on each result() (e.g. the
    CRC-32 of zip members against their recorded ones, raising UnreadableModelError)."""
    return DigestTask(path, ranges, sha256=sha256, check=check)


# ----------------------------------------------------------------------------------------
# Copying


def copy_range(source_fd: int, source_offset: int, target_fd: int, target_offset: int, length: int, *,
               source_name: str = "the source") -> None:
    """Copy `length` bytes between two files by the kernel, starting the writeback of each
    step as soon as it is copied; through a buffer where copy_file_range cannot serve."""
    done = 0
    while done < length:
        step = min(COPY_STEP_BYTES, length - done)
        try:
            sent = _kernel_copy(source_fd, source_offset + done, target_fd, target_offset + done, step)
        except OSError as error:
            if error.errno not in _NO_KERNEL_COPY:
                raise
            _buffered_copy(source_fd, source_offset + done, target_fd, target_offset + done, length - done,
                           source_name)
            return
        if sent == 0:
            raise UnreadableModelError(f"{source_name}: ends at byte {source_offset + done}, "
                                       f"{length - done} bytes before the end of what is copied")
        start_writeback(target_fd, target_offset + done, sent)
        done += sent


def _kernel_copy(source_fd: int, source_offset: int, target_fd: int, target_offset: int, length: int) -> int:
    copy = getattr(os, "copy_file_range", None)
    if copy is None:
        raise OSError(errno.ENOSYS, "copy_file_range is not available")
    done = 0
    while done < length:
        sent = copy(source_fd, target_fd, length - done, source_offset + done, target_offset + done)
        if sent == 0:
            break
        done += sent
    return done


def _buffered_copy(source_fd: int, source_offset: int, target_fd: int, target_offset: int, length: int,
                   source_name: str) -> None:
    buffer = bytearray(min(FALLBACK_CHUNK_BYTES, max(length, 1)))
    done = 0
    while done < length:
        view = memoryview(buffer)[: min(len(buffer), length - done)]
        got = os.preadv(source_fd, [view], source_offset + done)
        if got <= 0:
            raise UnreadableModelError(f"{source_name}: ends at byte {source_offset + done}, "
                                       f"{length - done} bytes before the end of what is copied")
        _write_all(target_fd, view[:got], target_offset + done)
        done += got


def _write_all(fd: int, data, offset: int) -> None:
    view = memoryview(data).cast("B")
    while len(view):
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


_SYNC_FILE_RANGE_WRITE = 2
_SYNC_FILE_RANGE = []


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range of a file to disk now, without waiting for it
    (sync_file_range SYNC_FILE_RANGE_WRITE); nothing where the system lacks it."""
    if not _SYNC_FILE_RANGE:
        _SYNC_FILE_RANGE.append(_load_sync_file_range())
    call = _SYNC_FILE_RANGE[0]
    if call is not None:
        call(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # advisory: a failure changes nothing


def _load_sync_file_range():
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


@dataclass(frozen=True)
class FileRange:
    """Bytes [start, end) of a file, to be copied by the kernel."""

    path: str
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def write_pieces(target_fd: int, offset: int, pieces: Sequence) -> list[tuple[int, int | None]]:
    """Write pieces one after another from `offset` of a file: a FileRange is copied by the
    kernel, anything else is an iterable of buffers written as they come. Returns, per piece,
    (bytes written, CRC-32 of them for produced bytes, None for a FileRange: its source's
    digest has it)."""
    written = []
    for piece in pieces:
        if isinstance(piece, FileRange):
            with open(piece.path, "rb", buffering=0) as source:
                copy_range(source.fileno(), piece.start, target_fd, offset, piece.length, source_name=piece.path)
            written.append((piece.length, None))
            offset += piece.length
            continue
        length, crc = 0, 0
        for chunk in piece:
            view = memoryview(chunk).cast("B")
            crc = crc32(view, crc)
            _write_all(target_fd, view, offset + length)
            length += len(view)
        start_writeback(target_fd, offset, length)
        written.append((length, crc))
        offset += length
    return written
