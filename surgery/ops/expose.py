"""expose-state: recurrent states become extra model outputs and/or inputs."""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from surgery.check import cudnn_cpu
from surgery.check.report import raise_if_failed
from surgery.errors import NotSupportedError
from surgery.graph.rewire import RewirePlan, rewire_states
from surgery.graph.sites import find_sites
from surgery.io import families, formats, layer_pairs, saving, writers
from surgery.io.artifact import ModelArtifact
from surgery.io.loading import load_model
from surgery.io.quiet import quiet
from surgery.io.safety import ensure_artifact_safe
from surgery.ops import pipeline, state_io, translation_check


def expose_state(model, layers: Iterable[str] | None = None, outputs: bool = True, inputs: bool = False):
    """Return a new Keras model whose selected recurrent states are outputs and/or inputs.

    The input model is not modified. States are named `<site>_<role>` (outputs) and
    `<site>_<role>_in` (inputs); see `plan_for(model, ...)` for the full plan.
    """
    rebuilt, _plan = rebuild_with_states(model, layers=layers, outputs=outputs, inputs=inputs)
    return rebuilt


def rebuild_with_states(model, *, layers=None, outputs=True, inputs=False, custom_objects=None):
    """(new model, plan): rewire the model's own serialization, then copy its weights over."""
    family = families.of_model(model)
    config = family.serialize(model)
    new_config, plan = rewire_states(config, family.name, layers=layers, outputs=outputs, inputs=inputs)
    rebuilt = family.deserialize(new_config, custom_objects)
    transfer_weights(model, rebuilt)
    return rebuilt, plan


def build_from_config(config: dict, *, custom_objects=None, family: str = "keras3"):
    return families.get(family).deserialize(config, custom_objects)


def transfer_weights(source, target) -> None:
    """Copy weights layer by layer, matched by name through nested models."""
    for layer, origin in layer_pairs.matched_layers(source, target, is_model=families.of_model(target).is_model):
        layer.set_weights(origin.get_weights())


@dataclass(frozen=True)
class WriteResult:
    output: Path
    manifest: Path
    plan: RewirePlan
    format: str
    fast_path: bool
    report: object | None  # VerifyReport when verified
    reused: object | None = None  # state_io.StateIO the input already had
    already_exposed: bool = False  # the input already had exactly this state I/O


def expose_state_file(
    source: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    layers: Iterable[str] | None = None,
    outputs: bool = True,
    inputs: bool = False,
    fmt: str | None = None,
    verify: bool = True,
    force: bool = False,
    unsafe: bool = False,
    custom_objects: dict | None = None,
    progress=None,
    to: str | None = None,
    strip: bool = False,
    data=None,
) -> WriteResult:
    """File-to-file expose-state: rewrite, write atomically, verify, then rename into place.

    Results stay in the input's Keras family; `to="keras3"` translates a Keras 2 model first.
    """
    with pipeline.WriteJob("expose-state", force=force, unsafe=unsafe, custom_objects=custom_objects,
                           progress=progress) as job:
        artifact = job.open(source, needs="expose-state")
        translate_to_keras3 = to == "keras3" and artifact.family == "keras2"
        if translate_to_keras3 or strip:
            return _expose_live(job, artifact, output, strip=strip, to_keras3=translate_to_keras3, layers=layers,
                                outputs=outputs, inputs=inputs, fmt=fmt, verify=verify, data=data)
        # State I/O already there (from any command) is taken off and redone under the same names,
        # together with what is asked now: exposing twice changes nothing.
        found = state_io.find_state_io(artifact.model_config, artifact.family, state_io.read_manifest(artifact.path))
        reference = None
        if found:
            artifact = dataclasses.replace(
                artifact, model_config=state_io.strip_state_io(artifact.model_config, artifact.family, found))
            layers = sorted({*layers, *found.sites}) if layers else None
            outputs, inputs = outputs or bool(found.outputs), inputs or bool(found.inputs)
            reference = functools.partial(_plain_model, job, artifact.path)
        new_config, plan = rewire_states(
            artifact.model_config, artifact.family, layers=layers, outputs=outputs, inputs=inputs
        )
        result = write_rewired(job, artifact, new_config, plan, output, tag="exposed", fmt=fmt, verify=verify,
                               data=data, reference=reference)
    if found:
        same = ({s.name for s in plan.outputs} == set(found.outputs)
                and {s.name for s in plan.inputs} == set(found.inputs))
        result = dataclasses.replace(result, reused=found, already_exposed=same)
    return result


