"""splice --mode chain: A's final states become the initial state of a recurrent layer of B.

One composite Functional model is built: A's inputs -> A (rewired so the chosen sites'
final states are outputs) -> those states -> B (rewired so the chosen site takes its initial
state as inputs). B's other inputs stay inputs of the composite; its outputs are B's. Both
rewirings are the engine's own (`rewire.rewire_states`), so masks, nested models and
Sequential models behave exactly as in expose-state.

Site pairing (also used by prime) is static: `site_pairs` works on configs only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from surgery.io import families
from surgery.check import tolerance
from surgery.check.report import CheckReport, prefixed, raise_if_failed
from surgery.io.artifact import ModelArtifact
from surgery.errors import NotSupportedError, UsageError
from surgery.ops.expose import transfer_weights
from surgery.graph.rewire import rewire_states
from surgery.graph.sites import Site, find_sites


@dataclass(frozen=True)
class SitePair:
    """A's site whose final states feed B's site's initial state."""

    source: Site
    dest: Site
    how: str  # map | default

    def as_dict(self) -> dict:
        return {
            "source": self.source.name, "source_path": self.source.path, "source_class": self.source.class_name,
            "dest": self.dest.name, "dest_path": self.dest.path, "dest_class": self.dest.class_name,
            "matched_by": self.how,
            "states": [{"from": f"{self.source.name}_{s.role}", "to": f"{self.dest.name}_{d.role}",
                        "shape": [None, *d.shape], "source_dtype": s.dtype, "dtype": d.dtype}
                       for s, d in zip(self.source.states, self.dest.states)],
        }

    def line(self) -> str:
        states = ", ".join(f"{s.role} {_shape(s.shape)} -> {d.role}" for s, d in zip(self.source.states, self.dest.states))
        return (f"A:{self.source.name} ({self.source.class_name}) final state -> initial state of "
                f"B:{self.dest.name} ({self.dest.class_name}): {states}  [{self.how}]")


def _shape(shape) -> str:
    return "(None, " + ", ".join(str(d) for d in shape) + ")"


def _resolve_site(sites: list, wanted: str, side: str, artifact: ModelArtifact) -> Site:
    exact = [s for s in sites if s.name == wanted]
    hits = exact or [s for s in sites if wanted in (s.layer, s.path, *s.model_path)]
    if not hits:
        known = ", ".join(s.name for s in sites) or "none"
        raise UsageError(f"{side} ({artifact.path}) has no recurrent site {wanted!r}; its sites: {known}")
    if len(hits) > 1:
        raise UsageError(f"{wanted!r} names {len(hits)} recurrent sites of {side} "
                         f"({', '.join(s.name for s in hits)}); name one site")
    return hits[0]


def site_pairs(a: ModelArtifact, b: ModelArtifact, mapping: list, *, mode: str) -> list:
    """Which site of A feeds which site of B; checked for matching state structure.

    Without a mapping: A's last site (its final recurrent layer) feeds B's first site whose
    initial state is not already computed by another layer.
    """
    for side, artifact in (("A", a), ("B", b)):
        if artifact.weights_only:
            raise UsageError(f"{side} ({artifact.path}) holds weights only; --mode {mode} needs a full model")
    a_sites = find_sites(a.model_config, a.family)
    b_sites = find_sites(b.model_config, b.family)
    if not a_sites:
        raise UsageError(f"A ({a.path}) has no recurrent layer whose state could be carried over")
    if not b_sites:
        raise UsageError(f"B ({b.path}) has no recurrent layer to receive a state")
    pairs = []
    if mapping:
        for src, dst in mapping:
            pairs.append(SitePair(_resolve_site(a_sites, src, "A", a),
                                  _resolve_site(b_sites, dst, "B", b), "map"))
    else:
        free = [s for s in b_sites if not s.fed_by_graph]
        if not free:
            raise UsageError(f"every recurrent site of B ({b.path}) already takes its initial state from "
                             "another layer; nothing can receive A's state")
        pairs.append(SitePair(a_sites[-1], free[0], "default"))
    seen = set()
    for pair in pairs:
        if pair.dest.name in seen:
            raise UsageError(f"B:{pair.dest.name} receives a state twice")
        seen.add(pair.dest.name)
        check_states(pair)
    return pairs


