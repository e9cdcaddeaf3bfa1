"""convert: upgrade a Keras 2 (tf.keras / tf_keras) model file to a Keras 3 `.keras` file."""

from __future__ import annotations

import concurrent.futures
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from surgery import families, formats, saving
from surgery.errors import UsageError, VerificationError
from surgery.loading import load_model
from surgery.safety import ensure_artifact_safe
from surgery.translate import translate
from surgery.verify import random_inputs


@dataclass(frozen=True)
class ConvertResult:
    output: Path
    manifest: Path
    notes: list
    max_abs_diff: float | None  # vs the Keras 2 original; None when it cannot run here
    verified: bool


def convert_file(source: str | os.PathLike, output: str | os.PathLike | None = None, *, verify: bool = True,
                 force: bool = False, unsafe: bool = False, custom_objects=None, progress=None) -> ConvertResult:
    step = progress or (lambda _message: None)
    artifact = formats.read_artifact(source)
    if artifact.weights_only:
        raise UsageError(f"{str(source)!r} holds weights only; convert needs a full model file")
    if artifact.family != "keras2":
        raise UsageError(f"{str(source)!r} is already a Keras 3 model (Keras {artifact.keras_version})")
    ensure_artifact_safe(artifact, allow_unsafe=unsafe, trusted=(custom_objects or {}).keys())
    output = Path(output) if output is not None else saving.default_output_path(artifact.path, "keras3", "keras")
    if saving.infer_format(output) != "keras":
        raise UsageError(f"convert writes a Keras 3 .keras file; received output {str(output)!r}")
    saving.check_output(artifact.path, output, force, directory=False)
    hasher = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    source_hash = hasher.submit(saving.sha256_of, artifact.path)
    hasher.shutdown(wait=False)
    step("translating to Keras 3")
    model, notes = translate(artifact, custom_objects=custom_objects, unsafe=unsafe)
    keras3 = families.get("keras3")
    diff = None
    with saving.staged_outputs(force=force) as outputs:
        temp = outputs.temp(output)
        step("writing .keras")
        keras3.save(model, str(temp), "keras")
        if verify:
            step("verifying")
            diff = _verify(artifact, temp, model, unsafe=unsafe, custom_objects=custom_objects, notes=notes)
        manifest = saving.build_manifest(
            artifact=output, fmt="keras", family="keras3", operation="convert", plan=None,
            source=artifact.path, source_sha256=source_hash.result(),
            model_inputs=[t.name for t in model.inputs], model_outputs=list(getattr(model, "output_names", None) or [t.name for t in model.outputs]),
            extra={"notes": notes, "verification": None if not verify else
                   {"ok": True, "max_abs_diff_vs_keras2": diff}},
        )
        manifest_file = outputs.commit({output: manifest})[output]
    return ConvertResult(output, manifest_file, notes, diff, verify)


def _verify(artifact, written: Path, model, *, unsafe, custom_objects, notes) -> float | None:
    """The written file must reproduce the in-memory translation exactly, and the Keras 2
    original (where it can run here) within 1e-5 — in practice identically."""
    keras3 = families.get("keras3")
    reloaded = keras3.load(str(written), custom_objects=custom_objects or {}, safe_mode=not unsafe)
    values = random_inputs(model, batch=4)
    translated = keras3.call(model, values)
    again = keras3.call(reloaded, values)
    if any(not np.array_equal(a, b) for a, b in zip(translated, again)):
        raise VerificationError(f"the written {str(written)!r} does not reproduce the translated model")
    try:
        original = load_model(artifact, unsafe=unsafe, custom_objects=custom_objects)
        reference = families.of_model(original).call(original, values)
    except Exception as error:  # e.g. CuDNN layers: GPU-only kernels on a CPU machine
        reason = " ".join(str(error).split())[:160]
        notes.append(f"the Keras 2 original cannot run on this machine ({type(error).__name__}: {reason}); "
                     "compared the written file with the translation only")
        return None
    diff = max(float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) for a, b in zip(reference, translated))
    if diff > 1e-5:
        raise VerificationError(f"the Keras 3 translation differs from the Keras 2 original by {diff:.3g} (> 1e-5)")
    return diff
