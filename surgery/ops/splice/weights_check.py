"""Checks of a file written by splice --mode weights: statically (every unmapped weight hashes
the same as in B, every mapped one equals A's converted weights: `check_written`, hashing
started early with `start_hashing`), and numerically in Keras (`verify_numerically`: B's layers
hold exactly A's converted weights and the spliced layers' outputs equal the NumPy oracle run
with them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from surgery.check.report import CheckReport, raise_if_failed
from surgery.io.artifact import ModelArtifact
from surgery.errors import VerificationError
from surgery.graph.sites import find_sites
from surgery.io.weight_store import OpenStore, open_store
from surgery.ops.splice.weights import (
    Assignment,
    SourceDigests,
    WeightsPlan,
    assignments,
    converted,
    copy_ranges,
    produce,
)


def start_hashing(a: ModelArtifact, b: ModelArtifact, plan: WeightsPlan | None = None) -> SourceDigests:
    """The SHA-256 of A and of B, read once each on a background thread beside the write, with
    every stored zip member's CRC-32 checked on the way (SourceDigests). With the plan, the
    same read also takes the CRC-32s a streamed write (write_weights) stitches its new
    weights member's from. Iterating the result gives A's and B's (`.result()`)."""
    return SourceDigests(a, b, copy_ranges(plan) if plan is not None else ())


# ----------------------------------------------------------------------------------------
# Checking what was written


def _dataset_digest(store: OpenStore, dataset: h5py.Dataset) -> str:
    digest = hashlib.sha256()
    for block in store.blocks(dataset, reuse=True):
        digest.update(memoryview(np.ascontiguousarray(block)).cast("B"))
    return digest.hexdigest()


def _all_datasets(store: OpenStore) -> dict:
    found = {}
    store.h5.visititems(lambda name, node: found.__setitem__(name, node) if isinstance(node, h5py.Dataset) else None)
    return found


def check_written(plan: WeightsPlan, written: Path) -> dict:
    """Static integrity check of a written file (no Keras).

    Every weight of B that was not mapped must hash (sha256) the same in the output; every
    mapped one must equal A's converted weight byte for byte. Returns the evidence.
    """
    b, a = plan.dest.artifact, plan.source.artifact
    out_artifact = ModelArtifact(str(written), b.format, b.family, b.model_config, b.keras_version, {})
    items = {item.dest_dataset: item for item in assignments(plan)}
    unchanged: dict = {}
    replaced: dict = {}
    with open_store(b) as original, open_store(out_artifact) as output, open_store(a) as source:
        before, after = _all_datasets(original), _all_datasets(output)
        if set(before) != set(after):
            missing = sorted(set(before) ^ set(after))[:3]
            raise VerificationError(f"the written weights hold other datasets than B's (e.g. {missing})")
        for name, dataset in before.items():
            out_ds = after[name]
            if tuple(out_ds.shape) != tuple(dataset.shape) or out_ds.dtype != dataset.dtype:
                raise VerificationError(f"weight {name!r} changed shape/dtype: {dataset.shape} {dataset.dtype} -> "
                                        f"{out_ds.shape} {out_ds.dtype}")
            item = items.get(name)
            if item is None:
                digest_before, digest_after = _dataset_digest(original, dataset), _dataset_digest(output, out_ds)
                if digest_before != digest_after:
                    raise VerificationError(f"weight {name!r} of B changed although it was not mapped "
                                            f"(sha256 {digest_before[:12]} -> {digest_after[:12]})")
                unchanged[name] = digest_after
            else:
                expected = produce(source, item, dataset.dtype, reuse=True)
                got = output.blocks(out_ds, reuse=True)
                if not _same_stream(expected, got):
                    raise VerificationError(f"{item.label} ({name!r}) does not hold A's weight "
                                            f"{item.source_dataset!r} after the splice")
                replaced[name] = item.source_dataset
    return {"unchanged_sha256": unchanged, "replaced": replaced}


