"""convert: upgrade a Keras 2 (tf.keras / tf_keras) model file to a Keras 3 `.keras` file."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from surgery.io import families, saving
from surgery.errors import UsageError, VerificationError
from surgery.io.loading import load_model
from surgery.ops import pipeline
from surgery.ops.translate import translate
from surgery.check.verify import random_inputs


@dataclass(frozen=True)
class ConvertResult:
    output: Path
    manifest: Path
    notes: list
    max_abs_diff: float | None  # vs the Keras 2 original; None when it cannot run here
    verified: bool
    check: str | None = None    # the one-line check, naming its bound (and the oracle fallback)


def convert_file(source: str | os.PathLike, output: str | os.PathLike | None = None, *, verify: bool = True,
                 force: bool = False, unsafe: bool = False, custom_objects=None, progress=None,
                 data=None) -> ConvertResult:
    """data: the user's inputs to verify on (see surgery.check.verify.load_inputs), else random ones."""
    with pipeline.WriteJob("convert", force=force, unsafe=unsafe, custom_objects=custom_objects,
                           progress=progress) as job:
        artifact = job.open(source, needs="convert")
        if artifact.family != "keras2":
            raise UsageError(f"{str(source)!r} is already a Keras 3 model (Keras {artifact.keras_version})")
        output = Path(output) if output is not None else saving.default_output_path(artifact.path, "keras3", "keras")
        if saving.infer_format(output) != "keras":
            raise UsageError(f"convert writes a Keras 3 .keras file; received output {str(output)!r}")
        job.check(pipeline.Target(output))
        job.step("translating to Keras 3")
        model, notes = translate(artifact, custom_objects=custom_objects, unsafe=unsafe, command="convert")

        def write(temps):
            job.step("writing .keras")
            families.get("keras3").save(model, str(temps[output]), "keras")

        def check_written(temps) -> dict:
            diff, check = _verify(artifact, temps[output], model, unsafe=unsafe, custom_objects=custom_objects,
                                  notes=notes, data=data)
            return {"ok": True, "max_abs_diff_vs_keras2": diff, "check": check}

        def manifests():
            return {output: pipeline.ModelManifest(
                "keras", "keras3", model_inputs=[t.name for t in model.inputs],
                model_outputs=list(getattr(model, "output_names", None) or [t.name for t in model.outputs]),
                extra={"notes": notes})}

        done = job.write(write, verify=check_written if verify else None, manifests=manifests)
    report = done.report or {}
    return ConvertResult(output, done.manifests[output], notes, report.get("max_abs_diff_vs_keras2"), verify,
                         report.get("check"))


def _verify(artifact, written: Path, model, *, unsafe, custom_objects, notes, data=None) -> tuple[float | None, str]:
    """The written file must reproduce the in-memory translation exactly, and the Keras 2
    original within the tolerance policy (in practice identically). Where the original
    cannot run here (CuDNN layers, no GPU) its recurrent layers are checked against the NumPy
    oracle on the file's own weights instead. Returns (max |diff| vs the original or None,
    the one-line description of the check). Any other failure propagates."""
    from surgery.check import tolerance
    from surgery.check.verify import sequence_steps

    keras3 = families.get("keras3")
    reloaded = keras3.load(str(written), custom_objects=custom_objects or {}, safe_mode=not unsafe)
    values = random_inputs(model, batch=4, data=data)
    translated = keras3.call(model, values)
    again = keras3.call(reloaded, values)
    if any(not np.array_equal(a, b, equal_nan=True) for a, b in zip(translated, again)):
        raise VerificationError(f"the written {str(written)!r} does not reproduce the translated model")
    reason = cannot_run_here(artifact)
    if reason is not None:
        check = oracle_check(artifact, reloaded, values, unsafe=unsafe, custom_objects=custom_objects)
        text = check.describe(f"the Keras 2 original cannot run here ({reason}): its recurrent layers "
                              "vs the NumPy oracle on the file's own weights")
        if not check.ok:
            raise VerificationError(text)
        return None, text
    original = load_model(artifact, unsafe=unsafe, custom_objects=custom_objects)
    reference = families.of_model(original).call(original, values)
    steps = max((sequence_steps(v) for v in values), default=1)
    check = tolerance.worst(
        tolerance.compare(b, a, tolerance.bound_for(a.dtype, steps=steps)) for a, b in zip(reference, translated))
    text = check.describe("outputs vs the Keras 2 original")
    if not check.ok:
        raise VerificationError(f"the Keras 3 translation differs from the Keras 2 original: {text}")
    return check.max_abs_diff, text


from surgery.check.cudnn_cpu import GPU_ONLY_CLASSES  # noqa: E402  (re-exported)


def cannot_run_here(artifact) -> str | None:
    """Why the Keras 2 original cannot run on this machine, or None when it can
    (surgery.check.cudnn_cpu.cannot_run: cuDNN-only layers and no GPU)."""
    from surgery.check.cudnn_cpu import cannot_run

    return cannot_run(artifact.model_config)


def oracle_check(artifact, translated, values, *, unsafe=False, custom_objects=None):
    """Each recurrent layer of the translated model, called on its actual inputs, against the
    NumPy oracle run with the weights stored in the Keras 2 file (cuDNN layouts converted by
    surgery.graph.layouts, independently of the translation's weight assignment)."""
    from surgery.graph import layouts
    from surgery.check import oracle, tolerance
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
    comparisons = []
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
        comparisons.append(tolerance.compare(got, want, bound))
    if not comparisons:
        raise VerificationError("the translated model has no recurrent layer to check against the NumPy oracle")
    return tolerance.worst(comparisons)


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
