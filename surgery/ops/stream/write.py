"""`stream_file`: a saved model in, its step model written (Keras, SavedModel, TFLite; external or
internal state), verified after writing; `StreamResult`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


from surgery.errors import UsageError
from surgery.ops.stream.plan import (
    STATE_MODES,
    StreamPlan,
    DECLARED_PER_STEP,
    per_step_layers,
    undeclared_layers,
)
from surgery.ops.stream.config import step_config
from surgery.ops.stream.step import build_step_model, compiled_call
from surgery.ops.stream.stateful import StatefulStepModel
from surgery.ops.stream.verify import (
    StreamReport,
    VERIFY_BATCHES,
    VERIFY_LENGTH,
    VERIFY_STEPS,
    saved_external,
    saved_internal,
    tflite_internal,
    raise_if_failed,
    verify_backend,
    verify_internal,
    verify_streaming,
)


@dataclass(frozen=True)
class StreamResult:
    output: Path
    manifest: Path
    format: str                 # "savedmodel" or "keras"
    state: str                  # "external" or "internal"
    plan: StreamPlan
    report: StreamReport | None
    tflite: Path | None = None
    tflite_report: object | None = None  # tflite.OpReport
    input_model: object | None = None  # state_io.Plain: state I/O reused, Keras 2 translated

    def as_dict(self) -> dict:
        return {
            "input_model": self.input_model.as_dict() if self.input_model is not None else None,
            "ok": True,
            "output": str(self.output),
            "manifest": str(self.manifest),
            "format": self.format,
            "state": self.state,
            "stream": self.plan.as_dict(),
            "signature": {"inputs": list(self.signature_inputs), "outputs": list(self.signature_outputs)},
            "verification": self.report.as_dict() if self.report is not None else None,
            "tflite": str(self.tflite) if self.tflite else None,
            "tflite_ops": self.tflite_report.as_dict() if self.tflite_report is not None else None,
        }

    def lines(self) -> list[str]:
        plan = self.plan
        per_call = f"{plan.steps} step{'s' if plan.steps != 1 else ''} per call"
        batch = f"batch {plan.batch_size}" if plan.batch_size else "any batch"
        out = [f"wrote {self.output} ({self.format}, {self.state} state, {per_call}, {batch}) and {self.manifest.name}"]
        out += self.input_model.report_lines() if self.input_model is not None else []
        shapes_in = dict(zip(plan.input_names, plan.input_shapes))
        shapes_out = dict(zip(plan.output_names, plan.output_shapes))
        if self.state == "internal":
            states = ", ".join(f"{s.name} {_shape_text((plan.batch_size, *s.shape))}" for s in plan.states.outputs)
            out.append("signature serving_default: "
                       + ", ".join(f"{n} {_shape_text(shapes_in[n])}" for n in plan.original_inputs) + " -> "
                       + ", ".join(f"{n} {_shape_text(shapes_out[n])}" for n in plan.original_outputs))
            out.append(f"state variables (reset, read_state, assign_state): {states}")
        else:
            out.append("inputs:  " + ", ".join(f"{n} {_shape_text(shapes_in[n])}" for n in plan.input_names))
            out.append("outputs: " + ", ".join(f"{n} {_shape_text(shapes_out[n])}" for n in plan.output_names))
        changes = []
        if plan.per_step_sites:
            changes.append("per-step output from " + ", ".join(plan.per_step_sites) + " (return_sequences=False)")
        if plan.wrapped:
            changes.append("TimeDistributed around " + ", ".join(plan.wrapped))
        if plan.masked:
            changes.append("masked steps carry h in " + ", ".join(plan.masked))
        if plan.unrolled:
            changes.append("recurrent loops unrolled")
        if changes:
            out.append("step model: " + "; ".join(changes))
        if self.report is not None:
            out.append(self.report.summary())
        else:
            out.append("not verified (--no-verify)")
        if self.tflite is not None:
            out.append(f"wrote {self.tflite}: {self.tflite_report.summary()}")
        return out

    @property
    def signature_inputs(self) -> tuple[str, ...]:
        return self.plan.original_inputs if self.state == "internal" else self.plan.input_names

    @property
    def signature_outputs(self) -> tuple[str, ...]:
        return self.plan.original_outputs if self.state == "internal" else self.plan.output_names


def _shape_text(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def stream_file(source, output=None, *, state: str = "external", steps: int = 1, batch_size: int | None = None,
                tflite_path=None, verify: bool = True, force: bool = False, unsafe: bool = False,
                custom_objects=None, progress=None, verify_length: int = VERIFY_LENGTH,
                per_step: Iterable[str] = ()) -> StreamResult:
    """Write a step model of `source` (SavedModel directory, or .keras for external state;
    default <stem>.step beside it), optionally a .tflite beside, verified, atomically, with a
    manifest. per_step: layers (layer, class or registered names) to treat as acting on each
    timestep, e.g. a custom layer streaming would otherwise refuse."""
    with per_step_layers(per_step):
        return _stream_file(source, output, state=state, steps=steps, batch_size=batch_size,
                            tflite_path=tflite_path, verify=verify, force=force, unsafe=unsafe,
                            custom_objects=custom_objects, progress=progress, verify_length=verify_length)


def _stream_file(source, output, *, state, steps, batch_size, tflite_path, verify, force, unsafe,
                 custom_objects, progress, verify_length) -> StreamResult:
    from surgery.io import saving
    from surgery.io import writers
    from surgery.ops import pipeline, state_io

    if state not in STATE_MODES:
        raise UsageError(f"--state must be external or internal, received {state!r}")
    # The rule of every writing command: no -o, a default name beside the input (<stem>.step).
    output = Path(output) if output is not None else saving.default_output_path(source, "step", "savedmodel")
    fmt = {".keras": "keras", ".h5": "h5", ".hdf5": "h5"}.get(output.suffix.lower(), "savedmodel")
    if fmt == "h5":
        raise UsageError(f"a step model is written as a SavedModel directory or a .keras file, not {output.name!r}")
    if fmt == "keras" and state == "internal":
        raise UsageError("internal state lives in variables of a SavedModel: give a directory for -o, not .keras")
    tflite_path = Path(tflite_path) if tflite_path else None
    if tflite_path is not None and (
            tflite_path.resolve() in (output.resolve(), saving.manifest_path(output).resolve())
            or output.resolve() in tflite_path.resolve().parents):
        raise UsageError(f"--tflite {str(tflite_path)!r} collides with -o {str(output)!r} or its manifest")
    with pipeline.WriteJob("stream", force=force, unsafe=unsafe, custom_objects=custom_objects,
                           progress=progress) as job:
        artifact = job.open(source, needs="streaming")
        job.check(pipeline.Target.model(output, fmt),
                  *([pipeline.Target(tflite_path)] if tflite_path is not None else []))
        unknown = undeclared_layers(artifact.model_config, sorted(DECLARED_PER_STEP.get()))
        if unknown:
            raise UsageError(f"--per-step {unknown[0]!r}: no layer, class or registered name in the model is called so")
        # State I/O another command added is taken off here and redone under the same names.
        found = state_io.find_state_io(artifact.model_config, artifact.family, state_io.read_manifest(artifact.path))
        if artifact.family == "keras3":  # refuse what cannot stream before loading anything heavy
            step_config(state_io.strip_state_io(artifact.model_config, artifact.family, found), artifact.family,
                        steps=steps, batch_size=batch_size)
        plain = state_io.plain_model(artifact, keras3=True, unsafe=unsafe, custom_objects=custom_objects,
                                     progress=job.step)
        model = plain.model
        if state == "internal":
            batch_size = batch_size or 1
        job.step("building the step model")
        step_model, plan = build_step_model(model, steps=steps, batch_size=batch_size, custom_objects=custom_objects)
        report = None
        if verify:
            job.step(f"stepping through {verify_length} timesteps against the full-sequence model")
            # The arithmetic of streaming does not depend on a fixed batch: check batch 1 and 8 (and
            # the requested one) with any-batch step models; the written artifacts are checked below.
            batches = sorted({*VERIFY_BATCHES, *([batch_size] if batch_size else [])})
            report = verify_streaming(model, steps=sorted({*VERIFY_STEPS, steps}), batches=batches,
                                      length=verify_length, custom_objects=custom_objects)
            raise_if_failed(report)
        stateful = StatefulStepModel(step_model, plan) if state == "internal" else None
        converted = None

        def write(temps):
            nonlocal converted
            temp = temps[output]
            job.step(f"writing {fmt}")
            if stateful is not None:
                stateful.save(temp)
            elif fmt == "savedmodel":
                writers.export_savedmodel(step_model, temp, list(plan.input_names), list(plan.output_names))
            else:
                writers.save_keras_model(step_model, temp, "keras")
            if tflite_path is not None:
                from surgery.io import tflite

                job.step("converting to TFLite")
                converted = tflite.convert(stateful if stateful is not None else step_model, plan)
                temps[tflite_path].write_bytes(converted.content)

        def check_written(temps) -> StreamReport:
            _verify_written(temps[output], fmt, stateful, step_model, model, plan, report, converted, custom_objects)
            return report

        def manifests():
            # The .tflite is described by this manifest: it is moved in after it, with the model.
            extra = {
                "state": state,
                "stream": plan.as_dict(),
                "signatures": _signature_doc(plan, state),
                "tflite": ({"path": tflite_path.name, "ops": converted.report.as_dict()}
                           if converted is not None else None),
                "input_model": plain.as_dict(),
                "declared_per_step": sorted(DECLARED_PER_STEP.get()),
            }
            return {output: pipeline.ModelManifest(fmt, "keras3", plan.states, model_inputs=list(plan.input_names),
                                                   model_outputs=list(plan.output_names), extra=extra)}

        done = job.write(write, verify=check_written if verify else None, verify_step="verifying what was written",
                         manifests=manifests)
    return StreamResult(output, done.manifests[output], fmt, state, plan, report, tflite_path,
                        converted.report if converted is not None else None, plain)


def _signature_doc(plan: StreamPlan, state: str) -> dict:
    if state == "internal":
        names = [s.name for s in plan.states.outputs]
        return {
            "serving_default": {"inputs": list(plan.original_inputs), "outputs": list(plan.original_outputs)},
            "reset": {"inputs": [], "outputs": names},
            "read_state": {"inputs": [], "outputs": names},
            "assign_state": {"inputs": names, "outputs": names},
        }
    return {"serving_default": {"inputs": list(plan.input_names), "outputs": list(plan.output_names)}}


def _verify_written(temp: Path, fmt: str, stateful, step_model, model, plan: StreamPlan, report: StreamReport,
                    converted, custom_objects) -> None:
    from surgery.io import tflite

    keras_step = compiled_call(step_model)
    if stateful is not None:
        verify_internal("savedmodel", saved_internal(temp, plan), model, plan, report, custom_objects=custom_objects)
    elif fmt == "savedmodel":
        verify_backend("savedmodel", saved_external(temp, plan), model, plan, report, custom_objects=custom_objects)
    else:
        from surgery.io.loading import load_model

        reloaded = load_model(temp, custom_objects=custom_objects)
        verify_backend("keras file", compiled_call(reloaded), model, plan, report, custom_objects=custom_objects)
    if converted is not None:
        if stateful is not None:
            verify_internal("tflite", tflite_internal(converted.content, plan), model, plan, report,
                            custom_objects=custom_objects)
        else:
            verify_backend("tflite", tflite.external_step(converted.content, plan), model, plan, report,
                           keras_step=keras_step, custom_objects=custom_objects)