def _plain_model(job: pipeline.WriteJob, path):
    """The file as a live model without the state I/O it already had (what a re-exposed result
    is checked against)."""
    return state_io.plain_model(path, unsafe=job.unsafe, custom_objects=job.custom_objects, progress=job.step).model


def _expose_live(job: pipeline.WriteJob, artifact: ModelArtifact, output, *, strip, to_keras3, layers, outputs,
                 inputs, fmt, verify, data=None) -> WriteResult:
    """Operate on a transformed live model: wrappers stripped (tfmot) and/or translated to Keras 3."""
    from surgery.io import optimization
    from surgery.ops import translate

    output, fmt = _output_of(artifact, output, fmt, "exposed", default_format="keras" if to_keras3 else None)
    job.check(pipeline.Target.model(output, fmt))
    model = job.load(artifact)
    if strip:
        job.step("stripping model-optimization wrappers")
        model = optimization.strip(model)
    translation = None
    if to_keras3:
        job.step("translating to Keras 3")
        keras2_model = model
        model, _notes = (translate.translate_live(model, custom_objects=job.custom_objects, command="expose-state")
                         if strip else translate.translate(artifact, custom_objects=job.custom_objects,
                                                           unsafe=job.unsafe, command="expose-state"))
        if verify:
            # The written model is checked against the translation below; the translation is
            # checked here against the Keras 2 model it came from, as `convert` does.
            job.step("checking the translation against the Keras 2 original")
            translation = raise_if_failed(translation_check.check_translation(
                model, original=keras2_model, artifact=None if strip else artifact, unsafe=job.unsafe,
                custom_objects=job.custom_objects, data=data))
    family = families.of_model(model)
    config = family.serialize(model)
    new_config, plan = rewire_states(config, family.name, layers=layers, outputs=outputs, inputs=inputs)
    live = dataclasses.replace(artifact, family=family.name, model_config=config,
                               format="keras" if to_keras3 else artifact.format)
    return _write_checked(job, live, new_config, plan, output, fmt, fast=False, verify=verify, data=data,
                          original_model=model, translation=translation)


def _output_of(artifact: ModelArtifact, output, fmt, tag: str, default_format=None) -> tuple[Path, str]:
    """(output path, format): -o and --format as given, else <stem>.<tag> in the input's format."""
    fmt = saving.infer_format(output, fmt) if output is not None else (fmt or default_format or artifact.format)
    output = Path(output) if output is not None else saving.default_output_path(artifact.path, tag, fmt)
    return output, fmt


def write_rewired(job: pipeline.WriteJob, artifact: ModelArtifact, new_config: dict, plan: RewirePlan, output, *,
                  tag: str, fmt=None, verify=True, data=None, reference=None) -> WriteResult:
    """Write a rewired config of an opened file as a verified artifact, through `job` (its outputs
    not yet checked). The weights are copied byte for byte when the format and layout allow.

    reference: a callable giving what the result is verified against when that is not the file
    (the file without the state I/O it already had).
    """
    output, fmt = _output_of(artifact, output, fmt, tag)
    fast = fmt == artifact.format and fmt in ("keras", "h5") and not plan.weights_layout_changed
    if not fast:
        _refuse_rebuilding_gpu_only_layers(artifact, fmt)
    # A .keras copy reads its source once: the hash checks the members' CRCs on the way.
    one_read = fast and fmt == "keras"
    job.check(pipeline.Target.model(output, fmt),
              hashes=pipeline.in_background(formats.keras_zip.sha256_checking_members) if one_read else None)
    return _write_checked(job, artifact, new_config, plan, output, fmt, fast=fast, verify=verify, data=data,
                          reference=reference)


