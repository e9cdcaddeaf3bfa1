"""splice: move a trained recurrent model's weights or state into another model.

Three modes (see README):

- chain   (default) one composite model: A's final states start a recurrent layer of B.
- weights A's recurrent parameters are copied into the matching layers of B.
- prime   A is run on data; its final states become B's built-in initial state.

`plan(a, b, mode, mapping)` is static (no TensorFlow) and says which layer of A feeds which
layer of B, with shapes; `splice(...)` writes `<B stem>.spliced<ext>` next to B (or
`output`), atomically, verified, with a manifest, and returns a SpliceResult
(or the plan, with dry_run=True).
"""

from __future__ import annotations

import hashlib
import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from surgery.io import saving
from surgery.check.report import CheckReport
from surgery.io.artifact import ModelArtifact
from surgery.errors import NotSupportedError, UsageError
from surgery.graph.level import Level, dialect_for, top_level_entry
from surgery.ops import pipeline

MODES = ("chain", "weights", "prime")
TAG = "spliced"
PLAN_SCHEMA = "lstm-surgery/splice-plan/v1"


def parse_mapping(mapping) -> list:
    """[(src, dst)] from None, "SRC=DST", ["SRC=DST", ...], [(src, dst)] or {src: dst}."""
    if not mapping:
        return []
    if isinstance(mapping, dict):
        items = list(mapping.items())
    elif isinstance(mapping, str):
        items = [mapping]
    else:
        items = list(mapping)
    pairs = []
    for item in items:
        if isinstance(item, str):
            src, sep, dst = item.partition("=")
            if not sep:
                raise UsageError(f"--map takes SRC=DST, received {item!r}")
        else:
            src, dst = item
        src, dst = str(src).strip(), str(dst).strip()
        if not src or not dst:
            raise UsageError(f"--map takes SRC=DST with both names, received {src!r}={dst!r}")
        pairs.append((src, dst))
    return pairs


@dataclass
class SplicePlan:
    mode: str
    a: ModelArtifact
    b: ModelArtifact
    weights: object = None          # splice.weights.WeightsPlan (mode weights)
    pairs: list = field(default_factory=list)  # splice_chain.SitePair (chain, prime)
    data: dict | None = None        # prime: array shapes in the data file

    def as_dict(self) -> dict:
        out = {"schema": PLAN_SCHEMA, "mode": self.mode,
               "a": _artifact_dict(self.a), "b": _artifact_dict(self.b)}
        if self.weights is not None:
            out.update({k: v for k, v in self.weights.as_dict().items() if k != "mode"})
        else:
            out["pairs"] = [p.as_dict() for p in self.pairs]
        if self.data is not None:
            out["data"] = {k: list(v) for k, v in self.data.items()}
        return out

    def lines(self) -> list:
        head = f"plan ({self.mode}): A = {self.a.path} ({self.a.format}, {self.a.family}); " \
               f"B = {self.b.path} ({self.b.format}, {self.b.family})"
        if self.weights is not None:
            return [head, *("  " + line for line in self.weights.lines())]
        lines = [head, *("  " + p.line() for p in self.pairs)]
        if self.data is not None:
            lines.append("  data: " + ", ".join(f"{k or 'array'} {tuple(v)}" for k, v in self.data.items()))
        return lines


def _artifact_dict(artifact: ModelArtifact) -> dict:
    return {"path": str(artifact.path), "format": artifact.format, "family": artifact.family,
            "weights_only": artifact.weights_only}


@dataclass(frozen=True)
class SpliceResult:
    output: Path
    manifest: Path
    format: str
    mode: str
    plan: SplicePlan
    report: CheckReport | None   # None with --no-verify
    integrity: dict | None
    fast_path: bool
    summary: str

    @property
    def verification(self) -> dict | None:
        return self.report.as_dict() if self.report is not None else None

    def as_dict(self) -> dict:
        return {"ok": True, "mode": self.mode, "output": str(self.output), "manifest": str(self.manifest),
                "format": self.format, "fast_path": self.fast_path, "plan": self.plan.as_dict(),
                "integrity": _integrity_summary(self.integrity), "verification": self.verification}


def _integrity_summary(integrity: dict | None):
    if integrity is None:
        return None
    return {"unchanged_weights": len(integrity["unchanged_sha256"]),
            "replaced_weights": len(integrity["replaced"]), "ok": True}