def check_states(pair: SitePair) -> None:
    src, dst = pair.source, pair.dest
    if dst.fed_by_graph:
        raise UsageError(f"B:{dst.name} already takes its initial state from another layer; "
                         "choose another site of B with --map")
    src_shapes = [tuple(s.shape) for s in src.states]
    dst_shapes = [tuple(s.shape) for s in dst.states]
    if src_shapes != dst_shapes or any(None in shape for shape in src_shapes):
        described_src = ", ".join(f"{s.role} {_shape(s.shape)}" for s in src.states)
        described_dst = ", ".join(f"{s.role} {_shape(s.shape)}" for s in dst.states)
        why = "units differ" if len(src_shapes) == len(dst_shapes) else "different state structure"
        raise UsageError(
            f"A:{src.name} ({src.class_name}) gives states [{described_src}] but B:{dst.name} "
            f"({dst.class_name}) takes [{described_dst}]: {why}"
        )


# ----------------------------------------------------------------------------------------
# Building the composite (live Keras)


@dataclass
class Chain:
    model: object           # the composite
    source: object          # A rewired: state outputs after its own outputs
    dest: object            # B rewired: state inputs after its own inputs
    source_plan: object
    dest_plan: object
    routes: list            # for each of dest's state inputs, the index of A's state output feeding it
    source_inputs: int


def rewired(model, family, sites: list, *, outputs: bool, inputs: bool, name: str, custom_objects=None):
    """(model rewired through its own serialization, plan), renamed `name`."""
    config = family.serialize(model)
    new_config, plan = rewire_states(config, family.name, layers=selectors(sites), outputs=outputs, inputs=inputs)
    check_selected(plan, sites)
    new_config["config"]["name"] = name
    rebuilt = family.deserialize(new_config, custom_objects)
    transfer_weights(model, rebuilt)
    return rebuilt, plan, new_config


def selectors(sites: list) -> list:
    """Names that make rewire_states select exactly these sites.

    The rewiring engine names sites inside nested models without their model prefix while
    it walks them, so a nested site is selected by its path (all calls of the nested model).
    """
    return [site.path if site.model_path else site.name for site in sites]


def check_selected(plan, sites: list) -> None:
    wanted = {site.name for site in sites}
    extra = sorted({s.site for s in (*plan.outputs, *plan.inputs)} - wanted)
    if extra:
        raise NotSupportedError(
            f"{extra[0]!r} is another call of a nested model holding {min(wanted)!r}; a site inside a "
            "nested model called more than once cannot be chosen alone"
        )


def build_chain(model_a, model_b, pairs: list, *, custom_objects=None) -> Chain:
    family = families.of_model(model_a)
    if families.of_model(model_b).name != family.name:
        raise NotSupportedError(
            f"A is a {family.name} model and B a {families.of_model(model_b).name} model: a composite "
            "model needs both in the same Keras (translate one with `convert` first)"
        )
    keras = family.keras
    a_name, b_name = _distinct_names(model_a.name, model_b.name)
    source, source_plan, _ = rewired(model_a, family, [p.source for p in pairs], outputs=True, inputs=False,
                                     name=a_name, custom_objects=custom_objects)
    dest, dest_plan, _ = rewired(model_b, family, [p.dest for p in pairs], outputs=False, inputs=True,
                                 name=b_name, custom_objects=custom_objects)
    if dest_plan.skipped:
        site, reason = dest_plan.skipped[0]
        raise UsageError(f"B:{site} cannot take A's state: {reason}")
    by_dest = {p.dest.name: p for p in pairs}
    out_index = {(s.site, s.role): i for i, s in enumerate(source_plan.outputs)}
    routes = []
    for state in dest_plan.inputs:
        pair = by_dest[state.site]
        role_index = [s.role for s in pair.dest.states].index(state.role)
        routes.append(out_index[(pair.source.name, pair.source.states[role_index].role)])
    n_a = len(source.inputs)
    n_b = dest_plan.original_inputs
    taken: set = set()
    a_inputs = [_input_like(keras, t, "a", taken) for t in source.inputs]
    b_inputs = [_input_like(keras, t, "b", taken) for t in dest.inputs[:n_b]]
    a_out = families.as_list(source(a_inputs if n_a > 1 else a_inputs[0]))
    states = a_out[source_plan.original_outputs:]
    b_feed = b_inputs + [states[i] for i in routes]
    b_out = dest(b_feed if len(b_feed) > 1 else b_feed[0])
    composite = keras.Model(a_inputs + b_inputs, b_out, name=f"{a_name}_then_{b_name}"[:120])
    return Chain(composite, source, dest, source_plan, dest_plan, routes, n_a)