def _same_stream(first: Iterator[np.ndarray], second: Iterator[np.ndarray]) -> bool:
    """Byte equality of two streams of arrays cut at different places."""
    a, b = _byte_chunks(first), _byte_chunks(second)
    pending_a = pending_b = None
    while True:
        if pending_a is None or not len(pending_a):
            pending_a = next(a, None)
        if pending_b is None or not len(pending_b):
            pending_b = next(b, None)
        if pending_a is None or pending_b is None:
            return pending_a is None and pending_b is None
        n = min(len(pending_a), len(pending_b))
        if not np.array_equal(np.frombuffer(pending_a[:n], np.uint8), np.frombuffer(pending_b[:n], np.uint8)):
            return False
        pending_a, pending_b = pending_a[n:], pending_b[n:]


def _byte_chunks(arrays: Iterator[np.ndarray]) -> Iterator[memoryview]:
    for array in arrays:
        view = memoryview(np.ascontiguousarray(array)).cast("B")
        if len(view):
            yield view


# ----------------------------------------------------------------------------------------
# Numerical check in Keras (the default; --no-verify skips it)


def verify_numerically(plan: WeightsPlan, written: Path, *, unsafe=False, custom_objects=None, batch: int = 4,
                       seed: int = 0, data=None) -> CheckReport:
    """Reload the written model and check it three ways.

    1. every layer of the reloaded model holds exactly what it should: A's converted weights
       for mapped layers, B's own for everything else (compared with B loaded by Keras);
    2. its outputs equal B's outputs with the mapped layers' weights set through Keras;
    3. every call of a spliced layer, run on its actual inputs in the model, equals the NumPy
       oracle (surgery.check.oracle) run with A's converted weights.
    """
    from surgery.io import families
    from surgery.check import oracle
    from surgery.io.loading import load_model
    from surgery.check import tolerance
    from surgery.check.verify import site_call_values, random_inputs, sequence_steps

    b = plan.dest.artifact
    original = load_model(plan.dest.model_artifact, unsafe=unsafe, custom_objects=custom_objects)
    reloaded = load_model(str(written), unsafe=unsafe, custom_objects=custom_objects)
    family = families.of_model(reloaded)
    expected = {}
    with open_store(plan.source.artifact) as source, open_store(b) as dest:
        for pair in plan.pairs:
            arrays = []
            for s_cell, d_cell, transforms in zip(pair.source.cells, pair.dest.cells, pair.transforms):
                for t in transforms:
                    dtype = dest[d_cell.datasets[t.role]].dtype
                    item = Assignment(d_cell.datasets[t.role], s_cell.datasets[t.source_role], t, pair.dest.path)
                    arrays.append(converted(source, item, dtype))
            expected[pair.dest.path] = arrays
    from surgery.check import cudnn_cpu

    # tf_keras cannot rebuild cuDNN layers from its own config, nor run them without a GPU:
    # such models are compared as CPU stand-ins built from the same weights (cudnn_cpu).
    cudnn = cudnn_cpu.cudnn_layers(family.serialize(original))
    note = None
    if cudnn:
        note = cudnn_cpu.note(cudnn_cpu.model_cannot_run(original) or "tf_keras cannot rebuild cuDNN layers")
        reference = cudnn_cpu.standin(original, weights={p.split("/")[-1]: w for p, w in expected.items()})
    else:
        reference = family.deserialize(family.serialize(original), custom_objects)
        _copy_all_weights(family, original, reference)
    # 1. weights, layer by layer
    layers_checked = 0
    for path, (layer, ref_layer) in _walk_layers(family, reloaded, original).items():
        got = layer.get_weights()
        want = expected.get(path)
        if want is not None and not cudnn:
            reference_layer(reference, path).set_weights(want)
        want = want if want is not None else ref_layer.get_weights()
        if len(got) != len(want) or any(g.shape != w.shape or g.tobytes() != np.asarray(w, g.dtype).tobytes()
                                         for g, w in zip(got, want)):
            raise VerificationError(f"layer {path!r} of the written model does not hold the expected weights")
        layers_checked += 1
    if cudnn:
        reloaded = cudnn_cpu.standin(reloaded)
    # 2. whole-model outputs
    values = random_inputs(reloaded, batch=batch, seed=seed, data=data)
    out_got = family.call(reloaded, values)
    out_ref = family.call(reference, values)
    output_diffs = [float(np.max(np.abs(g.astype(np.float64) - r.astype(np.float64)))) if g.size else 0.0
                    for g, r in zip(out_got, out_ref)]
    # 3. spliced layers vs the oracle with A's weights
    checks = {}
    sites = {s.name: s for s in find_sites(b.model_config, b.family)}
    for pair in plan.pairs:
        for site_name in pair.dest.sites:
            site = sites[site_name]
            layer, sequence, mask, initial = site_call_values(family, reloaded, values, site)
            config = family.layer_config(layer)
            weights = expected[pair.dest.path]
            if pair.dest.path.split("/")[-1] in cudnn:
                weights = cudnn_cpu.to_keras_layout(cudnn[pair.dest.path.split("/")[-1]], weights)
            weights64 = [np.asarray(w, np.float64) for w in weights]
            want, _states = oracle.run_layer(config, weights64, sequence.astype(np.float64),
                                                 mask=None if mask is None else np.asarray(mask, bool),
                                                 initial_state=initial, family=family.name)
            got = _call_layer(family, layer, sequence, mask, initial)
            bound = tolerance.bound_for(site.states[0].dtype if site.states else "float32",
                                        steps=sequence_steps(sequence),
                                        scale=tolerance.magnitude([*_flat(want), *_flat(_states)]))
            checks[site_name] = tolerance.worst(tolerance.compare(g, w, bound)
                                                for g, w in zip(_flat(got), _flat(want)))
    return raise_if_failed(CheckReport(
        what=f"the written model against B with A's weights set by Keras; {layers_checked} layer(s) hold exactly "
             "the expected weights",
        exact={f"output {i}": diff for i, diff in enumerate(output_diffs)}, checks=checks,
        batch=len(values[0]) if values else batch, note=note,
        exact_label="output(s)", checks_label="spliced call(s) vs NumPy oracle with A's weights",
        facts={"layers_checked": layers_checked, "outputs_identical": all(d == 0.0 for d in output_diffs),
               "output_max_abs_diff": output_diffs,
               "oracle_max_abs_diff": {k: c.max_abs_diff for k, c in checks.items()},
               "oracle_tolerance": {k: c.bound.describe() for k, c in checks.items()},
               "oracle_check": tolerance.worst(checks.values()).describe(
                   f"{len(checks)} spliced call(s) vs NumPy oracle with A's weights")}))


