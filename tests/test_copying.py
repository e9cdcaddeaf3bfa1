"""surgery.io.copying: one read of a file for its SHA-256 and CRC-32s, kernel copies, stitched writes.

Every figure is compared with the standard library computing the same thing on its own
(hashlib, zlib), on real files; no TensorFlow.
"""

import errno
import hashlib
import os
import random
import tracemalloc
import zlib

import pytest

from surgery.errors import UnreadableModelError
from surgery.io import copying


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    """Random bytes spanning several read windows, with an odd tail."""
    data = random.Random(0).randbytes(3 * copying.WINDOW_BYTES + 12345)
    path = tmp_path_factory.mktemp("copying") / "data.bin"
    path.write_bytes(data)
    return path, data


def test_crc32_combine_joins_the_crcs_of_two_runs():
    rng = random.Random(1)
    for _ in range(200):
        first, second = rng.randbytes(rng.randrange(0, 300)), rng.randbytes(rng.randrange(0, 300))
        assert copying.crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second)) == zlib.crc32(first + second)
    runs = [rng.randbytes(n) for n in (0, 1, 70_000, 5)]
    assert copying.crc32_of_runs((zlib.crc32(r), len(r)) for r in runs) == zlib.crc32(b"".join(runs))


@pytest.mark.parametrize("size", [0, 1, 1000, 1 << 16, (1 << 20) + 3])
def test_crc32_equals_zlib_for_writable_and_read_only_buffers(size):
    data = random.Random(size).randbytes(size)
    assert copying.crc32(data, 7) == zlib.crc32(data, 7)
    assert copying.crc32(bytearray(data), 7) == zlib.crc32(data, 7)
    assert copying.crc32(memoryview(bytearray(data))[1:], 7) == zlib.crc32(data[1:], 7)


def test_one_read_gives_the_sha256_and_the_crc_of_every_range(data_file):
    path, data = data_file
    window = copying.WINDOW_BYTES
    ranges = [(0, 10), (5, 100), (window - 3, window + 3), (1000, 2 * window + 1),
              (2 * window, len(data)), (len(data) - 7, len(data))]
    digest = copying.digest_file(path, ranges)
    assert digest.sha256 == hashlib.sha256(data).hexdigest() and digest.size == len(data)
    for start, end in ranges:
        assert digest.crc32(start, end) == zlib.crc32(data[start:end]), (start, end)
    # Any run between the ends of the ranges is available too; anything else is refused.
    assert digest.crc32(5, 10) == zlib.crc32(data[5:10])
    with pytest.raises(ValueError, match="no CRC-32"):
        digest.crc32(3, 10)


def test_without_sha256_only_the_ranges_are_read(data_file):
    path, data = data_file
    start, end = copying.WINDOW_BYTES + 17, copying.WINDOW_BYTES + 90_000
    digest = copying.digest_file(path, [(start, end)], sha256=False)
    assert digest.sha256 is None and digest.crc32(start, end) == zlib.crc32(data[start:end])


def test_empty_file_and_ranges_past_the_end(tmp_path):
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert copying.digest_file(empty).sha256 == hashlib.sha256(b"").hexdigest()
    short = tmp_path / "short.bin"
    short.write_bytes(b"hello")
    with pytest.raises(UnreadableModelError, match="holds 5"):
        copying.digest_file(short, [(0, 10)])
    with pytest.raises(UnreadableModelError, match="cannot read"):
        copying.digest_file(tmp_path / "missing.bin")


def test_a_digest_on_its_own_thread_runs_its_check_on_result(data_file):
    path, data = data_file

    def refuse(digest):
        raise UnreadableModelError(f"checked {digest.crc32(0, 10):08x}")

    task = copying.start_digest(path, [(0, 10)], check=refuse)
    with pytest.raises(UnreadableModelError, match=f"{zlib.crc32(data[:10]):08x}"):
        task.result()


def test_digest_memory_stays_flat(data_file):
    path, _data = data_file
    tracemalloc.start()
    copying.digest_file(path, [(0, os.path.getsize(path))])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 3 * copying.WINDOW_BYTES, f"peak Python allocation {peak} bytes"


def test_copy_range_copies_bytes_between_offsets(data_file, tmp_path):
    path, data = data_file
    target = tmp_path / "out.bin"
    length = 2 * copying.WINDOW_BYTES + 5
    with open(path, "rb") as source, open(target, "wb") as out:
        copying.copy_range(source.fileno(), 1000, out.fileno(), 7, length)
    assert target.read_bytes() == bytes(7) + data[1000:1000 + length]


def test_copy_range_falls_back_to_a_buffer_where_the_kernel_cannot(data_file, tmp_path, monkeypatch):
    path, data = data_file

    def refused(*_args):
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", refused)
    target = tmp_path / "out.bin"
    with open(path, "rb") as source, open(target, "wb") as out:
        copying.copy_range(source.fileno(), 3, out.fileno(), 0, len(data) - 3)
    assert target.read_bytes() == data[3:]


def test_copy_range_past_the_end_of_the_source_is_an_unreadable_input(tmp_path):
    short = tmp_path / "short.bin"
    short.write_bytes(b"0123456789")
    with open(short, "rb") as source, open(tmp_path / "out.bin", "wb") as out:
        with pytest.raises(UnreadableModelError, match="ends at byte 10"):
            copying.copy_range(source.fileno(), 4, out.fileno(), 0, 20, source_name=str(short))


def test_write_pieces_stitches_file_ranges_and_produced_bytes(data_file, tmp_path):
    path, data = data_file
    pieces = [copying.FileRange(str(path), 10, 100), [b"abc", bytearray(b"de"), memoryview(b"fgh")],
              copying.FileRange(str(path), 0, 10)]
    target = tmp_path / "out.bin"
    with open(target, "wb") as out:
        written = copying.write_pieces(out.fileno(), 3, pieces)
    assert target.read_bytes() == bytes(3) + data[10:100] + b"abcdefgh" + data[:10]
    assert written == [(90, None), (8, zlib.crc32(b"abcdefgh")), (10, None)]