def _refuse_rebuilding_gpu_only_layers(artifact: ModelArtifact, fmt: str) -> None:
    """tf_keras reads CuDNNLSTM / CuDNNGRU only from their own HDF5 file (its legacy loader):
    it cannot rebuild them from a config, nor read back a .keras file it wrote of them, and
    their SavedModel needs a GPU to trace. Only the .h5 written from the .h5 (config replaced,
    weights copied) or a Keras 3 translation can hold such a model."""
    if artifact.family != "keras2":
        return
    found = cudnn_cpu.gpu_only_classes(artifact.model_config)
    if found:
        keep = "write it as HDF5 (-o NAME.h5), or " if artifact.format == "h5" else ""
        raise NotSupportedError(
            f"tf_keras cannot rebuild {' and '.join(found)} layers as {fmt!r}: {keep}translate the model "
            "with --to keras3 (LSTM/GRU with the cuDNN semantics)")


def _write_checked(job: pipeline.WriteJob, artifact: ModelArtifact, new_config: dict, plan: RewirePlan,
                   output: Path, fmt: str, *, fast: bool, verify: bool, data=None, original_model=None,
                   reference=None, translation=None) -> WriteResult:
    """Stage, write, verify and commit a rewired config (its output checked).

    original_model: the live model the config came from, when it is not the file itself (a
    translation); the weights then come from it rather than from the file.
    translation: the passed check of that translation against its Keras 2 original, reported
    with the written model's own check.
    """
    one_read = fast and fmt == "keras"
    family = families.get(artifact.family)
    original, rebuilt_live = original_model, None

    def write(temps):
        nonlocal original, rebuilt_live
        temp = temps[output]
        if fast:
            job.step("writing (weights copied byte for byte)")
            _write_config_only(artifact, new_config, temp, fmt, crcs_checked=one_read)
            if one_read:
                # Flushed to disk while the hash finishes (the commit's own fsync is then quick).
                saving.fsync(temp)
                job.sha256()  # a corrupt member fails here, before anything loads it
            return
        if original is None:
            original = job.load(artifact)
        rebuilt_live = family.deserialize(new_config, job.custom_objects)
        transfer_weights(original, rebuilt_live)
        job.step(f"writing {fmt}")
        _write_live(family, rebuilt_live, temp, fmt, plan)

    def check_written(temps):
        against = reference() if reference is not None else original
        report = _verify_written(artifact, temps[output], fmt, new_config, plan, against, rebuilt_live,
                                 unsafe=job.unsafe, custom_objects=job.custom_objects, data=data)
        if translation is not None:
            report.note = "; ".join(filter(None, [report.note, "translation " + translation.summary()]))
            report.facts["translation"] = translation.as_dict()
        return report

    def manifests():
        return {output: pipeline.ModelManifest(fmt, artifact.family, plan, model_inputs=_config_inputs(new_config),
                                               model_outputs=_config_outputs(new_config, plan))}

    done = job.write(write, verify=check_written if verify else None, manifests=manifests)
    return WriteResult(output, done.manifests[output], plan, fmt, fast, done.report)


def _write_config_only(artifact: ModelArtifact, new_config: dict, temp: Path, fmt: str, *,
                       crcs_checked: bool = False) -> None:
    if fmt == "keras":
        formats.write_keras_zip(artifact.path, temp, new_config, crcs_checked=crcs_checked)
    else:
        formats.write_h5_with_config(artifact.path, temp, new_config)


