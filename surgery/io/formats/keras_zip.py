"""The `.keras` zip format (Keras 3, and tf_keras 2.13+ which writes the same layout).

Members: `config.json` (the serialized model), `metadata.json` (`keras_version`, date),
`model.weights.h5` (HDF5 weights, stored uncompressed) and optionally `assets/...`.

Reading never extracts anything to disk. JSON members are read with a size cap and a
decompression-bomb check; weight shapes and HDF5 hazards (links, external storage,
plugin filters: see h5.scan_hdf5) come from the HDF5 metadata of the weights member, read
in place through a seekable window onto the archive.
"""

from __future__ import annotations

import io
import copy
import json
import os
import shutil
import struct
import zipfile
from typing import Any

import h5py

from surgery.io import copying
from surgery.io.artifact import ModelArtifact
from surgery.errors import UnreadableModelError, UsageError
from surgery.io.formats import (
    check_model_config,
    family_from_version,
    parse_json,
    refuse_same_file,
    short_repr,
    unreadable,
)
from surgery.io.formats.h5 import hdf5_memory_guard, scan_hdf5
from surgery.io.formats.h5_open import IN_MEMORY_SCAN_BYTES, open_image

CONFIG_MEMBER = "config.json"
METADATA_MEMBER = "metadata.json"
WEIGHTS_MEMBER = "model.weights.h5"

# A config.json of a few MB is already a very large model; 256 MiB is far beyond any
# genuine one and still small enough to hold in memory.
MAX_JSON_MEMBER_BYTES = 256 << 20
# DEFLATE tops out near 1032:1 on pure zeros; nothing genuine is both large and that
# compressible, so such a member is treated as a decompression bomb.
BOMB_MIN_BYTES = 10_000_000
BOMB_MAX_RATIO = 1000

COPY_CHUNK_BYTES = 1 << 20

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # zip local file header, 30 bytes
_LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"
_ENCRYPTED_FLAG = 0x1
_UTF8_NAME_FLAG = 0x800


# ----------------------------------------------------------------------------------------
# Reading


def read_keras_zip(path: str) -> ModelArtifact:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise unreadable(path, f"corrupt or truncated zip archive ({error})") from None
    with archive:
        members = _members_by_name(path, archive)
        if CONFIG_MEMBER not in members:
            raise unreadable(
                path, f"zip archive has no {CONFIG_MEMBER}: not a .keras model file"
            )
        config = check_model_config(
            path, _read_json_member(path, archive, members[CONFIG_MEMBER]), CONFIG_MEMBER
        )
        keras_version = _read_keras_version(path, archive, members.get(METADATA_MEMBER))
        weights = members.get(WEIGHTS_MEMBER)
        shapes, hazards = _read_weight_shapes(path, archive, weights) if weights else ({}, ())
    return ModelArtifact(
        path=path,
        format="keras",
        family=_family(keras_version, config),
        model_config=config,
        keras_version=keras_version,
        weight_shapes=shapes,
        hazards=hazards,
    )


