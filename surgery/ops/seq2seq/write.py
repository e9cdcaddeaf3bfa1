"""`split_seq2seq_file`: a saved model in, encoder.keras and decoder_step.keras written with their
manifests, checked step by step; `format_result`, `result_dict`.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from pathlib import Path


from surgery.io import formats, saving
from surgery.io import writers
from surgery.check.report import raise_if_failed
from surgery.errors import UsageError
from surgery.ops.seq2seq.plan import DECODER_FILE, ENCODER_FILE, OPERATION, SplitPlan
from surgery.ops.seq2seq.run import StepReport, check_stepwise, input_names, split_seq2seq


@dataclass(frozen=True)
class SplitResult:
    outdir: Path
    encoder: Path
    decoder: Path
    encoder_manifest: Path
    decoder_manifest: Path
    plan: SplitPlan
    report: StepReport | None
    input_model: object | None = None  # state_io.Plain: state I/O reused, Keras 2 translated


def split_seq2seq_file(source, outdir=None, *, force: bool = False, verify: bool = True, unsafe: bool = False,
                       custom_objects: dict | None = None, progress=None) -> SplitResult:
    """Write OUTDIR/encoder.keras and OUTDIR/decoder_step.keras (atomically, with manifests).

    With `verify`, both files are reloaded before they are renamed into place and checked
    step by step against the training model's teacher-forced outputs; nothing is written when
    that check fails.
    """
    from surgery.io.loading import load_model
    from surgery.io.safety import ensure_artifact_safe

    step = progress or (lambda _message: None)
    artifact = formats.read_artifact(source)
    if artifact.weights_only:
        raise UsageError(f"{str(source)!r} holds weights only; split-seq2seq needs a full model file")
    ensure_artifact_safe(artifact, allow_unsafe=unsafe, trusted=(custom_objects or {}).keys())
    outdir = Path(outdir) if outdir is not None else saving.default_output_path(artifact.path, "split", "savedmodel")
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"output {str(outdir)!r} exists and is not a directory")
    saving.check_disjoint(artifact.path, outdir)  # never onto, into or around the input
    targets = [outdir / ENCODER_FILE, outdir / DECODER_FILE]
    if outdir.is_dir():
        for target in targets:
            saving.check_output(artifact.path, target, force, directory=False)
    from surgery.ops import state_io

    # State I/O another command added is taken off; a Keras 2 model is translated (and checked).
    plain = state_io.plain_model(artifact, keras3=True, unsafe=unsafe, custom_objects=custom_objects, progress=step)
    original = plain.model
    step("splitting")
    split = split_seq2seq(original, custom_objects=custom_objects)
    created = saving.make_output_directory(outdir)
    hasher = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    source_hash = hasher.submit(writers.sha256_of, artifact.path)
    hasher.shutdown(wait=False)
    report = None
    plan = split.plan
    try:
        with saving.staged_outputs(force=force) as outputs:
            enc_temp, dec_temp = outputs.temp(targets[0]), outputs.temp(targets[1])
            step("writing")
            writers.save_keras_model(split.encoder, enc_temp, "keras")
            writers.save_keras_model(split.decoder, dec_temp, "keras")
            if verify:
                step("verifying")
                encoder = load_model(enc_temp, unsafe=unsafe, custom_objects=custom_objects)
                decoder = load_model(dec_temp, unsafe=unsafe, custom_objects=custom_objects)
                report = raise_if_failed(check_stepwise(original, encoder, decoder))
            manifests = {}
            for target, role, model, rewire_plan in ((targets[0], "encoder", split.encoder, plan.encoder_plan),
                                                     (targets[1], "decoder_step", split.decoder, plan.decoder_plan)):
                manifests[target] = writers.build_manifest(
                    artifact=target, fmt="keras", family="keras3", operation=OPERATION, plan=rewire_plan,
                    source=artifact.path, source_sha256=source_hash.result(),
                    model_inputs=input_names(model), model_outputs=list(model.output_names),
                    extra={"role": role, "split": plan.as_dict(), "input_model": plain.as_dict(),
                           "verification": report.as_dict() if report is not None else None},
                )
            placed = outputs.commit(manifests)  # both manifests, then both models
    except BaseException:
        if created:
            _remove_if_empty(outdir)
        raise
    return SplitResult(outdir, targets[0], targets[1], placed[targets[0]], placed[targets[1]], plan, report, plain)


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass


def format_result(result: SplitResult) -> str:
    """The human-readable report the CLI prints."""
    plan = result.plan
    enc, dec = plan.encoder_plan, plan.decoder_plan

    def states(items):
        return ", ".join(f"{s.name} (None, {', '.join(str(d) for d in s.shape)})" for s in items)

    lines = [
        f"wrote {result.encoder} and {result.encoder_manifest.name}",
        f"wrote {result.decoder} and {result.decoder_manifest.name}",
        *(result.input_model.report_lines() if result.input_model is not None else []),
        f"encoder:      {', '.join(plan.encoder_inputs)} -> {states(enc.outputs)}",
        f"decoder step: {', '.join(plan.decoder_inputs)} + {', '.join(s.name for s in dec.inputs)} "
        f"-> {', '.join(plan.original_outputs)} + {states(dec.outputs)}",
        "hand-over:    " + ", ".join(f"{h.source} -> {h.name}" for h in plan.handovers),
    ]
    if plan.zero_start:
        lines.append(f"note: {', '.join(plan.zero_start)} start(s) from zero states (not handed over by the encoder)")
    lines.append(result.report.summary() if result.report is not None else "not verified (--no-verify)")
    return "\n".join(lines)


def result_dict(result: SplitResult) -> dict:
    return {
        "ok": True,
        "outdir": str(result.outdir),
        "encoder": str(result.encoder),
        "decoder_step": str(result.decoder),
        "manifests": [str(result.encoder_manifest), str(result.decoder_manifest)],
        **result.plan.as_dict(),
        "verification": result.report.as_dict() if result.report is not None else None,
        "input_model": result.input_model.as_dict() if result.input_model is not None else None,
    }
