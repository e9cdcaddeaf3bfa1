"""Numerical verification of a rebuilt model.

(a) The original outputs must be identical (max |diff| == 0) to the original model's on the
    same random input, with zero initial states fed to any new state inputs.
(b) Every state output must equal the independent NumPy recurrence (surgery.check.oracle) run on
    the layer's actual inputs, mask and initial state, within the tolerance policy
    (surgery.check.tolerance: atol + rtol * |ref| per dtype, growing with sequence length).
Inputs come from the graph: valid ids for anything that reaches an Embedding, whatever the
Input's dtype, and zero-padded tails so that masking paths are exercised; or the user's own
(`data`, a .npy/.npz file).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from surgery.io import families
from surgery.check import oracle, tolerance
from surgery.check.report import CheckReport, raise_if_failed  # noqa: F401  (raise_if_failed re-exported)
from surgery.graph import registry
from surgery.errors import NotSupportedError, SurgeryError, UsageError, VerificationError


@dataclass
class VerifyReport(CheckReport):
    """A rebuilt model against its original (surgery.check.report.CheckReport):
    exact: the original outputs ("output <i>"), claimed bit-exact;
    checks: each state output vs the NumPy oracle under the tolerance policy."""

    what: str = "the rebuilt model against its original"
    batch: int | None = 0
    exact_label: str = "original output(s)"
    checks_label: str = "state output(s) vs NumPy oracle"

    @property
    def output_diffs(self) -> list[float]:
        return list(self.exact.values())

    @property
    def state_errors(self) -> dict[str, float]:
        return self.errors

    @property
    def tolerances(self) -> dict[str, tolerance.Bound]:
        return self.bounds

    @property
    def outputs_identical(self) -> bool:
        return self.exact_ok

    @property
    def states_ok(self) -> bool:
        return self.checks_ok

    def details(self) -> dict:
        return {
            "outputs_identical": self.outputs_identical,
            "output_max_abs_diff": self.output_diffs,
            "state_max_abs_diff": self.state_errors,
            "state_tolerance": {name: b.describe() for name, b in self.tolerances.items()},
            "state_checks": {name: c.as_dict() for name, c in self.checks.items()},
        }


# Layers that take integer ids, with the config key that bounds them (ids in [0, bound)).
ID_LAYERS = {"Embedding": "input_dim", "CategoryEncoding": "num_tokens"}
# Layers whose output holds their input's ids unchanged (only reshaped, masked or copied).
ID_PASSTHROUGH = frozenset({"Reshape", "Permute", "Flatten", "Cropping1D", "Masking", "RepeatVector",
                            "Identity", "ZeroPadding1D", "InputLayer"})
NONE_DIM = 7  # length given to a None (sequence) dimension of a random input


def input_id_limits(model) -> list[int | None]:
    """Per model input: how many ids the Embedding (or other id layer) it reaches accepts,
    or None when it reaches none. Read from the model's own config, whatever the input dtype:
    a float Input feeding an Embedding (the usual Keras 2 pattern) still carries ids."""
    from surgery.graph.level import Level, dialect_for, top_level_entry

    family = families.of_model(model)
    try:
        level = Level(top_level_entry(family.serialize(model)), dialect_for(family.name))
    except (SurgeryError, KeyError, TypeError, ValueError):  # subclassed: no graph to follow
        return [None] * len(model.inputs)
    names = _ref_names(level.config["input_layers"])
    limits = [_id_limit(level, name, {}) for name in names]
    return (limits + [None] * len(model.inputs))[: len(model.inputs)]


def _id_limit(level, name: str, seen: dict) -> int | None:
    """The smallest id bound among the id layers that the tensor of layer `name` reaches."""
    from surgery.graph.level import Level, is_model_entry

    key = (id(level), name)  # nested models may share a name with their parent (and inputs too)
    if key in seen:
        return seen[key]
    seen[key] = None
    dialect = level.dialect
    found = []
    for entry in level.layers:
        for call in level.calls(entry):
            tensors = list(dialect.iter_tensors(call.node))
            positions = [i for i, t in enumerate(tensors) if dialect.ref_of(t)[0] == name]
            if not positions:
                continue
            cls = entry.get("class_name")
            target = entry
            while isinstance(target.get("config"), dict) and isinstance(target["config"].get("layer"), dict):
                target = target["config"]["layer"]  # any wrapper (TimeDistributed, ...) passes ids on
            if target.get("class_name") in ID_LAYERS and positions[0] == 0:
                found.append(int(target["config"][ID_LAYERS[target["class_name"]]]))
            elif cls in ID_PASSTHROUGH and positions[0] == 0:
                found.append(_id_limit(level, Level.name_of(entry), seen))
            elif is_model_entry(target):
                # One Level per nested config, kept alive in `seen` so its id stays its own.
                nested = seen.setdefault(("level", id(target)), Level(copy.deepcopy(target), dialect))
                inner_inputs = _ref_names(nested.config["input_layers"])
                found.extend(_id_limit(nested, inner_inputs[p], seen) for p in positions if p < len(inner_inputs))
    limits = [f for f in found if f is not None]
    seen[key] = min(limits) if limits else None
    return seen[key]


def tensor_np_dtype(tensor) -> np.dtype:
    return np.dtype(getattr(tensor.dtype, "as_numpy_dtype", None) or str(tensor.dtype))


def random_inputs(model, *, batch: int = 4, seed: int = 0, data=None) -> list[np.ndarray]:
    """Seeded inputs for every model input, or the user's (`data`: see load_inputs).

    Inputs that reach an Embedding (or another id layer) get valid ids 1..n-1 whatever their
    dtype; other integer inputs small ids; float inputs standard normals. Row 1 gets a
    zero-padded tail (id 0 / all-zero features) so Masking and Embedding(mask_zero=True)
    paths are exercised.
    """
    if data is not None:
        return load_inputs(data, model)
    rng = np.random.default_rng(seed)
    values = []
    for tensor, limit in zip(model.inputs, input_id_limits(model)):
        fixed_batch = tensor.shape[0]
        shape = [fixed_batch or batch] + [d if d is not None else NONE_DIM for d in tensor.shape[1:]]
        value = random_value(rng, shape, tensor_np_dtype(tensor), limit)
        if value.ndim >= 2 and shape[0] > 1 and shape[1] >= 4:
            value[1, -2:] = 0
        values.append(value)
    return values


def random_value(rng, shape, dtype: np.dtype, limit: int | None) -> np.ndarray:
    if limit is not None:  # ids: 0 is left for padding (a mask_zero Embedding masks it)
        return rng.integers(1, max(limit, 2), size=shape).astype(dtype)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(1, 3, size=shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    return rng.standard_normal(shape).astype(dtype)


def input_names(model) -> list[str]:
    """The model's input names as its config records them (the names --data arrays use)."""
    from surgery.graph.level import Level, dialect_for, top_level_entry

    family = families.of_model(model)
    try:
        level = Level(top_level_entry(family.serialize(model)), dialect_for(family.name))
        names = _ref_names(level.config["input_layers"])
    except (SurgeryError, KeyError, TypeError, ValueError):
        names = []
    if len(names) != len(model.inputs):
        names = [getattr(t, "name", f"input_{i}").split(":")[0] for i, t in enumerate(model.inputs)]
    return names