def _members_by_name(path: str, archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        if info.filename in members:
            # Two readers may pick different copies of a duplicated name: ambiguous.
            raise unreadable(path, f"zip archive holds member {info.filename!r} twice")
        members[info.filename] = info
    return members


def _family(keras_version: str | None, config: dict[str, Any]) -> str:
    if keras_version is not None:
        return family_from_version(keras_version)
    # No metadata.json: tf_keras names its own modules in the config.
    module = config.get("module")
    if isinstance(module, str) and module.split(".")[0] == "tf_keras":
        return "keras2"
    return "keras3"


def _read_keras_version(
    path: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo | None
) -> str | None:
    if info is None:
        return None  # Keras itself only needs config.json; metadata is informative.
    metadata = _read_json_member(path, archive, info)
    if not isinstance(metadata, dict):
        raise unreadable(
            path, f"{METADATA_MEMBER} is not a JSON object but {type(metadata).__name__}"
        )
    version = metadata.get("keras_version")
    if version is not None and not isinstance(version, str):
        raise unreadable(
            path, f"{METADATA_MEMBER} keras_version is not a string: {short_repr(version)}"
        )
    return version


def _read_json_member(path: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Any:
    data = _read_member_capped(path, archive, info, MAX_JSON_MEMBER_BYTES)
    return parse_json(path, data, info.filename)


def _read_member_capped(
    path: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int
) -> bytes:
    if info.file_size > cap:
        raise unreadable(
            path,
            f"member {info.filename!r} declares {info.file_size} bytes, "
            f"over the {cap} byte limit",
        )
    _refuse_bomb(path, info)
    if info.flag_bits & _ENCRYPTED_FLAG:
        raise unreadable(path, f"member {info.filename!r} is encrypted")
    try:
        with archive.open(info) as member:
            # Read one byte past the cap rather than trusting the declared size.
            data = member.read(cap + 1)
    except zipfile.BadZipFile as error:  # CRC mismatch, bad local header, ...
        raise unreadable(path, f"member {info.filename!r} is corrupt ({error})") from None
    except NotImplementedError:
        raise unreadable(
            path,
            f"member {info.filename!r} uses unsupported compression method "
            f"{info.compress_type}",
        ) from None
    if len(data) > cap:
        raise unreadable(path, f"member {info.filename!r} is larger than {cap} bytes")
    return data


def _refuse_bomb(path: str, info: zipfile.ZipInfo) -> None:
    if info.file_size > 0 and info.compress_size == 0:
        raise unreadable(
            path, f"member {info.filename!r} declares {info.file_size} bytes but stores none"
        )
    if (
        info.file_size > BOMB_MIN_BYTES
        and info.file_size > BOMB_MAX_RATIO * info.compress_size
    ):
        raise unreadable(
            path,
            f"member {info.filename!r} expands {info.compress_size} bytes to "
            f"{info.file_size} (over {BOMB_MAX_RATIO}:1): refusing a decompression bomb",
        )


# ----------------------------------------------------------------------------------------
# Weight shapes from the weights member, in place


def _read_weight_shapes(
    path: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo
) -> tuple[dict[str, tuple[int, ...]], tuple[Any, ...]]:
    """Dataset shapes and HDF5 hazards (h5.scan_hdf5) of the weights member."""
    _refuse_bomb(path, info)
    try:
        if info.file_size <= IN_MEMORY_SCAN_BYTES:
            data = _read_member_capped(path, archive, info, IN_MEMORY_SCAN_BYTES)
            with hdf5_memory_guard(), open_image(data) as weights:
                return scan_hdf5(path, weights, where=info.filename + ":")
        with open_member_seekable(path, archive, info) as member, hdf5_memory_guard():
            with h5py.File(member, "r") as weights:
                return scan_hdf5(path, weights, where=info.filename + ":")
    except UnreadableModelError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as error:
        raise unreadable(
            path, f"member {info.filename!r} is not a readable HDF5 file ({error})"
        ) from None




def open_member_seekable(
    path: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo
) -> io.RawIOBase:
    """A seekable reader over the member's bytes.

    Keras stores the weights uncompressed, so their bytes sit verbatim in the archive and
    a window onto the archive file reads them with real seeks. (A ZipExtFile also seeks,
    but re-reads from the member's start on every backward seek, which h5py does a lot.)
    Compressed members fall back to the slower ZipExtFile.
    """
    if info.compress_type != zipfile.ZIP_STORED:
        return archive.open(info)
    start = stored_data_offset(path, archive, info)
    return _FileWindow(open(archive.filename, "rb"), start, info.file_size)


def stored_data_offset(path: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    if info.flag_bits & _ENCRYPTED_FLAG:
        raise unreadable(path, f"member {info.filename!r} is encrypted")
    if info.compress_size != info.file_size:
        raise unreadable(
            path,
            f"stored member {info.filename!r} has compressed size {info.compress_size} "
            f"!= size {info.file_size}",
        )
    archive_size = os.path.getsize(archive.filename)
    with open(archive.filename, "rb") as raw:
        raw.seek(info.header_offset)
        header = raw.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size:
            raise unreadable(path, f"local header of {info.filename!r} is truncated")
        fields = _LOCAL_HEADER.unpack(header)
        signature, name_length, extra_length = fields[0], fields[9], fields[10]
        if signature != _LOCAL_HEADER_SIGNATURE:
            raise unreadable(path, f"bad local header signature for {info.filename!r}")
        name = raw.read(name_length)
    # Same check zipfile does: the local header must describe the same member.
    encoding = "utf-8" if info.flag_bits & _UTF8_NAME_FLAG else "cp437"
    if name.decode(encoding, "replace") != info.orig_filename:
        raise unreadable(
            path, f"local header name {short_repr(name)} != central name {info.filename!r}"
        )
    start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
    if start + info.file_size > archive_size:
        raise unreadable(
            path, f"member {info.filename!r} extends past the end of the archive"
        )
    return start


class _FileWindow(io.RawIOBase):
    """Read-only seekable view of bytes [start, start + size) of a binary file."""

    def __init__(self, raw: io.BufferedReader, start: int, size: int):
        super().__init__()
        self._raw = raw
        self._start = start
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._position + offset
        elif whence == io.SEEK_END:
            target = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence!r}")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        self._position = target
        return target

    def readinto(self, buffer) -> int:
        wanted = min(len(buffer), self._size - self._position)
        if wanted <= 0:
            return 0
        self._raw.seek(self._start + self._position)
        got = self._raw.readinto(memoryview(buffer).cast("B")[:wanted]) or 0
        self._position += got
        return got

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


# ----------------------------------------------------------------------------------------
# Writing


def write_keras_zip(
    source_path: str | os.PathLike, dest_path: str | os.PathLike, new_config: dict,
    *, crcs_checked: bool = False,
) -> None:
    """Write a copy of a .keras file with config.json replaced by `new_config`.

    metadata.json, model.weights.h5 and assets are copied as streams in 1 MiB chunks
    (memory stays flat whatever their size), in the original order, with the original
    compression method, dates and attributes; every member's CRC is verified on the way,
    so a corrupt source fails instead of being copied under a fresh valid CRC.
    Atomicity is the caller's business: dest_path is overwritten.
    crcs_checked: the caller checks stored members' CRCs itself, in the same read of the
    source as its hash (sha256_checking_members), and must not commit before it has.
    """
    config_bytes = _encode_config(new_config)
    source_text = os.fspath(source_path)
    refuse_same_file(source_text, dest_path)
    try:
        with zipfile.ZipFile(source_text) as source:
            members = _members_by_name(source_text, source)
            if CONFIG_MEMBER not in members:
                raise unreadable(source_text, f"zip archive has no {CONFIG_MEMBER}")
            with zipfile.ZipFile(dest_path, "w", allowZip64=True) as dest:
                dest.comment = source.comment
                for info in members.values():
                    if info.filename == CONFIG_MEMBER:
                        dest.writestr(clone_info(info), config_bytes)
                    else:
                        copy_member(source_text, source, dest, info, crc_checked=crcs_checked)
    except zipfile.BadZipFile as error:
        raise unreadable(source_text, f"corrupt zip archive ({error})") from None
    except (NotImplementedError, RuntimeError) as error:
        # zipfile's wording for unsupported compression and encrypted members.
        raise unreadable(source_text, f"cannot copy a member ({error})") from None


def _encode_config(new_config: dict) -> bytes:
    if not isinstance(new_config, dict) or not isinstance(new_config.get("class_name"), str):
        raise UsageError(
            f"new config must be a dict with a class_name, got {short_repr(new_config)}"
        )
    try:
        return json.dumps(new_config).encode("utf-8")
    except (TypeError, ValueError) as error:
        raise UsageError(f"new config is not JSON-serializable: {error}") from None


def clone_info(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    clone = zipfile.ZipInfo(info.filename, date_time=info.date_time)
    clone.compress_type = info.compress_type
    clone.comment = info.comment
    clone.create_system = info.create_system
    clone.external_attr = info.external_attr
    # Lets zipfile decide up front whether the member needs ZIP64 headers.
    clone.file_size = info.file_size
    return clone


def copy_member(
    source_path: str, source: zipfile.ZipFile, dest: zipfile.ZipFile, info: zipfile.ZipInfo,
    *, crc_checked: bool = False,
) -> None:
    _refuse_bomb(source_path, info)
    clone = clone_info(info)
    if info.is_dir():
        dest.writestr(clone, b"")
        return
    if info.compress_type != zipfile.ZIP_STORED:
        # Decompress and recompress; ZipExtFile checks the CRC when it reaches the end.
        with source.open(info) as reader, dest.open(clone, "w") as writer:
            shutil.copyfileobj(reader, writer, COPY_CHUNK_BYTES)
        return
    if crc_checked:  # the caller's one read of the source checks it (sha256_checking_members)
        _raw_copy_member(source_path, dest, info)
        return
    # Stored (what Keras writes): the member's local header and bytes are copied raw by the
    # kernel (copy_file_range), as fast as `cp`. Its recorded CRC-32 is checked against the
    # source bytes on a second thread during the copy, so corrupt weights still fail the
    # copy instead of being re-saved with a fresh, valid CRC.
    start, end = _data_range(source_path, info)
    crc = copying.start_digest(source_path, [(start, end)], sha256=False)
    _raw_copy_member(source_path, dest, info)
    check_stored_members(source_path, [(start, end, info)], crc.result())


_DESCRIPTOR_SIGNATURE = b"PK\x07\x08"


def _local_span(handle, info: zipfile.ZipInfo) -> tuple[int, int]:
    """(offset of the member's data, total bytes of header + data + data descriptor)."""
    handle.seek(info.header_offset)
    fields = _LOCAL_HEADER.unpack(handle.read(_LOCAL_HEADER.size))
    if fields[0] != b"PK\x03\x04":
        raise unreadable(getattr(handle, "name", "?"), f"member {info.filename!r} has a bad local header")
    data_start = info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1]
    end = data_start + info.compress_size
    if info.flag_bits & 0x08:
        handle.seek(end)
        head = handle.read(4)
        zip64 = info.compress_size >= 0xFFFFFFFF or info.file_size >= 0xFFFFFFFF
        end += (4 if head == _DESCRIPTOR_SIGNATURE else 0) + (20 if zip64 else 12)
    return data_start, end - info.header_offset


def _data_range(source_path: str, info: zipfile.ZipInfo) -> tuple[int, int]:
    """(start, end) of a member's stored bytes in the archive file."""
    with open(source_path, "rb") as handle:
        data_start, _ = _local_span(handle, info)
    return data_start, data_start + info.compress_size


def stored_members(path: str | os.PathLike) -> list[tuple[int, int, zipfile.ZipInfo]]:
    """(start, end, info) of every stored member's bytes in a .keras file (checked offsets)."""
    path = os.fspath(path)
    with zipfile.ZipFile(path) as archive:
        return [(start, start + info.compress_size, info)
                for info in archive.infolist()
                if info.compress_type == zipfile.ZIP_STORED and not info.is_dir()
                for start in [stored_data_offset(path, archive, info)]]


def check_stored_members(path: str | os.PathLike, members, digest: copying.FileDigest) -> None:
    """The CRC-32 of each of `members` (from stored_members) as a digest of the file read it,
    against the recorded one: UnreadableModelError naming the first corrupt member."""
    for start, end, info in members:
        actual = digest.crc32(start, end)
        if actual != info.CRC:
            raise unreadable(os.fspath(path), f"member {info.filename!r} is corrupt (CRC-32 {actual:08x}, "
                                              f"recorded {info.CRC:08x})")


def sha256_checking_members(path: str | os.PathLike) -> str:
    """SHA-256 of a .keras file, with every stored member's CRC-32 checked in the same read.

    One pass over the source instead of one for the hash and one per member's CRC; a
    corrupt member fails (UnreadableModelError) as the copy's own check would. A second
    thread reads ahead and takes the CRC-32s while this one hashes (copying.digest_file).
    """
    members = stored_members(path)
    digest = copying.digest_file(path, [(start, end) for start, end, _info in members])
    check_stored_members(path, members, digest)
    return digest.sha256


def member_crc32(path: str | os.PathLike, name: str) -> int | None:
    """CRC-32 of a stored member's bytes as they are in the file (None: no such member)."""
    path = os.fspath(path)
    with zipfile.ZipFile(path) as archive:
        try:
            info = archive.getinfo(name)
        except KeyError:
            return None
    start, end = _data_range(path, info)
    return copying.digest_file(path, [(start, end)], sha256=False).crc32(start, end)


def _raw_copy_member(source_path: str, dest: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Append a member's local header and data unchanged, and register it for the directory."""
    dest.fp.flush()
    offset = dest.fp.tell()
    with open(source_path, "rb") as handle:
        _, length = _local_span(handle, info)
        copying.copy_range(handle.fileno(), info.header_offset, dest.fp.fileno(), offset, length,
                           source_name=source_path)
    _register(dest, info, offset, length, info.CRC)


def copy_member_stitched(source_path: str, dest: zipfile.ZipFile, info: zipfile.ZipInfo, pieces,
                         crc_of) -> None:
    """Append a stored member under its own local header, its bytes written from `pieces`
    (copying.write_pieces: ranges of files copied by the kernel, produced buffers), as many
    as it holds. Its CRC-32 is `crc_of(written)` (written: what write_pieces returned),
    combined from the pieces' own without reading the member again, and patched into the
    local header (and data descriptor) once known."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & _ENCRYPTED_FLAG:
        raise unreadable(source_path, f"member {info.filename!r} is not stored plain; cannot stitch it")
    dest.fp.flush()
    offset, fd = dest.fp.tell(), dest.fp.fileno()
    with open(source_path, "rb") as handle:
        data_start, span = _local_span(handle, info)
        handle.seek(info.header_offset)
        header_crc = _LOCAL_HEADER.unpack(handle.read(_LOCAL_HEADER.size))[6]
        handle.seek(data_start + info.compress_size)
        signed = handle.read(4) == _DESCRIPTOR_SIGNATURE
        header = data_start - info.header_offset
        tail = span - header - info.compress_size  # the data descriptor, if any
        copying.copy_range(handle.fileno(), info.header_offset, fd, offset, header, source_name=source_path)
        written = copying.write_pieces(fd, offset + header, pieces)
        if sum(length for length, _crc in written) != info.compress_size:
            raise unreadable(source_path, f"member {info.filename!r}: {sum(n for n, _c in written)} bytes "
                                          f"written for {info.compress_size}")
        copying.copy_range(handle.fileno(), data_start + info.compress_size, fd,
                           offset + header + info.compress_size, tail, source_name=source_path)
    crc = crc_of(written)
    # With a data descriptor the local header may leave the CRC-32 at zero: then it stays so.
    if not (tail and header_crc == 0):
        os.pwrite(fd, struct.pack("<L", crc), offset + _CRC_FIELD)
    if tail:  # the descriptor's CRC-32 comes after its optional signature
        os.pwrite(fd, struct.pack("<L", crc), offset + header + info.compress_size + (4 if signed else 0))
    _register(dest, info, offset, span, crc)


_CRC_FIELD = 14  # offset of the CRC-32 in a local file header


def _register(dest: zipfile.ZipFile, info: zipfile.ZipInfo, offset: int, length: int, crc: int) -> None:
    """Register a member appended at `offset` for the central directory zipfile writes."""
    dest.fp.seek(offset + length)
    copied = copy.copy(info)
    copied.header_offset = offset
    copied.CRC = crc
    dest.filelist.append(copied)
    dest.NameToInfo[copied.filename] = copied
    dest.start_dir = dest.fp.tell()
    dest._didModify = True
