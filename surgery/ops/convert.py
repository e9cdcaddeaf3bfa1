"""convert: upgrade a Keras 2 (tf.keras / tf_keras) model file to a Keras 3 `.keras` file."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from surgery.io import families, saving
from surgery.check.report import CheckReport
from surgery.errors import UsageError
from surgery.ops import pipeline, translation_check
from surgery.ops.translate import translate
from surgery.check.verify import random_inputs


@dataclass(frozen=True)
class ConvertResult:
    output: Path
    manifest: Path
    notes: list
    verified: bool
    report: CheckReport | None = None  # the written file vs the translation, and vs the Keras 2 original

    @property
    def max_abs_diff(self) -> float | None:
        """vs the Keras 2 original; None when it was not run (--no-verify, or it cannot run here)."""
        checks = self.report.checks if self.report is not None else {}
        original = [c.max_abs_diff for name, c in checks.items() if name.startswith("original ")]
        return max(original) if original else None

    @property
    def check(self) -> str | None:
        return self.report.summary() if self.report is not None else None


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
        job.check(pipeline.Target.model(output, "keras"))
        job.step("translating to Keras 3")
        model, notes = translate(artifact, custom_objects=custom_objects, unsafe=unsafe, command="convert")

        def write(temps):
            job.step("writing .keras")
            families.get("keras3").save(model, str(temps[output]), "keras")

        def check_written(temps) -> CheckReport:
            return verify_written(artifact, temps[output], model, unsafe=unsafe, custom_objects=custom_objects,
                                  data=data)

        def manifests():
            return {output: pipeline.ModelManifest(
                "keras", "keras3", model_inputs=[t.name for t in model.inputs],
                model_outputs=list(getattr(model, "output_names", None) or [t.name for t in model.outputs]),
                extra={"notes": notes})}

        done = job.write(write, verify=check_written if verify else None, manifests=manifests)
    return ConvertResult(output, done.manifests[output], notes, verify, done.report)


def verify_written(artifact, written: Path, model, *, unsafe, custom_objects, data=None) -> CheckReport:
    """The written file must reproduce the in-memory translation exactly (its outputs are
    claimed bit-exact), and the translation its Keras 2 original within the tolerance policy
    (in practice identically; see surgery.ops.translation_check for where the original cannot
    run here). One report for both."""
    keras3 = families.get("keras3")
    reloaded = keras3.load(str(written), custom_objects=custom_objects or {}, safe_mode=not unsafe)
    values = random_inputs(model, batch=translation_check.CHECK_BATCH, data=data)
    exact = {f"written output {i}": _max_abs_diff(a, b)
             for i, (a, b) in enumerate(zip(keras3.call(model, values), keras3.call(reloaded, values)))}
    translation = translation_check.check_translation(reloaded, artifact=artifact, values=values, unsafe=unsafe,
                                                      custom_objects=custom_objects, data=data)
    return dataclasses.replace(
        translation, what="the written file against the translation, and " + translation.what,
        exact=exact, exact_label="written output(s) vs the in-memory translation",
        checks={("original " if translation.note is None else "oracle ") + name: c
                for name, c in translation.checks.items()})


def _max_abs_diff(a, b) -> float:
    """0.0 for identical arrays (NaN where NaN), else max |a - b| (inf for a shape or NaN mismatch)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return float("inf")
    if np.array_equal(a, b, equal_nan=True):
        return 0.0
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(np.nanmax(np.where(np.isnan(diff), np.inf, diff)))
