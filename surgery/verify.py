"""Numerical verification of a rebuilt model.

(a) The original outputs must be identical (max |diff| == 0) to the original model's on the
    same random input, with zero initial states fed to any new state inputs.
(b) Every state output must equal the independent NumPy recurrence (surgery.oracle) run on
    the layer's actual inputs, mask and initial state, within a dtype-aware tolerance.
Random inputs carry zero-padded tails so that masking paths are exercised too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from surgery import families, oracle, registry
from surgery.errors import VerificationError

# Max abs error allowed between a state output and the float64 oracle, by compute dtype.
TOLERANCES = {"float32": 1e-5, "float64": 1e-5, "float16": 2e-2, "bfloat16": 1e-1}


@dataclass
class VerifyReport:
    output_diffs: list[float] = field(default_factory=list)
    state_errors: dict[str, float] = field(default_factory=dict)
    tolerances: dict[str, float] = field(default_factory=dict)
    batch: int = 0

    @property
    def outputs_identical(self) -> bool:
        return all(diff == 0.0 for diff in self.output_diffs)

    @property
    def states_ok(self) -> bool:
        return all(err <= self.tolerances[name] for name, err in self.state_errors.items())

    @property
    def ok(self) -> bool:
        return self.outputs_identical and self.states_ok

    def summary(self) -> str:
        outputs = len(self.output_diffs)
        worst_out = max(self.output_diffs, default=0.0)
        worst_state = max(self.state_errors.values(), default=0.0)
        tol = max(self.tolerances.values(), default=1e-5)
        verdict = "verified" if self.ok else "VERIFICATION FAILED"
        bad = [n for n, e in self.state_errors.items() if e > self.tolerances[n]]
        text = (
            f"{verdict}: {outputs} original output(s) "
            f"{'identical' if self.outputs_identical else 'differ'} (max |diff| {worst_out:.3g}); "
            f"{len(self.state_errors)} state output(s) vs NumPy oracle max |diff| {worst_state:.3g} "
            f"(tolerance {tol:g})"
        )
        if bad:
            text += f"; mismatched: {', '.join(bad)}"
        return text

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "outputs_identical": self.outputs_identical,
            "output_max_abs_diff": self.output_diffs,
            "state_max_abs_diff": self.state_errors,
            "state_tolerance": self.tolerances,
            "batch": self.batch,
        }


def random_inputs(model, *, batch: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Seeded inputs for every model input; integer inputs are small token ids.

    Row 1 gets a zero-padded tail (token 0 / all-zero features) so Masking and
    Embedding(mask_zero=True) paths are exercised.
    """
    rng = np.random.default_rng(seed)
    values = []
    for tensor in model.inputs:
        fixed_batch = tensor.shape[0]
        shape = [fixed_batch or batch] + [d if d is not None else 7 for d in tensor.shape[1:]]
        dtype = np.dtype(getattr(tensor.dtype, "as_numpy_dtype", None) or str(tensor.dtype))
        if np.issubdtype(dtype, np.integer):
            value = rng.integers(1, 3, size=shape).astype(dtype)
        elif dtype == np.bool_:
            value = rng.integers(0, 2, size=shape).astype(bool)
        else:
            value = rng.standard_normal(shape).astype(dtype)
        if value.ndim >= 2 and shape[0] > 1 and shape[1] >= 4:
            value[1, -2:] = 0
        values.append(value)
    return values


def _site_call_values(family, model, values: list, site) -> tuple:
    """(layer, sequence, mask, initial states) of one site, evaluated on real inputs.

    Masks are followed across nested-model boundaries: Keras hands a nested model's call
    mask to the layers inside implicitly, so it is recovered from the eager run.
    """
    current, current_values, current_masks = model, values, None
    for name, call in zip(site.model_path, site.model_calls):
        nested = current.get_layer(name)
        node = family.node_of(current, nested, call)
        inner_inputs, mask_leaves = family.model_call_inputs(node)
        mask_tensors = [m for m in mask_leaves if family.is_symbolic(m)]
        results, _ = family.evaluate(current, inner_inputs + mask_tensors, current_values, current_masks)
        current_values = results[: len(inner_inputs)]
        mask_values = iter(results[len(inner_inputs):])
        masks = [next(mask_values) if family.is_symbolic(m) else None for m in mask_leaves]
        current_masks = (masks + [None] * len(inner_inputs))[: len(inner_inputs)] if mask_tensors else None
        current = nested
    layer = current.get_layer(site.layer)
    node = family.node_of(current, layer, site.call_index)
    sequence, mask, initial = family.recurrent_call_parts(node)
    explicit_mask = mask is not None
    tensors = [sequence] + ([mask] if explicit_mask else []) + list(initial)
    results, runtime_masks = family.evaluate(current, tensors, current_values, current_masks)
    seq_value = results[0]
    mask_value = results[1] if explicit_mask else runtime_masks[0]
    initial_values = results[1 + explicit_mask:] or None
    return layer, seq_value, mask_value, initial_values


def effective_weights(layer) -> list:
    """The weights a layer computes with. A model-optimization wrapper (pruning, clustering)
    holds extra variables and hands its wrapped cell the effective tensors at call time."""
    inner = getattr(layer, "layer", None)
    if type(layer).__name__ not in registry.WRAPPER_CLASSES or not hasattr(inner, "cell"):
        return layer.get_weights()
    cell = inner.cell
    names = ["kernel", "recurrent_kernel"] + (["bias"] if getattr(cell, "use_bias", True) else [])
    return [np.asarray(getattr(cell, name)) for name in names]


