"""The two Keras families the tool operates on: Keras 3 and Keras 2 (tf_keras).

Everything that differs between them at run time lives here, behind one interface:
loading a file, (de)serializing a model, finding a layer call's node in a model's graph,
reading what a recurrent call received (sequence, mask, initial states), and evaluating
inner tensors. The config-level differences live in `graph.Keras3Dialect`/`Keras2Dialect`.
"""

from __future__ import annotations

import copy
import json
import os

import numpy as np

from surgery.graph import channels_first
from surgery.io import keras3_load
from surgery.io.artifact import ModelArtifact
from surgery.errors import NotSupportedError, SurgeryError, UnreadableModelError
from surgery.io.quiet import import_keras, quiet


def _one_line(error: Exception) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())[:400]


# Keras' own op classes that Keras 3 writes into a functional graph to compute masks
# (Embedding(mask_zero=True) -> NotEqual; Masking -> NotEqual, Any). Its legacy .h5 reader
# resolves class names against layers and custom objects only, so without them Keras 3
# cannot reload its own .h5 ("Unknown layer: 'NotEqual'"). They are Keras code, not the file's.
KERAS3_MASK_OPS = ("NotEqual", "Any")


def keras3_mask_ops() -> dict:
    from keras.src.ops import numpy as keras_numpy_ops

    return {name: getattr(keras_numpy_ops, name) for name in KERAS3_MASK_OPS}


class Keras3Family:
    name = "keras3"

    @property
    def keras(self):
        return import_keras()

    def load(self, path: str, *, custom_objects: dict, safe_mode: bool):
        keras = self.keras
        custom_objects = custom_objects_for(self.name, custom_objects)
        try:
            with quiet():
                # Keras' loader, less the initializer work it throws away (surgery.io.keras3_load).
                return keras3_load.load(path, custom_objects={**keras3_mask_ops(), **custom_objects},
                                        safe_mode=safe_mode)
        except SurgeryError:
            raise
        except Exception as error:
            raise UnreadableModelError(f"Keras could not load {path!r}: {_one_line(error)}") from None

    def serialize(self, model) -> dict:
        with quiet():
            # Through JSON so a live config has the exact shape of a saved one.
            return json.loads(json.dumps(self.keras.saving.serialize_keras_object(model)))

    def deserialize(self, config: dict, custom_objects=None):
        objects = {**keras3_mask_ops(), **custom_objects_for(self.name, custom_objects)}
        with quiet():
            # Keras pops keys from the config it deserializes: give it a copy.
            try:
                return self.keras.saving.deserialize_keras_object(copy.deepcopy(config), custom_objects=objects,
                                                                  safe_mode=True)
            except TypeError:
                if not isinstance(config, dict) or not config.get("compile_config"):
                    raise
            # The training loss or metric is the file's own (a plain function Keras saved by name
            # only) and cannot be found: the model computes without it, as load_model(compile=False).
            uncompiled = {key: value for key, value in config.items() if key != "compile_config"}
            return self.keras.saving.deserialize_keras_object(copy.deepcopy(uncompiled), custom_objects=objects,
                                                              safe_mode=True)

    def layer_config(self, layer) -> dict:
        return self.serialize(layer)

    def is_model(self, layer) -> bool:
        return isinstance(layer, self.keras.Model)

    def is_symbolic(self, value) -> bool:
        return isinstance(value, self.keras.KerasTensor)

    def flatten(self, value) -> list:
        return self.keras.tree.flatten(value)

    def node_of(self, model, layer, call_index: int):
        """The call_index-th call of `layer` inside `model`'s own graph (not probes, not its
        own construction node when it is a nested model)."""
        by_depth = getattr(model, "_nodes_by_depth", None) or {}
        graph_nodes = {id(node) for nodes in by_depth.values() for node in nodes}
        nodes = [n for n in layer._inbound_nodes if not graph_nodes or id(n) in graph_nodes]
        return nodes[call_index]

    def model_call_inputs(self, node) -> tuple[list, list]:
        """(the nested model's input tensors, its mask leaves with None placeholders)."""
        arguments = node.arguments
        return self.flatten(arguments.args[0]), _leaves(arguments.kwargs.get("mask"))

    def recurrent_call_parts(self, node) -> tuple:
        """(sequence tensor, explicit mask tensor or None, flat initial-state tensors)."""
        arguments = node.arguments
        mask = arguments.kwargs.get("mask")
        initial = arguments.kwargs.get("initial_state")
        return (arguments.args[0], mask if self.is_symbolic(mask) else None,
                self.flatten(initial) if initial is not None else [])

    def evaluate(self, model, tensors: list, values: list, masks=None) -> tuple[list, list]:
        """Values of inner tensors of `model`, and the masks Keras attached to them at run time."""
        keras = self.keras
        with quiet():
            probe = keras.Model(model.inputs, tensors)
            feed = values if len(values) > 1 else values[0]

            def run():
                if masks is not None and any(m is not None for m in masks):
                    outputs = probe(feed, training=False, mask=masks if len(masks) > 1 else masks[0])
                else:
                    outputs = probe(feed, training=False)
                outputs = as_list(outputs)
                # Masks are returned, not read off afterwards: an XLA retry keeps only results.
                return outputs, [getattr(v, "_keras_mask", None) for v in outputs]

            outputs, runtime_masks = channels_first.run(run)
            return [np.asarray(v) for v in outputs], [None if m is None else np.asarray(m)
                                                      for m in runtime_masks]

    def call(self, model, values: list) -> list:
        feed = values if len(values) > 1 else values[0]
        with quiet():
            outputs = channels_first.run(lambda: as_list(model(feed, training=False)))
        return [np.asarray(v) for v in outputs]

    def save(self, model, path: str, fmt: str) -> None:
        if fmt not in ("keras", "h5"):
            raise NotSupportedError(f"Keras 3 models are written as keras or h5 here, not {fmt!r}")
        with quiet():
            model.save(path)