def plan(a, b, mode: str = "chain", mapping=None, *, data=None, unsafe: bool = False,
         custom_objects: dict | None = None) -> SplicePlan:
    """The static plan: which layer of A feeds which layer of B, with shapes. No TensorFlow."""
    if mode not in MODES:
        raise UsageError(f"unknown splice mode {mode!r}; choose chain, weights or prime")
    pairs = parse_mapping(mapping)
    a_artifact, b_artifact = (pipeline.open_model(path, unsafe=unsafe, custom_objects=custom_objects)
                              for path in (a, b))
    if mode == "weights":
        from surgery.ops.splice.weights import plan_weights

        return SplicePlan(mode, a_artifact, b_artifact,
                          weights=plan_weights(a_artifact, b_artifact, pairs, unsafe=unsafe,
                                               custom_objects=custom_objects))
    from surgery.ops.splice.chain import site_pairs

    # chain/prime rebuild the graph: state I/O another command added is taken off first (and
    # by _load_pair on the live models), so B's sites can receive A's state again.
    a_artifact, b_artifact = (_without_state_io(a_artifact), _without_state_io(b_artifact))
    site_plan = site_pairs(a_artifact, b_artifact, pairs, mode=mode)
    shapes = None
    if mode == "prime":
        if data is None:
            raise UsageError("--mode prime needs --data FILE (.npy or .npz) to run A on")
        if isinstance(data, (str, os.PathLike)):
            from surgery.ops.splice.prime import data_shapes

            shapes = data_shapes(data)
        else:
            shapes = {"": tuple(np.shape(data))} if not isinstance(data, dict) else \
                {k: tuple(np.shape(v)) for k, v in data.items()}
    return SplicePlan(mode, a_artifact, b_artifact, pairs=site_plan, data=shapes)


def splice(a, b, mode: str = "chain", mapping=None, *, output=None, data=None, fmt: str | None = None,
           store: str = "constant", keep_override: bool = False, verify: bool = True, force: bool = False,
           dry_run: bool = False, unsafe: bool = False, custom_objects: dict | None = None, progress=None):
    """Splice A into B (see the module doc). Returns a SpliceResult, or the SplicePlan with
    dry_run=True (nothing is written then)."""
    the_plan = plan(a, b, mode, mapping, data=data, unsafe=unsafe, custom_objects=custom_objects)
    if dry_run:
        return the_plan
    b_artifact = the_plan.b
    fmt = saving.infer_format(output, fmt) if output is not None else (fmt or b_artifact.format)
    output = Path(output) if output is not None else saving.default_output_path(b_artifact.path, TAG, fmt)
    runner = {"weights": _run_weights, "chain": _run_chain, "prime": _run_prime}[mode]
    with pipeline.WriteJob("splice", force=force, unsafe=unsafe, custom_objects=custom_objects,
                           progress=progress) as job:
        job.add_source(b_artifact.path)  # the source the manifest names; A is the donor
        job.add_source(the_plan.a.path)
        return runner(job, the_plan, output, fmt, data=data, store=store, keep_override=keep_override,
                      verify=verify)


def _target(output: Path, fmt: str) -> pipeline.Target:
    return pipeline.Target.model(output, fmt)


# ----------------------------------------------------------------------------------------
# mode weights


def _run_weights(job: pipeline.WriteJob, p: SplicePlan, output: Path, fmt: str, *, verify, data=None, **_):
    from surgery.ops.splice import weights as sw, weights_check

    wplan = p.weights
    fast = fmt == p.b.format and fmt in ("keras", "h5")
    if fmt == "savedmodel" and p.b.family == "keras3":
        raise NotSupportedError("a Keras 3 model is written as .keras or .h5 by splice; pass -o with one of those")
    digests = None

    def start_hashing(_paths) -> dict:
        nonlocal digests  # one read of A and of B, beside the write, which stitches from their CRCs
        digests = weights_check.start_hashing(p.a, p.b, wplan)
        return dict(zip((p.a.path, p.b.path), digests))

    job.check(_target(output, fmt), hashes=start_hashing)
    integrity = None
    facts = {"streamed": False, "cast": []}

    def write(temps):
        nonlocal facts, integrity
        temp = temps[output]
        if fast:
            facts = sw.write_weights(wplan, temp, progress=job.step, digests=digests)
            if verify:
                job.step("checking every weight of the written file")
                integrity = weights_check.check_written(wplan, temp)
        else:
            job.step(f"writing {fmt} through Keras")
            _write_weights_live(wplan, temp, fmt, unsafe=job.unsafe, custom_objects=job.custom_objects)
        for source in (p.a, p.b):  # both hashed (B's weights CRC checked) before Keras loads anything
            job.sha256(source.path)

    def check_written(temps) -> CheckReport:
        return weights_check.verify_numerically(wplan, temps[output], unsafe=job.unsafe,
                                                custom_objects=job.custom_objects, data=data)

    def manifests():
        extra = {"mode": "weights", "splice": p.as_dict(), "streamed": facts["streamed"], "casts": facts["cast"],
                 "integrity": integrity}
        return _manifest(job, p, output, fmt, p.b.family, p.b.model_config, extra)

    done = job.write(write, verify=check_written if verify else None,
                     verify_step="verifying in Keras against the NumPy oracle", manifests=manifests)
    report = done.report
    summary_lines = []
    if integrity is not None:
        summary_lines.append(f"weights: {len(integrity['replaced'])} replaced with A's, "
                             f"{len(integrity['unchanged_sha256'])} others unchanged (sha256 of each checked)")
    summary_lines.append(report.summary() if report is not None else "not verified (--no-verify)")
    return SpliceResult(output, done.manifests[output], fmt, "weights", p, report, integrity, fast,
                        "\n".join(summary_lines))


