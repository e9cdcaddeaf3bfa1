"""Opening an untrusted HDF5 file read-only for one pass over its metadata.

The safety scan (h5.scan_hdf5) opens every object of a file once and never again. HDF5 keeps
the metadata of every object it has opened in its cache until the file closes, so a file
with thousands of objects makes the cache grow during the scan and the close evict it all
(1000-layer weights member: 21 ms of 217). With evict-on-close (a file access property of
HDF5 >= 1.10.1) an object's metadata leaves the cache when the object is closed: the cache
stays small and the scan of that member takes 177 ms instead, closing included.

h5py does not expose that property, so it is set through ctypes on the very libhdf5 h5py
runs on (found in the process' own memory map, its version checked against h5py's). Where
that library cannot be found (not Linux, no such symbol) images open with h5py's defaults:
the same results, only slower. Only in-memory images get it: HDF5 refuses to open a file
that is already open with a different evict-on-close setting, and a file on disk may be
open elsewhere in the process through plain h5py.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import stat

import h5py
from h5py import h5f, h5p

# An HDF5 file (or .keras weights member) up to this size is read once and scanned from
# memory (libhdf5 reads a file image natively); larger ones are opened where they lie.
IN_MEMORY_SCAN_BYTES = 16 << 20

_LIBRARY: list = []  # [ctypes.CDLL | None], looked up once
_IMAGE_NUMBERS = itertools.count()  # next() is atomic under the GIL


def _hdf5_library():
    """The libhdf5 h5py is linked against, as a ctypes library, or None."""
    if _LIBRARY:
        return _LIBRARY[0]
    _LIBRARY.append(None)
    if h5py.get_config().mpi:
        return None  # parallel HDF5 refuses evict-on-close
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {line.split(None, 5)[5].strip() for line in maps if line.count(" ") >= 5 and "libhdf5" in line}
    except (OSError, IndexError):
        return None
    wanted = tuple(h5py.version.hdf5_version_tuple[:3])
    for path in sorted(paths):
        if not os.path.basename(path).startswith("libhdf5") or os.path.basename(path).startswith("libhdf5_"):
            continue  # libhdf5_hl, libhdf5_cpp ...: not the core library
        try:
            library = ctypes.CDLL(path)  # already loaded by h5py: the same copy, not a second one
            numbers = [ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint()]
            if library.H5get_libversion(*map(ctypes.byref, numbers)) < 0:
                continue
            if tuple(n.value for n in numbers) != wanted:
                continue
            setter = library.H5Pset_evict_on_close
        except (OSError, AttributeError):
            continue
        setter.argtypes = [ctypes.c_int64, ctypes.c_bool]
        setter.restype = ctypes.c_int
        _LIBRARY[0] = library
        break
    return _LIBRARY[0]


def open_file(path: str | os.PathLike) -> h5py.File:
    """A Keras HDF5 file opened read-only for one metadata pass: a regular file up to
    IN_MEMORY_SCAN_BYTES is read once and opened from memory (one consistent snapshot of it,
    and open_image's faster scan); anything else as h5py.File(path, "r", locking=False)."""
    # Non-blocking: opening a FIFO must not wait for a writer (regular files ignore the flag).
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with open(descriptor, "rb", buffering=0, closefd=True) as handle:
        if stat.S_ISREG(os.fstat(descriptor).st_mode):
            data = bytearray()
            while len(data) <= IN_MEMORY_SCAN_BYTES and (chunk := handle.read(IN_MEMORY_SCAN_BYTES + 1 - len(data))):
                data += chunk
            if len(data) <= IN_MEMORY_SCAN_BYTES:
                return open_image(bytes(data))
    return h5py.File(path, "r", locking=False)


def open_image(data: bytes) -> h5py.File:
    """An HDF5 file opened read-only from bytes in memory (core driver, nothing on disk),
    for one metadata pass: h5py's default file access properties plus evict-on-close.

    Each image gets a name of its own: HDF5 takes two open in-memory files of one name for
    the same file and would hand the second open the first one's contents."""
    access = h5p.create(h5p.FILE_ACCESS)
    library = _hdf5_library()
    if library is not None:
        library.H5Pset_evict_on_close(access.id, True)  # a failure only costs speed
    access.set_fapl_core(backing_store=False)
    access.set_file_image(data)
    name = f"in-memory HDF5 image {os.getpid()}-{next(_IMAGE_NUMBERS)}".encode()
    return h5py.File(h5f.open(name, h5f.ACC_RDONLY, fapl=access))
