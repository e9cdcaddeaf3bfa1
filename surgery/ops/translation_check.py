"""Is a Keras 3 translation of a Keras 2 model right? One CheckReport, however it can be checked here.

Where the Keras 2 original runs, the translation's outputs are compared with it under the
tolerance policy (in practice they are identical). Where it cannot (cuDNN-only layers and no
GPU), each recurrent layer of the translation, called on its actual inputs, is compared with
the NumPy oracle run on the weights stored in the Keras 2 file, whose cuDNN layouts are
converted independently of the translation's own weight assignment.
"""

from __future__ import annotations

import copy

import numpy as np

from surgery.check import tolerance
from surgery.check.cudnn_cpu import GPU_ONLY_CLASSES
from surgery.check.report import CheckReport
from surgery.errors import VerificationError
from surgery.io import families
from surgery.io.loading import load_model

CHECK_BATCH = 4


def check_translation(translated, *, original=None, artifact=None, values=None, unsafe=False,
                      custom_objects=None, data=None) -> CheckReport:
    """The translation against its Keras 2 original (a live model, or loaded from `artifact`);
    against the NumPy oracle on the file's own weights where the original cannot run here.
    `values`: the inputs to compare on (default: random ones, or the user's `data`)."""
    from surgery.check.verify import random_inputs, sequence_steps

    if values is None:
        values = random_inputs(translated, batch=CHECK_BATCH, data=data)
    batch = int(np.shape(values[0])[0]) if values else None
    reason = cannot_run_here(artifact) if artifact is not None else None
    if reason is not None:
        return CheckReport(
            what="the Keras 3 translation against the NumPy oracle",
            checks=oracle_checks(artifact, translated, values, unsafe=unsafe, custom_objects=custom_objects),
            checks_label="recurrent layer(s) vs the NumPy oracle on the file's own weights",
            note=f"the Keras 2 original cannot run here ({reason})", batch=batch, data=_named(data))
    if original is None:
        original = load_model(artifact, unsafe=unsafe, custom_objects=custom_objects)
    reference = families.of_model(original).call(original, values)
    got = families.of_model(translated).call(translated, values)
    steps = max((sequence_steps(v) for v in values), default=1)
    checks = {f"output {i}": tolerance.compare(b, a, tolerance.bound_for(a.dtype, steps=steps))
              for i, (a, b) in enumerate(zip(reference, got))}
    return CheckReport(what="the Keras 3 translation against the Keras 2 original", checks=checks,
                       checks_label="output(s) vs the Keras 2 original", batch=batch, data=_named(data))


def _named(data):
    return None if data is None else str(data)


def cannot_run_here(artifact) -> str | None:
    """Why the Keras 2 original cannot run on this machine, or None when it can
    (surgery.check.cudnn_cpu.cannot_run: cuDNN-only layers and no GPU)."""
    from surgery.check.cudnn_cpu import cannot_run

    return cannot_run(artifact.model_config)


def oracle_checks(artifact, translated, values, *, unsafe=False, custom_objects=None) -> dict:
    """Each recurrent layer of the translated model, called on its actual inputs, against the
    NumPy oracle run with the weights stored in the Keras 2 file (cuDNN layouts converted by
    surgery.graph.layouts, independently of the translation's weight assignment)."""
    from surgery.graph import layouts
    from surgery.check import oracle
    from surgery.graph.level import walk_values
    from surgery.graph.sites import find_sites
    from surgery.graph.translate import CUDNN_GATES, RENAMED_CLASSES
    from surgery.ops.translate import h5_layer_weights, live_layer_weights
    from surgery.check.verify import site_call_values, sequence_steps

    family = families.of_model(translated)
    if artifact.format == "h5":
        stored = h5_layer_weights(artifact.path)
    else:
        stored = live_layer_weights(load_model(artifact, unsafe=unsafe, custom_objects=custom_objects))
    entries = {item["config"]["name"]: item for item in _layer_entries(artifact.model_config)}
    comparisons = {}
    for site in find_sites(family.serialize(translated), family.name):
        layer, sequence, mask, initial = site_call_values(family, translated, values, site)
        if layer.name not in stored:
            raise VerificationError(f"no stored weights for recurrent layer {layer.name!r} to check it against")
        weights = stored[layer.name]
        # The file's own layer config, read with Keras 2 semantics; a cuDNN class becomes the
        # layer with the cuDNN kernel's fixed semantics, not whatever the translation wrote.
        config, source_family = copy.deepcopy(entries.get(layer.name)), "keras2"
        if config is None:
            config, source_family = family.layer_config(layer), family.name
        for item in walk_values(config):
            if isinstance(item, dict) and item.get("class_name") in GPU_ONLY_CLASSES:
                cls = item["class_name"]
                item["class_name"], fixed = RENAMED_CLASSES[cls]
                item["config"].update(fixed)
        if entries.get(layer.name, {}).get("class_name") in GPU_ONLY_CLASSES:
            weights = layouts.cudnn_to_keras(weights, CUDNN_GATES[entries[layer.name]["class_name"]])
        inner = entries.get(layer.name, {}).get("config", {}).get("layer")
        if isinstance(inner, dict) and inner.get("class_name") in GPU_ONLY_CLASSES:
            half = len(weights) // 2  # Bidirectional: forward then backward, each in cuDNN layout
            weights = (layouts.cudnn_to_keras(weights[:half], CUDNN_GATES[inner["class_name"]])
                       + layouts.cudnn_to_keras(weights[half:], CUDNN_GATES[inner["class_name"]]))
        want, _states = oracle.run_layer(config, [np.asarray(w, np.float64) for w in weights],
                                         np.asarray(sequence, np.float64),
                                         mask=None if mask is None else np.asarray(mask, bool),
                                         initial_state=initial, family=source_family)
        got = _layer_output(layer, sequence, mask, initial)
        bound = tolerance.bound_for(np.asarray(got).dtype, steps=sequence_steps(sequence))
        comparisons[layer.name] = tolerance.compare(got, want, bound)
    if not comparisons:
        raise VerificationError("the translated model has no recurrent layer to check against the NumPy oracle")
    return comparisons


def _layer_entries(config):
    from surgery.graph.level import walk_values

    return [item for item in walk_values(config)
            if isinstance(item, dict) and isinstance(item.get("config"), dict) and "class_name" in item
            and isinstance(item["config"].get("name"), str)]


def _layer_output(layer, sequence, mask, initial):
    """A Keras 3 recurrent layer's first output on the given call inputs."""
    kwargs = {}
    if mask is not None:
        kwargs["mask"] = np.asarray(mask, bool)
    if initial:
        kwargs["initial_state"] = [np.asarray(s) for s in initial]
    out = layer(np.asarray(sequence), training=False, **kwargs)
    return np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