def _write_weights_live(wplan, temp: Path, fmt: str, *, unsafe, custom_objects) -> None:
    from surgery.io import families
    from surgery.io import weight_store
    from surgery.io.loading import load_model
    from surgery.ops.splice import weights as sw

    model = load_model(wplan.dest.model_artifact, unsafe=unsafe, custom_objects=custom_objects)
    family = families.of_model(model)
    with weight_store.open_store(wplan.source.artifact) as source, weight_store.open_store(wplan.dest.artifact) as dest:
        for pair in wplan.pairs:
            arrays = []
            for s_cell, d_cell, transforms in zip(pair.source.cells, pair.dest.cells, pair.transforms):
                for t in transforms:
                    item = sw.Assignment(d_cell.datasets[t.role], s_cell.datasets[t.source_role], t, pair.dest.path)
                    arrays.append(sw.converted(source, item, dest[item.dest_dataset].dtype))
            _layer_at(family, model, pair.dest.path).set_weights(arrays)
    family.save(model, str(temp), fmt)


def _layer_at(family, model, path: str):
    current = model
    for name in path.split("/"):
        current = current.get_layer(name)
    return current


# ----------------------------------------------------------------------------------------
# mode chain


def _without_state_io(artifact: ModelArtifact) -> ModelArtifact:
    import dataclasses

    from surgery.ops import state_io

    found = state_io.find_state_io(artifact.model_config, artifact.family, state_io.read_manifest(artifact.path))
    if not found:
        return artifact
    return dataclasses.replace(artifact, model_config=state_io.strip_state_io(artifact.model_config,
                                                                              artifact.family, found))


def _load_pair(p: SplicePlan, *, unsafe, custom_objects):
    from surgery.ops import state_io

    # Models without the state I/O another command added (see plan()).
    return (state_io.plain_model(p.a, unsafe=unsafe, custom_objects=custom_objects).model,
            state_io.plain_model(p.b, unsafe=unsafe, custom_objects=custom_objects).model)


def _save_live(model, temp: Path, fmt: str) -> None:
    from surgery.io import families

    family = families.of_model(model)
    if fmt == "savedmodel" and family.name == "keras3":
        raise NotSupportedError("a Keras 3 model is written as .keras or .h5 by splice; pass -o with one of those")
    family.save(model, str(temp), fmt)


def _run_chain(job: pipeline.WriteJob, p: SplicePlan, output: Path, fmt: str, *, verify, data=None, **_):
    from surgery.io import families
    from surgery.io.loading import load_model
    from surgery.ops.splice.chain import build_chain, verify_chain

    unsafe, custom_objects = job.unsafe, job.custom_objects
    job.check(_target(output, fmt))
    job.step("loading A and B")
    model_a, model_b = _load_pair(p, unsafe=unsafe, custom_objects=custom_objects)
    notes = []
    if families.of_model(model_a).name != families.of_model(model_b).name:
        # One composite needs one Keras: the Keras 2 side is translated (as `convert` does).
        from surgery.ops.translate import translate

        if families.of_model(model_a).name == "keras2":
            model_a, translated = translate(p.a, custom_objects=custom_objects, unsafe=unsafe)
            notes.append("A was translated from Keras 2 to Keras 3 (as `convert` does)")
        else:
            model_b, translated = translate(p.b, custom_objects=custom_objects, unsafe=unsafe)
            notes.append("B was translated from Keras 2 to Keras 3 (as `convert` does)")
        notes.extend(translated)
    chain = build_chain(model_a, model_b, p.pairs, custom_objects=custom_objects)
    family = families.of_model(chain.model)

    def write(temps):
        job.step(f"writing {fmt}")
        _save_live(chain.model, temps[output], fmt)

    def check_written(temps) -> CheckReport:
        written = load_model(str(temps[output]), unsafe=unsafe, custom_objects=custom_objects)
        return verify_chain(chain, written, model_a, model_b, p.pairs, data=data)

    def manifests():
        extra = {"mode": "chain", "splice": p.as_dict(), "notes": notes}
        return _manifest(job, p, output, fmt, family.name, family.serialize(chain.model), extra)

    done = job.write(write, verify=check_written if verify else None, manifests=manifests)
    summary = done.report.summary() if done.report is not None else "not verified (--no-verify)"
    summary = "\n".join([*(f"note: {n}" for n in notes), summary])
    return SpliceResult(output, done.manifests[output], fmt, "chain", p, done.report, None, False, summary)