def reference_layer(model, path: str):
    """The leaf layer at a "/"-joined path of nested model names."""
    for name in path.split("/"):
        model = model.get_layer(name)
    return model


def _copy_all_weights(family, source, target) -> None:
    by_name = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        origin = by_name[layer.name]
        if family.is_model(layer):
            _copy_all_weights(family, origin, layer)
        elif layer.weights:
            layer.set_weights(origin.get_weights())


def _walk_layers(family, model, reference, prefix: tuple = ()) -> dict:
    out = {}
    ref_by_name = {layer.name: layer for layer in reference.layers}
    for layer in model.layers:
        ref = ref_by_name.get(layer.name)
        if ref is None:
            raise VerificationError(f"the written model has a layer {layer.name!r} that B does not have")
        if family.is_model(layer):
            out.update(_walk_layers(family, layer, ref, (*prefix, layer.name)))
        elif layer.weights:
            out["/".join((*prefix, layer.name))] = (layer, ref)
    return out


def _call_layer(family, layer, sequence, mask, initial):
    from surgery.io.quiet import quiet

    kwargs = {"training": False}
    if mask is not None:
        kwargs["mask"] = np.asarray(mask, bool)
    if initial:
        kwargs["initial_state"] = [np.asarray(s) for s in initial]
    with quiet():
        # A stateful layer starts from what earlier calls left behind; the oracle from zeros.
        for reset in ("reset_state", "reset_states"):
            if getattr(layer, "stateful", False) and hasattr(layer, reset):
                getattr(layer, reset)()
                break
        return layer(sequence, **kwargs)


def _flat(value) -> list:
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _flat(item)]
    return [np.asarray(value, dtype=np.float64)]