def _write_live(family, model, temp: Path, fmt: str, plan: RewirePlan) -> None:
    if fmt == "savedmodel" and family.name == "keras3":
        # Keras 3 cannot save a SavedModel it could load back: export a serving signature.
        input_names, output_names = writers.signature_names(model, plan)
        writers.export_savedmodel(model, temp, input_names, output_names)
    else:
        family.save(model, str(temp), fmt)


def _verify_written(artifact, temp: Path, fmt: str, new_config, plan, original, rebuilt_live, *,
                    unsafe, custom_objects, data=None):
    from surgery.check.verify import verify

    if original is None:
        original = load_model(artifact, unsafe=unsafe, custom_objects=custom_objects)
    if fmt == "savedmodel" and artifact.family == "keras3":
        reloaded = _SavedModelAdapter(temp, rebuilt_live, plan)
    elif rebuilt_live is None and fmt == "keras" and artifact.family == "keras3":
        reloaded = _written_sharing_weights(artifact, temp, original, unsafe=unsafe, custom_objects=custom_objects)
    else:
        reloaded = load_model(temp, unsafe=unsafe, custom_objects=custom_objects)
    sites = find_sites(new_config, artifact.family)
    report = verify(original, reloaded, plan, sites, data=data)
    return raise_if_failed(report)


def _written_sharing_weights(artifact, temp: Path, original, *, unsafe, custom_objects):
    """The written .keras file as a live model, without loading its weights a second time.

    Its weights member was copied byte for byte: its CRC-32 is checked to equal the source
    member's (itself checked against the source bytes during the copy), so the original's
    weights are the written ones and the rebuilt model shares them. Its config is read back
    from the written file and scanned like any loaded file before Keras builds it.
    """
    from surgery.io import keras3_load
    from surgery.errors import VerificationError
    from surgery.io.formats import keras_zip

    written = formats.read_artifact(temp)
    ensure_artifact_safe(written, allow_unsafe=unsafe, trusted=(custom_objects or {}).keys())
    source_crc = keras_zip.member_crc32(artifact.path, keras_zip.WEIGHTS_MEMBER)
    if keras_zip.member_crc32(temp, keras_zip.WEIGHTS_MEMBER) != source_crc:
        raise VerificationError(f"the written weights of {str(temp)!r} differ from the source's")
    # A class of the other family cannot live in a Keras 3 model (families.custom_objects_for).
    pick = getattr(families, "custom_objects_for", lambda _family, objects: objects or {})
    custom = pick("keras3", custom_objects)
    return keras3_load.build_sharing(written.model_config, original, custom_objects=custom, safe_mode=not unsafe)


class _SavedModelAdapter:
    """Calls a reloaded SavedModel's serving signature like a Keras model.

    The numbers compared come from the reloaded SavedModel; graph structure (to probe a
    site's inputs for the oracle) comes from the live rebuilt model it was exported from.
    """

    def __init__(self, directory: Path, live_model, plan: RewirePlan):
        from surgery.io.quiet import import_tensorflow

        tf = import_tensorflow()
        with quiet():
            loaded = tf.saved_model.load(str(directory))
        self._keep_alive = loaded
        self._signature = loaded.signatures["serving_default"]
        self._input_names, self._output_names = writers.signature_names(live_model, plan)
        self.live_model = live_model
        self.inputs = live_model.inputs
        self.layers = live_model.layers

    def __call__(self, values, training=False):
        values = values if isinstance(values, list) else [values]
        result = self._signature(**dict(zip(self._input_names, values)))
        return [result[name] for name in self._output_names]

    def get_layer(self, name):
        return self.live_model.get_layer(name)


def _config_inputs(config: dict) -> list:
    return _refs(config["config"].get("input_layers"))


def _config_outputs(config: dict, plan: RewirePlan) -> list:
    return _refs(config["config"].get("output_layers"))


def _refs(structure) -> list:
    if isinstance(structure, list) and len(structure) == 3 and isinstance(structure[0], str):
        return [structure[0]]
    if isinstance(structure, dict):
        return list(structure.keys())
    return [item[0] for item in structure or []]