class Keras2Family(Keras3Family):
    """tf_keras, the Keras 2 family (TensorFlow 2.0-2.15 models)."""

    name = "keras2"

    @property
    def keras(self):
        import_keras()  # silences TensorFlow first
        with quiet():
            import tf_keras
        return tf_keras

    def load(self, path: str, *, custom_objects: dict, safe_mode: bool):
        tf_keras = self.keras
        kwargs = {"custom_objects": custom_objects_for(self.name, custom_objects), "compile": False}
        if not os.path.isdir(path):
            kwargs["safe_mode"] = safe_mode
        try:
            with quiet():
                return tf_keras.models.load_model(path, **kwargs)
        except SurgeryError:
            raise
        except Exception as error:
            raise UnreadableModelError(f"tf_keras could not load {path!r}: {_one_line(error)}") from None

    def load_normalized(self, artifact: ModelArtifact, *, custom_objects: dict):
        """An HDF5 model built from the artifact's normalized config (keras2_compat), its
        weights read as tf_keras' own HDF5 loader reads them (same legacy conversions)."""
        import h5py

        self.keras  # imports tf_keras quietly first
        from tf_keras.src.saving.legacy import hdf5_format

        try:
            model = self.deserialize(artifact.model_config, custom_objects)
            with quiet(), h5py.File(artifact.path, "r") as handle:
                hdf5_format.load_weights_from_hdf5_group(handle["model_weights"], model)
            return model
        except SurgeryError:
            raise
        except Exception as error:
            raise UnreadableModelError(f"tf_keras could not load {artifact.path!r}: {_one_line(error)}") from None

    def serialize(self, model) -> dict:
        tf_keras = self.keras
        with quiet():
            config = {"class_name": model.__class__.__name__, "config": model.get_config()}
            if config["class_name"] not in ("Functional", "Sequential", "Model"):
                config = tf_keras.layers.serialize(model)
        return json.loads(json.dumps(config, default=_json_default))

    def deserialize(self, config: dict, custom_objects=None):
        tf_keras = self.keras
        with quiet():
            return tf_keras.models.model_from_json(json.dumps(config),
                                                   custom_objects=custom_objects_for(self.name, custom_objects))

    def layer_config(self, layer) -> dict:
        with quiet():
            return json.loads(json.dumps(self.keras.layers.serialize(layer), default=_json_default))

    def is_symbolic(self, value) -> bool:
        import tensorflow as tf

        return tf.is_tensor(value) and not hasattr(value, "numpy")

    def flatten(self, value) -> list:
        import tensorflow as tf

        return tf.nest.flatten(value)

    def node_of(self, model, layer, call_index: int):
        keys = getattr(model, "_network_nodes", set())
        nodes = [n for i, n in enumerate(layer._inbound_nodes) if f"{layer.name}_ib-{i}" in keys]
        return nodes[call_index]

    def model_call_inputs(self, node) -> tuple[list, list]:
        return list(self.flatten(node.input_tensors)), []

    def recurrent_call_parts(self, node) -> tuple:
        tensors = list(self.flatten(node.input_tensors))
        # tf_keras cannot output a mask from a probe; evaluate() reads it off the eager result.
        return tensors[0], None, tensors[1:]

    def evaluate(self, model, tensors: list, values: list, masks=None) -> tuple[list, list]:
        tf_keras = self.keras
        with quiet():
            probe = tf_keras.Model(model.inputs, tensors)
            outputs = as_list(probe(values if len(values) > 1 else values[0], training=False))
        return [np.asarray(v) for v in outputs], [_runtime_mask(v) for v in outputs]

    def save(self, model, path: str, fmt: str) -> None:
        with quiet():
            if fmt == "savedmodel":
                model.save(path, save_format="tf")
            elif fmt in ("keras", "h5"):
                model.save(path)
            else:
                raise NotSupportedError(f"unknown output format {fmt!r}")


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"not JSON-serializable in a model config: {value!r}")


