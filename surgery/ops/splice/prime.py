"""splice --mode prime: run A on data, and bake its final states into B as B's initial state.

B's chosen site first gets state inputs through the engine's own rewiring
(`rewire_states(..., inputs=True)`: lifted through nested models, masks kept explicit).
Each such input is then replaced by a constant built only from built-in layers, so the
written model loads in Keras safe mode and passes the static safety scan (no Lambda):

    first model input x (any dtype, any rank)
      -> Rescaling(scale=1, offset=0)   cast to float32 (exact for every finite value)
      -> ReLU(max_value=0)              min(max(x, 0), 0): exactly 0 for every x, ±inf included
      -> [Reshape((-1,))]               flatten when x has more than two dims
      -> Dot(axes=1)([z, z])            (batch, 1) of exact zeros (sums of 0·0)
      -> Dense(n, kernel 0, bias=state) 0·0 + bias: the captured state, bit for bit, per row
      -> [Reshape(state shape)]         ConvLSTM states

The batch size comes from the model's first input, never from the site's sequence (which
may carry a mask that the pooling-free chain above must not see). Only a NaN in x would
turn the state into NaN (0·NaN); a NaN input makes B's output NaN anyway.

store="constant" makes the primed Dense layers non-trainable; store="variable" leaves the
primed state trainable (a learnable initial state). Either way every call starts from it.

keep_override=True keeps the state inputs `<site>_<role>_in` and adds one input per site,
`<site>_use_state_in` of shape (1,): per batch row, 1 uses the passed state, 0 the primed
one. The choice is exact arithmetic: primed·(1-flag) + passed·flag.

A stateful site becomes stateless (like expose-state --inputs): the primed state is where
every call starts; carry a state across calls through the override input.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from surgery.io import families, layer_pairs
from surgery.check.report import CheckReport, prefixed, raise_if_failed
from surgery.errors import NotSupportedError, UsageError
from surgery.graph.level import Level, dialect_for
from surgery.graph.rewire import RewirePlan, rewire_states

FLAG_SUFFIX = "_use_state_in"


# ----------------------------------------------------------------------------------------
# Data


def load_data(data, input_names: list, input_shapes: list, where: str = "--data") -> list:
    """Arrays for a model's inputs from a .npy/.npz path, an array, a list or a dict.

    One sequence is expected (prime captures one state): a leading batch of 1 is added when
    the array has one dimension fewer than the input.
    """
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.is_file():
            raise UsageError(f"{where} file {str(path)!r} not found")
        try:
            loaded = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise UsageError(f"{where} file {str(path)!r} is not a .npy/.npz array file ({error})") from None
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                data = {key: loaded[key] for key in loaded.files}
        else:
            data = loaded
    if isinstance(data, dict):
        if all(name in data for name in input_names):
            arrays = [data[name] for name in input_names]
        elif len(data) == len(input_names):
            arrays = list(data.values())
        else:
            raise UsageError(f"{where} holds arrays {sorted(data)}; A's inputs are {input_names}")
    elif isinstance(data, (list, tuple)):
        arrays = list(data)
    else:
        arrays = [data]
    if len(arrays) != len(input_names):
        raise UsageError(f"{where} gives {len(arrays)} array(s); A has {len(input_names)} input(s) {input_names}")
    out = []
    for name, shape, array in zip(input_names, input_shapes, arrays):
        array = np.asarray(array)
        if array.dtype == object:
            raise UsageError(f"{where}: array for {name!r} is not numeric")
        if array.ndim == len(shape) - 1:
            array = array[None]
        if array.ndim != len(shape):
            raise UsageError(f"{where}: array for input {name!r} has shape {array.shape}; the input takes {tuple(shape)}")
        if array.shape[0] != 1:
            raise UsageError(
                f"{where}: array for input {name!r} holds {array.shape[0]} sequences (shape {array.shape}); "
                "prime captures one state: give one sequence")
        for got, want in zip(array.shape[1:], shape[1:]):
            if want is not None and got != want:
                raise UsageError(f"{where}: array for input {name!r} has shape {array.shape}; the input takes "
                                 f"{tuple(shape)}")
        out.append(array)
    return out


def data_shapes(data) -> dict:
    """{name: shape} of a data file without loading it into memory (for --dry-run)."""
    path = Path(data)
    if not path.is_file():
        raise UsageError(f"--data file {str(path)!r} not found")
    try:
        loaded = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as error:
        raise UsageError(f"--data file {str(path)!r} is not a .npy/.npz array file ({error})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            return {key: tuple(loaded[key].shape) for key in loaded.files}
    return {"": tuple(loaded.shape)}


# ----------------------------------------------------------------------------------------
# Capturing A's states


def capture(model_a, pairs: list, data, *, custom_objects=None) -> tuple[dict, CheckReport]:
    """Run A (rewired to output the chosen sites' states) on the data.

    Returns ({(site, role): array (1, *shape)} per pair, in B's state order as a flat list,
    and the oracle check of the captured states).
    """
    from surgery.ops.splice.chain import rewired
    from surgery.check import tolerance
    from surgery.check.verify import site_call_values, oracle_states, sequence_steps

    family = families.of_model(model_a)
    source, plan, config = rewired(model_a, family, [p.source for p in pairs], outputs=True, inputs=False,
                                   name=model_a.name, custom_objects=custom_objects)
    names = [_input_name(t, i) for i, t in enumerate(model_a.inputs)]
    values = load_data(data, names, [tuple(t.shape) for t in model_a.inputs])
    values = [v.astype(_np_dtype(t.dtype)) for v, t in zip(values, model_a.inputs)]
    outputs = family.call(source, values)[plan.original_outputs:]
    by_key = {(s.site, s.role): out for s, out in zip(plan.outputs, outputs)}
    from surgery.graph.sites import find_sites

    sites = {s.name: s for s in find_sites(config, family.name)}
    checks = {}
    for pair in pairs:
        site = sites[pair.source.name]
        layer, sequence, mask, initial = site_call_values(family, source, values, site)
        expected = oracle_states(family, layer, sequence, mask, initial)
        for state, want in zip(site.states, expected):
            bound = tolerance.bound_for(state.dtype, steps=sequence_steps(sequence))
            checks[f"{site.name}_{state.role}"] = tolerance.compare(by_key[(site.name, state.role)], want, bound)
    report = raise_if_failed(CheckReport(
        what="A's captured states", checks=checks, checks_label="state(s) vs NumPy oracle",
        facts={"oracle_max_abs_diff": {k: c.max_abs_diff for k, c in checks.items()},
               "oracle_tolerance": {k: c.bound.describe() for k, c in checks.items()},
               "oracle_check": tolerance.worst(checks.values()).describe("A's captured states vs NumPy oracle")}))
    captured = {}
    for pair in pairs:
        for s_state, d_state in zip(pair.source.states, pair.dest.states):
            captured[(pair.dest.name, d_state.role)] = np.asarray(by_key[(pair.source.name, s_state.role)])
    return captured, report


def _input_name(tensor, index: int) -> str:
    name = getattr(tensor, "name", None)
    return name.split(":")[0] if name else f"input_{index}"


def _np_dtype(dtype) -> np.dtype:
    return np.dtype(getattr(dtype, "as_numpy_dtype", None) or getattr(dtype, "name", None) or str(dtype))


# ----------------------------------------------------------------------------------------
# Config surgery


@dataclass
class Primed:
    config: dict                # B's config with the primed states built in
    weights: dict               # primed Dense layer name -> [kernel, bias]
    plan: RewirePlan            # B rewired with state inputs (the independent reference)
    reference_config: dict
    override_inputs: tuple      # StateTensors kept as inputs (keep_override)
    flags: tuple                # names of the per-site flag inputs


def _entry(class_name: str, name: str, config: dict, args: list, dialect) -> dict:
    return {
        "module": "keras.layers",
        "class_name": class_name,
        "config": {"name": name, "trainable": False, "dtype": "float32", **config},
        "registered_name": None,
        "name": name,
        "inbound_nodes": [dialect.new_node(args)],
    }


_ZEROS = {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": None}


def prime_config(b_config: dict, family: str, pairs: list, captured: dict, *, store: str = "constant",
                 keep_override: bool = False) -> Primed:
    """B's config with the chosen sites' initial states fixed to the captured values."""
    if family != "keras3":
        raise NotSupportedError("prime writes Keras 3 models; B is a Keras 2 (tf_keras) model")
    if store not in ("constant", "variable"):
        raise UsageError(f"unknown store {store!r}; choose constant or variable")
    dialect = dialect_for(family)
    from surgery.ops.splice.chain import check_selected, selectors

    sites = [p.dest for p in pairs]
    reference, plan = rewire_states(b_config, family, layers=selectors(sites), outputs=False, inputs=True)
    check_selected(plan, sites)
    if plan.skipped:
        site, reason = plan.skipped[0]
        raise UsageError(f"B:{site} cannot be primed: {reason}")
    original_inputs = Level(copy.deepcopy(b_config), dialect).config["input_layers"]
    config = copy.deepcopy(reference)
    level = Level(config, dialect)
    first = _first_input(level)
    zero_ref = _zero_source(level, dialect, first)
    weights = {}
    flags = []
    kept = []
    sites_with_flag = {}
    for state in plan.inputs:
        value = np.asarray(captured[(state.site, state.role)])
        size = int(np.prod(state.shape))
        dense = level.unique_name(f"{state.site}_{state.role}_primed")
        entry = _entry("Dense", dense, {"units": size, "use_bias": True, "activation": "linear",
                                        "kernel_initializer": _ZEROS, "bias_initializer": _ZEROS},
                       [dialect.tensor(zero_ref, (None, 1), "float32")], dialect)
        entry["config"]["trainable"] = store == "variable"
        level.add_layer(entry)
        weights[dense] = [np.zeros((1, size), np.float32), value.reshape(-1).astype(np.float32)]
        primed_ref = (dense, 0, 0)
        if len(state.shape) > 1:
            reshape = level.unique_name(f"{state.site}_{state.role}_primed_shape")
            level.add_layer(_entry("Reshape", reshape, {"target_shape": list(state.shape)},
                                   [dialect.tensor(primed_ref, (None, size), "float32")], dialect))
            primed_ref = (reshape, 0, 0)
        if keep_override:
            if state.site not in sites_with_flag:
                flag = level.unique_name(f"{state.site}{FLAG_SUFFIX}")
                level.add_input(flag, (1,), "float32")
                keep = level.unique_name(f"{state.site}_keep_primed")
                level.add_layer(_entry("Rescaling", keep, {"scale": -1.0, "offset": 1.0},
                                       [dialect.tensor((flag, 0, 0), (None, 1), "float32")], dialect))
                sites_with_flag[state.site] = (flag, keep)
                flags.append(flag)
            flag, keep = sites_with_flag[state.site]
            full = (None, *state.shape)
            part_primed = level.unique_name(f"{state.site}_{state.role}_primed_part")
            part_passed = level.unique_name(f"{state.site}_{state.role}_passed_part")
            chosen = level.unique_name(f"{state.site}_{state.role}_init")
            keep_shape = (None, 1) if len(state.shape) == 1 else (None, *([1] * len(state.shape)))
            keep_ref, flag_ref = (keep, 0, 0), (flag, 0, 0)
            if len(state.shape) > 1:
                keep_ref = _reshaped(level, dialect, keep_ref, keep_shape[1:], f"{state.site}_keep_primed_shape")
                flag_ref = _reshaped(level, dialect, flag_ref, keep_shape[1:], f"{state.site}_use_state_shape")
            _retarget(level, dialect, state.name, chosen)
            level.add_layer(_entry("Multiply", part_primed, {}, [[dialect.tensor(primed_ref, full, "float32"),
                                                                  dialect.tensor(keep_ref, keep_shape, "float32")]],
                                   dialect))
            level.add_layer(_entry("Multiply", part_passed, {}, [[dialect.tensor((state.name, 0, 0), full, state.dtype),
                                                                  dialect.tensor(flag_ref, keep_shape, "float32")]],
                                   dialect))
            level.add_layer(_entry("Add", chosen, {}, [[dialect.tensor((part_primed, 0, 0), full, "float32"),
                                                        dialect.tensor((part_passed, 0, 0), full, "float32")]],
                                   dialect))
            kept.append(state)
        else:
            _retarget(level, dialect, state.name, primed_ref[0])
            _drop_input(level, state.name)
    if not keep_override:
        level.config["input_layers"] = copy.deepcopy(original_inputs)
    return Primed(config, weights, plan, reference, tuple(kept), tuple(flags))


def _first_input(level: Level) -> tuple:
    structure = level.config["input_layers"]
    if isinstance(structure, dict):
        first = next(iter(structure.values()))
    elif structure and isinstance(structure[0], str):
        first = structure
    else:
        first = structure[0]
    entry = level.layer(first[0])
    shape = level.dialect.input_layer_shape(entry)
    if shape is None:
        raise NotSupportedError(f"B's first input {first[0]!r} records no shape")
    return (first[0], first[1], first[2]), tuple(shape)


def _zero_source(level: Level, dialect, first) -> tuple:
    """(batch, 1) of exact zeros from the first model input (see the module doc)."""
    ref, shape = first
    cast = level.unique_name("primed_zero_cast")
    level.add_layer(_entry("Rescaling", cast, {"scale": 1.0, "offset": 0.0},
                           [dialect.tensor(ref, shape, "float32")], dialect))
    clamp = level.unique_name("primed_zero_clamp")
    level.add_layer(_entry("ReLU", clamp, {"max_value": 0.0, "negative_slope": 0.0, "threshold": 0.0},
                           [dialect.tensor((cast, 0, 0), shape, "float32")], dialect))
    current, current_shape = (clamp, 0, 0), shape
    if len(shape) == 1:
        flat = level.unique_name("primed_zero_flat")
        level.add_layer(_entry("Reshape", flat, {"target_shape": [1]},
                               [dialect.tensor(current, current_shape, "float32")], dialect))
        current, current_shape = (flat, 0, 0), (None, 1)
    elif len(shape) > 2:
        flat = level.unique_name("primed_zero_flat")
        size = None if any(d is None for d in shape[1:]) else int(np.prod(shape[1:]))
        level.add_layer(_entry("Reshape", flat, {"target_shape": [-1]},
                               [dialect.tensor(current, current_shape, "float32")], dialect))
        current, current_shape = (flat, 0, 0), (None, size)
    dot = level.unique_name("primed_zero")
    level.add_layer(_entry("Dot", dot, {"axes": 1, "normalize": False},
                           [[dialect.tensor(current, current_shape, "float32"),
                             dialect.tensor(current, current_shape, "float32")]], dialect))
    return (dot, 0, 0)


def _reshaped(level: Level, dialect, ref: tuple, shape: tuple, name: str) -> tuple:
    existing = level.has_layer(name)
    if not existing:
        level.add_layer(_entry("Reshape", name, {"target_shape": list(shape)},
                               [dialect.tensor(ref, (None, 1), "float32")], dialect))
    return (name, 0, 0)


def _retarget(level: Level, dialect, old: str, new: str) -> None:
    """Every use of layer `old`'s output in this level now reads layer `new`'s."""
    for entry in level.layers:
        for tensor in dialect.iter_tensors(entry.get("inbound_nodes", [])):
            history = tensor["config"]["keras_history"]
            if history[0] == old:
                history[0] = new


def _drop_input(level: Level, name: str) -> None:
    level.layers[:] = [e for e in level.layers if Level.name_of(e) != name]
    level._by_name.pop(name, None)


# ----------------------------------------------------------------------------------------
# Weights and checking


def copy_weights(family, source, target, provided: dict) -> None:
    """B's weights into the primed model by layer name (recursively), plus the primed layers'."""
    for layer, origin in layer_pairs.matched_layers(source, target, is_model=family.is_model, role="primed",
                                                    source_name="B", supplied=provided):
        layer.set_weights(provided[layer.name] if origin is None else origin.get_weights())


def verify_primed(written, reference, primed: Primed, captured: dict, capture: CheckReport | None = None, *,
                  batch: int = 4, seed: int = 0) -> CheckReport:
    """B(x) with the primed state == B(x, initial_state=captured); with the override, passing
    a state equals B(x, initial_state=that state). `capture` (A's captured states vs the
    oracle) joins the report as "captured <state>"."""
    from surgery.check.verify import random_inputs

    family = families.of_model(written)
    plan = primed.plan
    n_orig = plan.original_inputs
    x = random_inputs(reference, batch=batch, seed=seed)[:n_orig]
    rows = x[0].shape[0] if x else batch
    captured_rows = [np.broadcast_to(np.asarray(captured[(s.site, s.role)]), (rows, *s.shape)).astype(s.dtype)
                     for s in plan.inputs]
    expected = family.call(reference, x + captured_rows)
    n_out = len(expected)
    extra_zero = [np.zeros((rows, *s.shape), s.dtype) for s in primed.override_inputs]
    flags_off = [np.zeros((rows, 1), np.float32) for _ in primed.flags]
    got = family.call(written, x + extra_zero + flags_off)[:n_out]
    diffs = [_diff(g, e) for g, e in zip(got, expected)]
    exact = {f"primed output {i}": diff for i, diff in enumerate(diffs)}
    facts = {"primed_vs_b_with_captured_state_max_abs_diff": diffs}
    what = "the primed model against B run with initial_state=captured"
    if primed.override_inputs:
        rng = np.random.default_rng(seed + 1)
        passed = [(rng.standard_normal((rows, *s.shape)) * 0.5).astype(s.dtype) for s in primed.override_inputs]
        flags_on = [np.ones((rows, 1), np.float32) for _ in primed.flags]
        got_on = family.call(written, x + passed + flags_on)[:n_out]
        expected_on = family.call(reference, x + passed)
        over = [_diff(g, e) for g, e in zip(got_on, expected_on)]
        exact.update({f"override output {i}": diff for i, diff in enumerate(over)})
        facts["override_vs_b_with_passed_state_max_abs_diff"] = over
        what += ", and with the override input against B run with the passed state"
    checks = {}
    if capture is not None:
        checks = prefixed("captured", capture)[1]
        facts["capture"] = capture.as_dict()
    return raise_if_failed(CheckReport(what=what, exact=exact, checks=checks, batch=rows, facts=facts,
                                       exact_label="output(s)", checks_label="captured state(s) vs NumPy oracle"))


def _diff(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf")
    return float(np.max(np.abs(got - want))) if got.size else 0.0