def read_data(data, where: str = "--data") -> tuple[object, str]:
    """(arrays, label) from a .npy/.npz path; arrays as given otherwise."""
    if not isinstance(data, (str, os.PathLike)):
        return data, "the given arrays"
    path = Path(data)
    label = f"{where} file {str(path)!r}"
    if not path.is_file():
        raise UsageError(f"{label} not found")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        reason = " ".join(str(error).split())[:160]
        raise UsageError(f"{label} is not a .npy/.npz array file ({reason})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            try:
                return {key: loaded[key] for key in loaded.files}, label
            except (OSError, ValueError) as error:
                reason = " ".join(str(error).split())[:160]
                raise UsageError(f"{label} holds an unreadable array ({reason})") from None
    return loaded, label


def load_inputs(data, model, *, where: str = "--data") -> list[np.ndarray]:
    """The user's inputs for every model input, checked against the model.

    data: a .npy path (one input), a .npz path (arrays named by the model's input names, or
    in input order), or arrays (one, a list, or a dict). Any batch size. Ids for an
    Embedding must lie in its range; values are cast to the input's dtype.
    """
    arrays, label = read_data(data, where)
    names = input_names(model)
    if isinstance(arrays, dict):
        if all(name in arrays for name in names):
            keyed = [(name, arrays[name]) for name in names]
        elif len(arrays) == len(names):
            keyed = list(arrays.items())
        else:
            raise UsageError(f"{label} holds arrays {sorted(arrays)}; the model's inputs are {names}")
    elif isinstance(arrays, (list, tuple)):
        keyed = [(f"array {i}", a) for i, a in enumerate(arrays)]
    else:
        keyed = [("array", arrays)]
    if len(keyed) != len(names):
        raise UsageError(f"{label} gives {len(keyed)} array(s); the model has {len(names)} input(s) {names}")
    out = []
    batches = set()
    for (key, array), tensor, limit in zip(keyed, model.inputs, input_id_limits(model)):
        out.append(checked_array(label, key, np.asarray(array), tensor, limit))
        batches.add(out[-1].shape[0])
    if len(batches) > 1:
        raise UsageError(f"{label}: arrays have different batch sizes {sorted(batches)}")
    return out


def checked_array(label: str, key: str, array: np.ndarray, tensor, limit: int | None) -> np.ndarray:
    where = f"{label}, array {key!r}"
    want = tuple(tensor.shape)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise UsageError(f"{where} is not numeric (dtype {array.dtype})")
    if array.ndim != len(want) or any(w is not None and g != w for g, w in zip(array.shape, want)):
        raise UsageError(f"{where} has shape {array.shape}; the input takes {_shape_text(want)}")
    dtype = tensor_np_dtype(tensor)
    if array.size and not np.all(np.isfinite(array.astype(np.float64))):
        raise UsageError(f"{where} holds NaN or inf")
    if (limit is not None or np.issubdtype(dtype, np.integer)) and array.size:
        if np.any(array != np.round(array)):
            raise UsageError(f"{where} holds non-integer values; the input takes ids")
        low, high = array.min(), array.max()
        if limit is not None and (low < 0 or high >= limit):
            raise UsageError(f"{where} holds ids {low:g}..{high:g}; the Embedding it reaches takes 0..{limit - 1}")
    return array.astype(dtype)


def _shape_text(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def site_call_values(family, model, values: list, site) -> tuple:
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


def _oracle_weights(layer):
    """The layer's weights as the oracle takes them: read-only views of its variables'
    memory where TensorFlow gives one (on the CPU it does), so nothing the size of a weight
    is copied; the oracle converts them to float64 a block at a time (a 1 GB model's LSTM
    layer is 512 MB of float32, 1 GB as float64)."""
    if type(layer).__name__ in registry.WRAPPER_CLASSES:
        yield from effective_weights(layer)
        return
    from surgery.io.quiet import import_tensorflow

    tf = import_tensorflow()
    for variable in layer.weights:
        # A variable's read is a tensor sharing its buffer, and NumPy views a CPU tensor
        # in place (np.asarray(variable) itself would copy).
        yield np.asarray(tf.convert_to_tensor(variable))


def oracle_states(family, layer, sequence, mask, initial_state) -> list[np.ndarray]:
    config = registry.unwrap(family.layer_config(layer))
    _, states = oracle.run_layer(config, _oracle_weights(layer), sequence.astype(np.float64),
                                 mask=None if mask is None else np.asarray(mask, dtype=bool),
                                 initial_state=initial_state, family=family.name)
    return [np.asarray(s) for s in states]


def verify(original, rebuilt, plan, sites, *, batch: int = 4, seed: int = 0,
           check_states: bool = True, data=None) -> VerifyReport:
    """Check a rebuilt model against its original (see module doc). Returns the report.

    plan:  the RewirePlan that produced `rebuilt` (which inputs/outputs are states).
    sites: the rebuilt model's sites (surgery.graph.sites.find_sites on its config).
    data:  the user's inputs instead of random ones (see load_inputs).
    """
    report = VerifyReport(batch=batch, data=read_data(data)[1] if isinstance(data, (str, os.PathLike)) else None)
    from surgery.check import cudnn_cpu

    reason = cudnn_cpu.model_cannot_run(original) or cudnn_cpu.model_cannot_run(rebuilt)
    if reason is not None:  # both run as CPU stand-ins with the same converted weights
        report.note = cudnn_cpu.note(reason)
        original, rebuilt = cudnn_cpu.standin(original), cudnn_cpu.standin(rebuilt)
    family = families.of_model(original)
    rebuilt_family = families.of_model(getattr(rebuilt, "live_model", rebuilt))
    values = random_inputs(original, batch=batch, seed=seed, data=data)
    batch_size = values[0].shape[0] if values else batch
    report.batch = batch_size
    zeros = [np.zeros((batch_size, *s.shape), dtype=s.dtype) for s in plan.inputs]
    reference = family.call(original, values)
    rebuilt_out = _call_any(rebuilt_family, rebuilt, values + zeros)
    for expected, got in zip(reference, rebuilt_out[: len(reference)]):
        same_shape = expected.shape == got.shape
        # Bit-exact claim: compared with NaN == NaN, never through a tolerance.
        diff = (float(np.max(np.abs(expected.astype(np.float64) - got.astype(np.float64))))
                if same_shape and expected.size else 0.0)
        if same_shape and np.isnan(diff):
            diff = 0.0 if np.array_equal(expected, got, equal_nan=True) else float("inf")
        key = f"output {len(report.exact)}"
        if not same_shape:  # no difference to measure: say what does not match
            key += f" (shape {tuple(got.shape)}, the original's {tuple(expected.shape)})"
        report.exact[key] = diff if same_shape else float("inf")
    if not check_states or not plan.outputs:
        return report
    # Non-zero initial states check the state inputs too.
    rng = np.random.default_rng(seed + 1)
    states_in = [rng.standard_normal((batch_size, *s.shape)).astype(s.dtype) * 0.5 for s in plan.inputs]
    stated_values = values + states_in
    state_outputs = _call_any(rebuilt_family, rebuilt, stated_values)[plan.original_outputs:]
    by_site = {site.name: site for site in sites}
    probe_model = getattr(rebuilt, "live_model", rebuilt)
    oracle_runs: dict = {}  # one probe and one oracle run per site, whatever it exposes
    for position, state in enumerate(plan.outputs):
        site = by_site[state.site]
        if site.name not in oracle_runs:
            layer, sequence, mask, initial = site_call_values(rebuilt_family, probe_model, stated_values, site)
            expected = oracle_states(rebuilt_family, layer, sequence, mask, initial)

            def rerun(layer=layer, sequence=sequence, mask=mask, initial=initial, dtype=state.dtype):
                # The same oracle on inputs one rounding away: how much this recurrence
                # amplifies rounding (see surgery/check/tolerance.py).
                moved = tolerance.perturbed([sequence, *(initial or [])], dtype)
                return oracle_states(rebuilt_family, layer, moved[0], mask, moved[1:] or initial)

            oracle_runs[site.name] = (sequence_steps(sequence), expected, rerun)
            del layer, sequence, mask, initial
        steps, expected, rerun = oracle_runs[site.name]
        role_index = [s.role for s in site.states].index(state.role)
        bound = tolerance.bound_for(state.dtype, steps=steps, scale=tolerance.magnitude(expected))
        check = tolerance.compare(state_outputs[position], expected[role_index], bound)
        if not check.ok:  # measured only when needed: one more oracle run for this site
            bound = tolerance.with_sensitivity(bound, expected, rerun)
            check = tolerance.compare(state_outputs[position], expected[role_index], bound)
        report.checks[state.name] = check
    return report


def sequence_steps(sequence) -> int:
    """Timesteps of a recurrent call's input (batch, time, ...): what its error accumulates over."""
    shape = np.shape(sequence)
    return int(shape[1]) if len(shape) >= 2 else 1


def _call_any(family, model, values):
    """Call a live model through its family, or an adapter (a reloaded SavedModel) directly."""
    if hasattr(model, "live_model"):
        return [np.asarray(v) for v in model(values)]
    return family.call(model, values)


def plan_from_config(original, rebuilt_config: dict, family: str = "keras3"):
    """Recover which inputs/outputs of a rebuilt model are states, from its config alone.

    State outputs are the layers named `<site>_<role>` after the original outputs; state
    inputs are the inputs named `<site>_<role>_in` after the original inputs.
    """
    from surgery.graph.level import Level, dialect_for, output_count, top_level_entry
    from surgery.graph.rewire import RewirePlan, StateTensor
    from surgery.graph.sites import find_sites

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


def verify_files(original_path, rebuilt_path, *, unsafe: bool = False, custom_objects=None,
                 data=None) -> VerifyReport:
    """Standalone check of a rebuilt file against its original (the `verify` command)."""
    from surgery.check.diff import structural_mismatch
    from surgery.io.formats import read_artifact
    from surgery.io.loading import load_model
    from surgery.io.safety import ensure_artifact_safe

    artifact = read_artifact(rebuilt_path)
    source = read_artifact(original_path)
    trusted = (custom_objects or {}).keys()
    # Safety first (nothing of either file is read past its metadata before this), then the
    # static structure: unrelated models are told apart without running anything.
    for checked in (source, artifact):
        ensure_artifact_safe(checked, allow_unsafe=unsafe, trusted=trusted)
    if source.family != artifact.family:
        # Identity is claimed within one Keras; across them the translation is the original.
        raise NotSupportedError(
            f"verify compares two models of one Keras family; {os.fspath(original_path)!r} is {source.family} and "
            f"{os.fspath(rebuilt_path)!r} is {artifact.family}: verify it against the Keras 3 translation of the "
            "original (lstm-surgery convert ORIGINAL -o ORIGINAL.keras, itself checked against the original)")
    mismatch = structural_mismatch(original_path, rebuilt_path)
    if mismatch:
        raise VerificationError(mismatch)
    original = load_model(original_path, unsafe=unsafe, custom_objects=custom_objects)
    rebuilt = load_model(artifact, unsafe=unsafe, custom_objects=custom_objects)
    plan, sites = plan_from_config(original, artifact.model_config, artifact.family)
    return verify(original, rebuilt, plan, sites, data=data)