def as_list(outputs) -> list:
    """A model's outputs (one tensor, a list/tuple, or a dict) as a list."""
    if isinstance(outputs, dict):
        return list(outputs.values())
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    return [outputs]


def _runtime_mask(tensor):
    mask = getattr(tensor, "_keras_mask", None)
    return None if mask is None else np.asarray(mask)


def _leaves(structure) -> list:
    """Flatten a mask structure keeping None placeholders (tree.flatten would drop them)."""
    if isinstance(structure, (list, tuple)):
        return [leaf for item in structure for leaf in _leaves(item)]
    return [structure]


FAMILIES = {"keras3": Keras3Family(), "keras2": Keras2Family()}


def get(name: str):
    try:
        return FAMILIES[name]
    except KeyError:
        raise NotSupportedError(f"unknown model family {name!r}") from None


def of_model(model):
    """The family a live model belongs to."""
    module = type(model).__module__
    return FAMILIES["keras2"] if module.startswith("tf_keras") else FAMILIES["keras3"]


def class_family(value) -> str | None:
    """'keras2' for a tf_keras class, 'keras3' for a Keras 3 one, None for anything else
    (a function, a plain class): what a --custom-objects entry can be used with."""
    if not isinstance(value, type):
        return None
    modules = [getattr(base, "__module__", "") or "" for base in value.__mro__]
    if any(m == "tf_keras" or m.startswith("tf_keras.") for m in modules):
        return "keras2"
    if any(m == "keras" or m.startswith("keras.") for m in modules):
        return "keras3"
    return None


def custom_objects_for(family: str, objects) -> dict:
    """The custom objects one family can use: a class of the other family is left out (it
    cannot live in this family's models), and a family's own definition of a name wins
    (`per_family`, kept by loading.load_custom_objects when a file defines both)."""
    objects = objects or {}
    view = {name: value for name, value in objects.items() if class_family(value) in (None, family)}
    view.update(getattr(objects, "per_family", {}).get(family, {}))
    return view


def load(artifact: ModelArtifact, *, custom_objects: dict, safe_mode: bool):
    from surgery.io import optimization

    custom_objects = custom_objects_for(artifact.family, custom_objects)
    if optimization.uses_wrappers(artifact.model_config):
        # Wrapper classes come from the installed tfmot, never from the file.
        custom_objects = {**optimization.custom_objects(), **custom_objects}
    if artifact.normalized and artifact.format == "h5":
        # The file's own config is an old form tf_keras misreads: build the normalized one.
        return get(artifact.family).load_normalized(artifact, custom_objects=custom_objects)
    return get(artifact.family).load(artifact.path, custom_objects=custom_objects, safe_mode=safe_mode)
