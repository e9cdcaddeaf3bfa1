"""The one tolerance policy for every numerical comparison that is not claimed bit-exact.

A value computed in floating point differs from its reference by an error that scales with
the magnitude of the value: trained LSTMs reach |c| ~ 20-30, where float32 (eps 6e-8) vs
the float64 oracle differ by ~5e-5 after a few steps while a toy model's |c| < 1 differs by
~1e-7. So the check is elementwise

    |got - ref| <= (atol + rtol * |ref|) * growth(T)

with atol/rtol per compute dtype and growth(T) = sqrt(T / 100) for recurrences longer than
100 steps (rounding errors of a recurrence random-walk; 1 below that). For float32 the bound
stays under 1e-3 for |ref| <= 40 at T <= 500, so every semantic slip (gate order,
activation, mask ignored, reset_after, bias layout: all >= 1e-3 on such models) is caught;
tests/test_tolerance.py proves it on a model with |c| ~ 25.

Some trained recurrences amplify rounding: a perturbation of one ulp in their inputs moves
the final state by 1e-4 or more (textgenrnn's second CuDNN LSTM from random initial states:
Keras float32 vs the oracle 1.07e-3, while Keras in float64 matches the oracle to 7e-13).
No fixed bound fits both such a model and the semantic slips above, so when the plain bound
is exceeded, the caller measures the recurrence's own amplification: the oracle is run again
on inputs and initial states perturbed by one float32 rounding (random sign, relative 2^-24)
and the bound gains SENSITIVITY_FACTOR x that divergence, elementwise. On a well-conditioned
model the divergence is ~1e-12 and the bound is unchanged; the report names the term.

Comparisons claimed bit-exact (original outputs after surgery) do not come here: they are
compared for max |diff| == 0 by their callers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

# Per compute dtype: (atol, rtol). float16/bfloat16 are mixed-precision computes (10 and 5
# ulps of rtol); float64 compares a float64 Keras model with the float64 oracle.
POLICY: dict[str, tuple[float, float]] = {
    "float64": (1e-9, 1e-9),
    "float32": (1e-5, 1e-5),
    "float16": (2e-2, 1e-2),
    "bfloat16": (1e-1, 4e-2),
}
DEFAULT_DTYPE = "float32"
# float32 rounds every op of every step (about a dozen per gate update) where the probe
# perturbs only the inputs once: the measured divergence times this covers it.
SENSITIVITY_FACTOR = 16.0
# Past this the recurrence is chaotic on these inputs: float32 results carry no information a
# check could resolve, so the term is not granted and the check fails, saying why (verify on
# real inputs with --data instead of random ones).
MAX_AMPLIFICATION = 1e-2
# Recurrences up to this many steps get the plain bound; longer ones grow by sqrt(T / this).
REFERENCE_STEPS = 100


@dataclass(frozen=True)
class Bound:
    """|got - ref| <= (atol + rtol * |ref|) * growth, elementwise."""

    atol: float
    rtol: float
    dtype: str
    steps: int = 1   # recurrence length the compared values accumulated error over
    # The largest magnitude the recurrence carries (e.g. max |c| of an LSTM): a state's
    # rounding error follows the size of what it is computed from, not its own (a saturated
    # h near 0 next to |c| ~ 24 carries that cell's error). |ref| is floored at it.
    scale: float = 0.0
    # Measured amplification of the recurrence (max |oracle(perturbed) - oracle|, see the
    # module doc); SENSITIVITY_FACTOR times it is added to the bound. 0: not measured.
    sensitivity: float = 0.0

    @property
    def growth(self) -> float:
        return math.sqrt(self.steps / REFERENCE_STEPS) if self.steps > REFERENCE_STEPS else 1.0

    @property
    def amplification(self) -> float:
        term = SENSITIVITY_FACTOR * self.sensitivity
        return term if term <= MAX_AMPLIFICATION else 0.0

    def allowed(self, ref) -> np.ndarray:
        plain = (self.atol + self.rtol * np.maximum(np.abs(np.asarray(ref, dtype=np.float64)), self.scale))
        return plain * self.growth + self.amplification

    def describe(self) -> str:
        magnitude = f"max(|ref|, {self.scale:.3g})" if self.scale else "|ref|"
        core = f"{self.atol:g} + {self.rtol:g}*{magnitude}" if self.rtol else f"{self.atol:g}"
        amplified = (f" + {SENSITIVITY_FACTOR:g}*{self.sensitivity:.2g} (measured amplification of "
                     "1-ulp input changes)") if self.amplification else ""
        if self.sensitivity and not self.amplification:
            amplified = (f"; the recurrence amplifies one rounding to {self.sensitivity:.2g} on these inputs "
                         "(chaotic: no float32 check can resolve it; verify on real inputs with --data)")
        if self.growth == 1.0:
            return f"{core}{amplified} ({self.dtype})"
        return f"({core}) x {self.growth:.3g}{amplified} ({self.dtype}, T={self.steps})"

    def as_dict(self) -> dict:
        return {"atol": self.atol, "rtol": self.rtol, "dtype": self.dtype, "steps": self.steps, "scale": self.scale,
                "growth": self.growth, "sensitivity": self.sensitivity, "bound": self.describe()}


def bound_for(dtype, *, steps: int = 1, scale: float = 0.0) -> Bound:
    """The policy's bound for values computed in `dtype` over a recurrence of `steps` steps
    whose states reach magnitude `scale` (see Bound.scale; `magnitude` computes it)."""
    name = str(getattr(dtype, "name", dtype))
    name = name if name in POLICY else DEFAULT_DTYPE
    atol, rtol = POLICY[name]
    return Bound(atol, rtol, name, max(int(steps or 1), 1), float(scale))


# Relative size of one rounding in each compute dtype: what the sensitivity probe perturbs by.
UNIT_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}


def perturbed(values, dtype, seed: int = 0) -> list:
    """Each array times (1 + s*u), s a random sign, u one rounding of `dtype` (float64 out)."""
    rng = np.random.default_rng(seed)
    unit = UNIT_ROUNDOFF.get(str(getattr(dtype, "name", dtype)), UNIT_ROUNDOFF[DEFAULT_DTYPE])
    out = []
    for value in values:
        array = np.asarray(value, dtype=np.float64)
        out.append(array * (1.0 + unit * rng.choice((-1.0, 1.0), size=array.shape)))
    return out


def with_sensitivity(bound: Bound, reference, rerun) -> Bound:
    """`bound` plus the measured amplification: max |rerun() - reference| over the arrays."""
    again = rerun()
    spread = max((float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                  for a, b in zip(again, reference) if np.size(a)), default=0.0)
    return dataclasses.replace(bound, sensitivity=spread if math.isfinite(spread) else 0.0)


def magnitude(values) -> float:
    """The largest finite |value| among reference arrays (a recurrence's states): Bound.scale."""
    finite = [np.abs(a[np.isfinite(a)]) for a in (np.asarray(v, dtype=np.float64) for v in values)]
    return float(max((a.max() for a in finite if a.size), default=0.0))


def widest(bounds) -> Bound:
    """The loosest of several bounds (one report over states of mixed dtypes)."""
    bounds = list(bounds)
    if not bounds:
        return bound_for(DEFAULT_DTYPE)
    return max(bounds, key=lambda b: (b.atol + b.rtol) * b.growth)


def absolute(atol: float) -> Bound:
    """A fixed absolute bound, for callers that ask for one explicitly."""
    return Bound(float(atol), 0.0, "absolute")


def as_bound(value) -> Bound:
    return value if isinstance(value, Bound) else absolute(value)


@dataclass(frozen=True)
class Comparison:
    """One elementwise comparison against a bound, reduced to what a report says."""

    bound: Bound
    max_abs_diff: float
    worst_diff: float = 0.0   # |diff| at the element nearest to (or furthest past) its bound
    worst_ref: float = 0.0    # |ref| at that element
    ratio: float = 0.0        # worst_diff / allowed there: <= 1 passes

    @property
    def ok(self) -> bool:
        return self.ratio <= 1.0

    def describe(self, what: str = "") -> str:
        """E.g. "states vs NumPy oracle: max |diff| 5.3e-05 at |ref| 24.1, within 1e-05 + 1e-05*|ref| (float32)"."""
        head = f"{what}: " if what else ""
        if math.isinf(self.max_abs_diff):
            return f"{head}shapes differ or values are not finite, {self.bound.describe()} not met"
        at = f"max |diff| {self.max_abs_diff:.3g}"
        if self.worst_diff == self.max_abs_diff:
            at += f" at |ref| {self.worst_ref:.3g}"
        else:
            at += f"; nearest its bound {self.worst_diff:.3g} at |ref| {self.worst_ref:.3g}"
        verdict = "within" if self.ok else f"EXCEEDS ({self.ratio:.3g}x)"
        return f"{head}{at}, {verdict} {self.bound.describe()}"

    def as_dict(self) -> dict:
        def finite(x):
            return x if math.isfinite(x) else None  # JSON has no inf

        return {"ok": self.ok, "max_abs_diff": finite(self.max_abs_diff), "worst_abs_diff": finite(self.worst_diff),
                "worst_abs_ref": finite(self.worst_ref), "ratio_to_bound": finite(self.ratio),
                "bound": self.bound.describe()}


def compare(got, ref, bound: Bound) -> Comparison:
    """Check `got` against `ref` elementwise under `bound`."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return Comparison(bound, math.inf, math.inf, 0.0, math.inf)
    if not got.size:
        return Comparison(bound, 0.0)
    diff = np.abs(got - ref)
    if not np.all(np.isfinite(diff)):
        # NaN/inf where the reference is finite (or the other way round) is never float error.
        same = np.array_equal(got, ref, equal_nan=True)
        if not same:
            return Comparison(bound, math.inf, math.inf, 0.0, math.inf)
        diff = np.where(np.isfinite(diff), diff, 0.0)
    allowed = bound.allowed(np.where(np.isfinite(ref), ref, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(diff == 0, 0.0, diff / allowed)
    worst = int(np.argmax(ratios))
    return Comparison(bound, float(diff.max()), float(diff.flat[worst]), float(abs(ref.flat[worst])),
                      float(ratios.flat[worst]))


def worst(comparisons, bound: Bound | None = None) -> Comparison:
    """The comparison nearest to (or furthest past) its bound; max |diff| over all of them."""
    comparisons = list(comparisons)
    if not comparisons:
        return Comparison(bound or bound_for(DEFAULT_DTYPE), 0.0)
    top = max(comparisons, key=lambda c: c.ratio)
    biggest = max(c.max_abs_diff for c in comparisons)
    if biggest == top.max_abs_diff:
        return top
    return Comparison(top.bound, biggest, top.worst_diff, top.worst_ref, top.ratio)