# ----------------------------------------------------------------------------------------
# mode prime


def _run_prime(job: pipeline.WriteJob, p: SplicePlan, output: Path, fmt: str, *, data, store, keep_override,
               verify, **_):
    from surgery.io import families
    from surgery.ops.expose import transfer_weights
    from surgery.io.loading import load_model
    from surgery.graph.rewire import RewirePlan
    from surgery.ops.splice.prime import (
        capture,
        copy_weights,
        prime_config,
        verify_primed,
    )

    unsafe, custom_objects = job.unsafe, job.custom_objects
    job.check(_target(output, fmt))
    job.step("loading A and B")
    model_a, model_b = _load_pair(p, unsafe=unsafe, custom_objects=custom_objects)
    notes = []
    if families.of_model(model_b).name == "keras2":
        # The primed model is built from Keras 3 layers: B is translated first (as `convert` does).
        from surgery.ops.translate import translate

        model_b, translated = translate(p.b, custom_objects=custom_objects, unsafe=unsafe)
        notes = ["B was translated from Keras 2 to Keras 3 (as `convert` does)", *translated]
    job.step("running A on the data")
    captured, capture_report = capture(model_a, p.pairs, data, custom_objects=custom_objects)
    family = families.of_model(model_b)
    primed = prime_config(family.serialize(model_b), family.name, p.pairs, captured, store=store,
                          keep_override=keep_override)
    model = family.deserialize(primed.config, custom_objects)
    copy_weights(family, model_b, model, primed.weights)
    reference = family.deserialize(primed.reference_config, custom_objects)
    transfer_weights(model_b, reference)

    def write(temps):
        job.step(f"writing {fmt}")
        _save_live(model, temps[output], fmt)

    def check_written(temps) -> CheckReport:
        written = load_model(str(temps[output]), unsafe=unsafe, custom_objects=custom_objects)
        return verify_primed(written, reference, primed, captured, capture_report)

    def manifests():
        states = []
        for state in primed.plan.inputs:
            value = np.ascontiguousarray(captured[(state.site, state.role)], dtype=np.float32)
            states.append({"site": state.site, "role": state.role, "shape": [None, *state.shape],
                           "layer": f"{state.site}_{state.role}_primed", "store": store,
                           "sha256": hashlib.sha256(value.tobytes()).hexdigest(),
                           "values": value.reshape(-1).tolist() if value.size <= 4096 else None})
        override = RewirePlan((), primed.override_inputs, (), 0, 0, False)
        extra = {"mode": "prime", "splice": p.as_dict(), "primed_states": states, "store": store,
                 "override_flags": list(primed.flags), "notes": notes}
        return _manifest(job, p, output, fmt, family.name, primed.config, extra, plan=override)

    done = job.write(write, verify=check_written if verify else None, manifests=manifests)
    report = done.report
    summary = report.summary() if report is not None else "not verified (--no-verify)"
    summary = "\n".join([*(f"note: {n}" for n in notes), summary])
    return SpliceResult(output, done.manifests[output], fmt, "prime", p, report, None, False, summary)


# ----------------------------------------------------------------------------------------
# Shared


def _manifest(job: pipeline.WriteJob, p: SplicePlan, output: Path, fmt: str, family: str, config, extra: dict,
              plan=None) -> dict:
    """{output: its manifest's fields}: B is the source, A the donor."""
    inputs, outputs = _io_names(config, family)
    return {output: pipeline.ModelManifest(
        fmt, family, plan, model_inputs=inputs, model_outputs=outputs,
        extra={"donor": {"path": str(p.a.path), "sha256": job.sha256(p.a.path)}, **extra})}


def _io_names(config: dict | None, family: str) -> tuple[list, list]:
    if config is None:
        return [], []
    try:
        level = Level(top_level_entry(config), dialect_for(family))
    except (NotSupportedError, KeyError, TypeError, ValueError):  # the manifest just omits the names
        return [], []
    return _refs(level.config.get("input_layers")), _refs(level.config.get("output_layers"))


def _refs(structure) -> list:
    if isinstance(structure, list) and len(structure) == 3 and isinstance(structure[0], str):
        return [structure[0]]
    if isinstance(structure, dict):
        return [ref[0] for ref in structure.values()]
    return [item[0] for item in structure or []]



class _CallableModule(types.ModuleType):
    """`surgery.splice(...)` is the function even after `import surgery.ops.splice` has bound the
    package attribute `surgery.splice` to this module."""

    def __call__(self, *args, **kwargs):
        return splice(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
