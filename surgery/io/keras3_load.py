"""Keras 3 model loading without thrown-away work, and rebuilt models that share weights.

Keras' own loader builds every layer with its initializers and then overwrites the values
with the file's weights: for a recurrent layer the orthogonal recurrent kernel is a QR
decomposition, minutes at 1 GB. It also reads the whole weights member into memory before
copying it into the variables (twice the model's size), and each variable's value passes
through two more copies on its way in (NumPy, then a tensor, beside the initial value). Here:

- random initializers (RandomInitializer: glorot, orthogonal, ...) give zeros while a model
  is built for loading; deterministic ones still run. Keras refuses a file that does not
  hold every variable of a layer, so each zero is overwritten by the file's value. Large
  ones are zero pages not yet backed by memory, so that a variable's placeholder and its
  value are never both resident;
- the weights member of a .keras zip (stored, as Keras writes it) is read variable by
  variable through a window onto the archive, not into memory first; a large variable is
  read straight into memory that TensorFlow takes over (DLPack) and the variable adopts:
  its value is in memory once;
- a model built from a rewired config can take the original's variables (same path, shape
  and dtype) instead of allocating and copying its own: `build_sharing`.

Everything else (safe_mode, ObjectSharingScope, Keras' own error on missing weights) is
Keras' loader unchanged. Anything this module cannot read the fast way falls back to
`keras.saving.load_model` (still without initializer work).
"""

from __future__ import annotations

import contextlib
import json
import threading
import zipfile

_PATCH_LOCK = threading.Lock()
FAST_MEMBERS = {"config.json", "metadata.json", "model.weights.h5"}
# From this size a placeholder is a fresh mapping (glibc maps anything over 32 MiB, its
# largest mmap threshold): zero pages that use no memory until written. Below it, zeros.
UNTOUCHED_PLACEHOLDER_BYTES = 32 << 20
# From this size a stored variable is read into memory TensorFlow adopts (no copies).
ADOPTED_READ_BYTES = 1 << 20
# Eigen's (so TensorFlow's) largest alignment: DLPack memory must meet it.
TENSOR_ALIGNMENT = 64


@contextlib.contextmanager
def cheap_initializers(shared: dict | None = None):
    """While open, in this thread only: Keras 3 variables with a random initializer start as
    zeros, and a variable whose path is in `shared` ({path: tf.Variable}) with the same shape
    and dtype takes that tf.Variable itself (shared storage, nothing allocated). Other
    threads building models meanwhile initialize as Keras does."""
    from keras.src.backend.tensorflow.core import Variable

    with _PATCH_LOCK:
        if _PATCH_USERS[0] == 0:
            _PATCH_ORIGINAL[0] = Variable._initialize_with_initializer
            Variable._initialize_with_initializer = _initialize_for_loading
        _PATCH_USERS[0] += 1
    outer = getattr(_LOADING, "shared", None)
    _LOADING.shared = shared if shared is not None else {}
    try:
        yield
    finally:
        _LOADING.shared = outer
        with _PATCH_LOCK:
            _PATCH_USERS[0] -= 1
            if _PATCH_USERS[0] == 0:
                Variable._initialize_with_initializer = _PATCH_ORIGINAL[0]


_LOADING = threading.local()  # .shared: this thread is inside cheap_initializers
_PATCH_USERS = [0]            # cheap_initializers blocks open, all threads
_PATCH_ORIGINAL = [None]      # Keras' own Variable._initialize_with_initializer meanwhile


def _initialize_for_loading(self, initializer):
    shared = getattr(_LOADING, "shared", None)
    if shared is None:  # another thread, not loading through us
        return _PATCH_ORIGINAL[0](self, initializer)
    import tensorflow as tf
    from keras.src.initializers.random_initializers import RandomInitializer

    source = shared.get(self.path)
    if source is not None and tuple(source.shape) == tuple(self._shape) and source.dtype.name == self._dtype:
        self._initialize(source)
    elif isinstance(initializer, RandomInitializer):
        shape, dtype = self._shape, self._dtype
        self._initialize(lambda: _placeholder(tf, shape, dtype))
    else:
        _PATCH_ORIGINAL[0](self, initializer)


def _placeholder(tf, shape, dtype):
    """Zeros to be overwritten by the file's value; large ones left to the kernel's zero pages."""
    size = (tf.TensorShape(shape).num_elements() or 0) * tf.as_dtype(dtype).size
    if size >= UNTOUCHED_PLACEHOLDER_BYTES:
        return tf.raw_ops.Empty(shape=shape, dtype=dtype, init=False)
    return tf.zeros(shape, dtype=dtype)


def load(path: str, *, custom_objects: dict, safe_mode: bool):
    """keras.saving.load_model(path, compile=False), without the work it throws away."""
    import keras

    with cheap_initializers():
        if str(path).endswith(".keras"):
            model = _load_zip_streamed(str(path), custom_objects, safe_mode)
            if model is not None:
                return model
        return keras.saving.load_model(path, custom_objects=custom_objects, compile=False, safe_mode=safe_mode)