def _distinct_names(first: str, second: str) -> tuple:
    if first != second:
        return first, second
    return f"a_{first}", f"b_{second}"


def _input_like(keras, tensor, side: str, taken: set):
    name = tensor.name.split(":")[0] if getattr(tensor, "name", None) else f"{side}_input"
    if name in taken:
        name = f"{side}_{name}"
    while name in taken:
        name += "_"
    taken.add(name)
    return keras.Input(batch_shape=tuple(tensor.shape), dtype=str(getattr(tensor.dtype, "name", tensor.dtype)),
                       name=name)


# ----------------------------------------------------------------------------------------
# Checking


def verify_chain(chain: Chain, written, model_a, model_b, pairs: list, *, batch: int = 4, seed: int = 0,
                 data=None) -> CheckReport:
    """The written composite equals running A, taking its states and feeding them to B;
    A's states equal the NumPy oracle; B's rewiring keeps B's own outputs identical."""
    from surgery.check.verify import random_inputs, verify

    family = families.of_model(written)
    values = random_inputs(written, batch=batch, seed=seed, data=data)
    got = family.call(written, values)
    a_values, b_values = values[: chain.source_inputs], values[chain.source_inputs:]
    a_data, b_data = (a_values, b_values) if data is not None else (None, None)
    a_out = family.call(chain.source, a_values)
    states = a_out[chain.source_plan.original_outputs:]
    expected = family.call(chain.dest, b_values + [states[i] for i in chain.routes])
    diffs = [_diff(g, e) for g, e in zip(got, expected)]
    source_sites = find_sites(family.serialize(chain.source), family.name)
    a_report = verify(model_a, chain.source, chain.source_plan, source_sites, batch=batch, seed=seed, data=a_data)
    dest_sites = find_sites(family.serialize(chain.dest), family.name)
    b_report = verify(model_b, chain.dest, chain.dest_plan, dest_sites, batch=batch, seed=seed, data=b_data)
    exact = {f"composite output {i}": diff for i, diff in enumerate(diffs)}
    checks = {}
    for side, part in (("A", a_report), ("B", b_report)):
        part_exact, part_checks = prefixed(side, part)
        exact.update(part_exact)
        checks.update(part_checks)
    report = CheckReport(
        what="the composite against running A then B on A's states; rewired A and B (zero state) against "
             "their originals",
        exact=exact, checks=checks, batch=batch, note=a_report.note or b_report.note,
        exact_label="output(s)", checks_label="state output(s) vs NumPy oracle",
        facts={
            "composite_vs_a_then_b_max_abs_diff": diffs,
            "a_outputs_identical": a_report.outputs_identical,
            "a_state_oracle_max_abs_diff": a_report.state_errors,
            "a_state_tolerance": {name: b.describe() for name, b in a_report.tolerances.items()},
            "a_state_check": (tolerance.worst(a_report.checks.values()).describe("A's state(s) vs NumPy oracle")
                              if a_report.checks else "A has no state outputs to check"),
            "b_outputs_identical_with_zero_state": b_report.outputs_identical,
        })
    return raise_if_failed(report)


def _diff(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf")
    return float(np.max(np.abs(got - want))) if got.size else 0.0