def oracle_states(family, layer, sequence, mask, initial_state) -> list[np.ndarray]:
    config = registry.unwrap(family.layer_config(layer))
    weights = [np.asarray(w, dtype=np.float64) for w in effective_weights(layer)]
    _, states = oracle.run_layer(config, weights, sequence.astype(np.float64),
                                 mask=None if mask is None else np.asarray(mask, dtype=bool),
                                 initial_state=initial_state, family=family.name)
    return [np.asarray(s) for s in states]


def verify(original, rebuilt, plan, sites, *, batch: int = 4, seed: int = 0,
           check_states: bool = True) -> VerifyReport:
    """Check a rebuilt model against its original (see module doc). Returns the report.

    plan:  the RewirePlan that produced `rebuilt` (which inputs/outputs are states).
    sites: the rebuilt model's sites (surgery.sites.find_sites on its config).
    """
    report = VerifyReport(batch=batch)
    family = families.of_model(original)
    rebuilt_family = families.of_model(getattr(rebuilt, "live_model", rebuilt))
    values = random_inputs(original, batch=batch, seed=seed)
    batch_size = values[0].shape[0] if values else batch
    zeros = [np.zeros((batch_size, *s.shape), dtype=s.dtype) for s in plan.inputs]
    reference = family.call(original, values)
    rebuilt_out = _call_any(rebuilt_family, rebuilt, values + zeros)
    for expected, got in zip(reference, rebuilt_out[: len(reference)]):
        same_shape = expected.shape == got.shape
        diff = float(np.max(np.abs(expected.astype(np.float64) - got.astype(np.float64)))) if same_shape and expected.size else 0.0
        report.output_diffs.append(diff if same_shape else float("inf"))
    if not check_states or not plan.outputs:
        return report
    # Non-zero initial states check the state inputs too.
    rng = np.random.default_rng(seed + 1)
    states_in = [rng.standard_normal((batch_size, *s.shape)).astype(s.dtype) * 0.5 for s in plan.inputs]
    stated_values = values + states_in
    state_outputs = _call_any(rebuilt_family, rebuilt, stated_values)[plan.original_outputs:]
    by_site = {site.name: site for site in sites}
    for position, state in enumerate(plan.outputs):
        site = by_site[state.site]
        probe_model = getattr(rebuilt, "live_model", rebuilt)
        layer, sequence, mask, initial = _site_call_values(rebuilt_family, probe_model, stated_values, site)
        expected = oracle_states(rebuilt_family, layer, sequence, mask, initial)
        role_index = [s.role for s in site.states].index(state.role)
        got = state_outputs[position].astype(np.float64)
        report.state_errors[state.name] = float(np.max(np.abs(expected[role_index] - got)))
        report.tolerances[state.name] = TOLERANCES.get(state.dtype, 1e-5)
    return report


def _call_any(family, model, values):
    """Call a live model through its family, or an adapter (a reloaded SavedModel) directly."""
    if hasattr(model, "live_model"):
        return [np.asarray(v) for v in model(values)]
    return family.call(model, values)


def raise_if_failed(report: VerifyReport) -> VerifyReport:
    if not report.ok:
        raise VerificationError(report.summary())
    return report


def plan_from_config(original, rebuilt_config: dict, family: str = "keras3"):
    """Recover which inputs/outputs of a rebuilt model are states, from its config alone.

    State outputs are the layers named `<site>_<role>` after the original outputs; state
    inputs are the inputs named `<site>_<role>_in` after the original inputs.
    """
    from surgery.graph import Level, dialect_for, output_count, top_level_entry
    from surgery.rewire import RewirePlan, StateTensor
    from surgery.sites import find_sites

    level = Level(top_level_entry(rebuilt_config), dialect_for(family))
    sites = find_sites(rebuilt_config, family)
    by_output = {s.output_name: (site, s) for site in sites for s in site.states}
    by_input = {s.input_name: (site, s) for site in sites for s in site.states}
    out_names = _ref_names(level.config["output_layers"])
    in_names = _ref_names(level.config["input_layers"])
    originals_out, originals_in = len(original.outputs), len(original.inputs)
    outputs, inputs = [], []
    for name in out_names[originals_out:]:
        if name not in by_output:
            raise VerificationError(f"rebuilt output {name!r} is not a state output of any recurrent site")
        site, state = by_output[name]
        outputs.append(StateTensor(name, site.name, state.role, state.shape, state.dtype))
    for name in in_names[originals_in:]:
        if name not in by_input:
            raise VerificationError(f"rebuilt input {name!r} is not a state input of any recurrent site")
        site, state = by_input[name]
        inputs.append(StateTensor(name, site.name, state.role, state.shape, state.dtype))
    if output_count(level.config["output_layers"]) < originals_out:
        raise VerificationError(
            f"rebuilt model has {len(out_names)} outputs, fewer than the original's {originals_out}"
        )
    plan = RewirePlan(tuple(outputs), tuple(inputs), (), originals_out, originals_in, False)
    return plan, sites


def _ref_names(structure) -> list[str]:
    if isinstance(structure, list) and len(structure) == 3 and isinstance(structure[0], str):
        return [structure[0]]
    if isinstance(structure, dict):
        return [ref[0] for ref in structure.values()]
    return [ref[0] for ref in structure]


def verify_files(original_path, rebuilt_path, *, unsafe: bool = False, custom_objects=None) -> VerifyReport:
    """Standalone check of a rebuilt file against its original (the `verify` command)."""
    from surgery.formats import read_artifact
    from surgery.loading import load_model

    original = load_model(original_path, unsafe=unsafe, custom_objects=custom_objects)
    artifact = read_artifact(rebuilt_path)
    rebuilt = load_model(artifact, unsafe=unsafe, custom_objects=custom_objects)
    plan, sites = plan_from_config(original, artifact.model_config, artifact.family)
    return verify(original, rebuilt, plan, sites)