def _load_zip_streamed(path: str, custom_objects: dict, safe_mode: bool):
    """A .keras zip of config, metadata and a stored weights member, loaded with the weights
    read in place; None for any other layout (assets, npz, compressed weights)."""
    try:
        from keras.src.saving import saving_lib
    except ImportError:
        return None
    from surgery.io.formats.keras_zip import WEIGHTS_MEMBER, open_member_seekable

    needed = ("_model_from_config", "_load_state", "_raise_loading_failure", "H5IOStore")
    if not all(hasattr(saving_lib, name) for name in needed):
        return None
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if (set(names) - {"metadata.json"} != {"config.json", WEIGHTS_MEMBER} or len(names) != len(set(names))
                or archive.getinfo(WEIGHTS_MEMBER).compress_type != zipfile.ZIP_STORED):
            return None
        config_json = archive.read("config.json")
        model = saving_lib._model_from_config(config_json, custom_objects, False, safe_mode)
        with open_member_seekable(path, archive, archive.getinfo(WEIGHTS_MEMBER)) as member:
            store = _window_store(saving_lib.H5IOStore, member)
            try:
                failed, errors = set(), {}
                saving_lib._load_state(model, weights_store=store, assets_store=None, inner_path="",
                                       visited_saveables=set(), failed_saveables=failed, error_msgs=errors)
            finally:
                store.close()
    if failed:
        saving_lib._raise_loading_failure(errors)
    return model


def _window_store(base, window):
    """Keras' H5IOStore reading an HDF5 file through a seekable window (it only takes paths
    and BytesIO: a BytesIO would hold the whole member in memory). Large float variables
    come back as tensors over memory they were read into, which `assign` adopts."""
    import io

    import h5py
    from keras.src.saving import saving_lib

    safe_dataset = getattr(saving_lib, "safe_get_h5_dataset", None)  # Keras' checks on each dataset

    class WindowStore(base):
        def _get_h5_file(self, path_or_io, mode=None):
            return h5py.File(window, mode="r")

        def __getitem__(self, key):
            group = getattr(self, "_h5_entry_group", None)
            if safe_dataset is not None and isinstance(group, h5py.Group):
                dataset = safe_dataset(group, key)
                if _adoptable(dataset):
                    return _adopted_read(dataset)
            return super().__getitem__(key)

    return WindowStore(io.BytesIO(), mode="r")


def _adoptable(dataset) -> bool:
    """A plain float dataset (not Keras' bfloat16-as-attribute) worth reading in place."""
    dtype = dataset.dtype
    return (dtype.kind == "f" and dtype.isnative and "dtype" not in dataset.attrs
            and dataset.size * dtype.itemsize >= ADOPTED_READ_BYTES)


def _adopted_read(dataset):
    """The dataset as a tensor over the NumPy memory it was read into (DLPack: no copy).
    Nothing else holds that memory, so `Variable.assign` takes the buffer over instead of
    copying it (TensorFlow forwards an input whose buffer has one owner)."""
    import numpy as np

    from surgery.io.quiet import import_tensorflow

    tf = import_tensorflow()
    nbytes = dataset.size * dataset.dtype.itemsize
    raw = np.empty(nbytes + TENSOR_ALIGNMENT, dtype=np.uint8)
    skip = -raw.ctypes.data % TENSOR_ALIGNMENT
    array = raw[skip : skip + nbytes].view(dataset.dtype).reshape(dataset.shape)
    dataset.read_direct(array)
    return tf.experimental.dlpack.from_dlpack(array.__dlpack__())


def variables_by_path(model) -> dict:
    """{variable path: tf.Variable} of a Keras 3 model; ambiguous paths are left out."""
    found: dict = {}
    duplicated = set()
    for variable in model.weights:
        value = getattr(variable, "_value", None)
        if value is None:
            continue
        if variable.path in found and found[variable.path] is not value:
            duplicated.add(variable.path)
        found[variable.path] = value
    return {path: value for path, value in found.items() if path not in duplicated}


def build_sharing(config: dict, original, *, custom_objects=None, safe_mode: bool = True):
    """A Keras 3 model from `config` whose variables are `original`'s (matched by path,
    then checked layer by layer; any that could not be shared are copied)."""
    from surgery.io.families import keras3_mask_ops
    from surgery.io.quiet import quiet
    from keras.src.saving.serialization_lib import ObjectSharingScope, deserialize_keras_object

    config = json.loads(json.dumps(config))  # Keras pops keys from what it deserializes
    # A model to compute with, as load_model(compile=False): a training loss of the file's own
    # (a plain function, saved by name only) need not be found.
    config.pop("compile_config", None)
    with quiet(), cheap_initializers(variables_by_path(original)), ObjectSharingScope():
        rebuilt = deserialize_keras_object(config, custom_objects={**keras3_mask_ops(), **(custom_objects or {})},
                                           safe_mode=safe_mode)
    share_weights(original, rebuilt)
    return rebuilt


def share_weights(source, target) -> int:
    """Make sure every layer of `target` computes with its namesake's weights in `source`
    (through nested models): shared variables are left alone, others are assigned.
    Returns how many variables had to be copied."""
    import keras

    from surgery.errors import UsageError
    from surgery.io import layer_pairs

    copied = 0
    for layer, origin in layer_pairs.matched_layers(source, target, is_model=lambda l: isinstance(l, keras.Model)):
        mine, theirs = layer.weights, origin.weights
        if len(mine) != len(theirs):
            raise UsageError(f"rebuilt layer {layer.name!r} has {len(mine)} weights, its source {len(theirs)}")
        if all(getattr(a, "_value", None) is getattr(b, "_value", 0) for a, b in zip(mine, theirs)):
            continue
        layer.set_weights(origin.get_weights())
        copied += len(mine)
    return copied
