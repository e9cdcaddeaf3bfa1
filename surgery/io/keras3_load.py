"""Keras 3 model loading without thrown-away work, and rebuilt models that share weights.

Keras' own loader builds every layer with its initializers and then overwrites the values
with the file's weights: for a recurrent layer the orthogonal recurrent kernel is a QR
decomposition, minutes at 1 GB. It also reads the whole weights member into memory before
copying it into the variables (twice the model's size). Here:

- random initializers (RandomInitializer: glorot, orthogonal, ...) give zeros while a model
  is built for loading; deterministic ones still run. Keras refuses a file that does not
  hold every variable of a layer, so each zero is overwritten by the file's value;
- the weights member of a .keras zip (stored, as Keras writes it) is read variable by
  variable through a window onto the archive, not into memory first;
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


@contextlib.contextmanager
def cheap_initializers(shared: dict | None = None):
    """While open: Keras 3 variables with a random initializer start as zeros, and a
    variable whose path is in `shared` ({path: tf.Variable}) with the same shape and dtype
    takes that tf.Variable itself (shared storage, nothing allocated)."""
    import tensorflow as tf
    from keras.src.backend.tensorflow.core import Variable
    from keras.src.initializers.random_initializers import RandomInitializer

    original = Variable._initialize_with_initializer

    def initialize(self, initializer):
        source = shared.get(self.path) if shared else None
        if (source is not None and tuple(source.shape) == tuple(self._shape)
                and source.dtype.name == self._dtype):
            self._initialize(source)
        elif isinstance(initializer, RandomInitializer):
            shape, dtype = self._shape, self._dtype
            self._initialize(lambda: tf.zeros(shape, dtype=dtype))
        else:
            original(self, initializer)

    with _PATCH_LOCK:
        Variable._initialize_with_initializer = initialize
        try:
            yield
        finally:
            Variable._initialize_with_initializer = original


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
    and BytesIO: a BytesIO would hold the whole member in memory)."""
    import io

    import h5py

    class WindowStore(base):
        def _get_h5_file(self, path_or_io, mode=None):
            return h5py.File(window, mode="r")

    return WindowStore(io.BytesIO(), mode="r")


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

    copied = 0
    by_name = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        origin = by_name.get(layer.name)
        if origin is None:
            if layer.weights:
                raise UsageError(f"rebuilt layer {layer.name!r} has weights but no counterpart in the source model")
            continue
        if isinstance(layer, keras.Model) and isinstance(origin, keras.Model):
            copied += share_weights(origin, layer)
            continue
        mine, theirs = layer.weights, origin.weights
        if len(mine) != len(theirs):
            raise UsageError(f"rebuilt layer {layer.name!r} has {len(mine)} weights, its source {len(theirs)}")
        if all(getattr(a, "_value", None) is getattr(b, "_value", 0) for a, b in zip(mine, theirs)):
            continue
        layer.set_weights(origin.get_weights())
        copied += len(mine)
    return copied
