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

Comparisons claimed bit-exact (original outputs after surgery) do not come here: they are
compared for max |diff| == 0 by their callers.
"""

from __future__ import annotations

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

    @property
    def growth(self) -> float:
        return math.sqrt(self.steps / REFERENCE_STEPS) if self.steps > REFERENCE_STEPS else 1.0

    def allowed(self, ref) -> np.ndarray:
        return (self.atol + self.rtol * np.maximum(np.abs(np.asarray(ref, dtype=np.float64)), self.scale)) * self.growth

    def describe(self) -> str:
        magnitude = f"max(|ref|, {self.scale:.3g})" if self.scale else "|ref|"
        core = f"{self.atol:g} + {self.rtol:g}*{magnitude}" if self.rtol else f"{self.atol:g}"
        if self.growth == 1.0:
            return f"{core} ({self.dtype})"
        return f"({core}) x {self.growth:.3g} ({self.dtype}, T={self.steps})"

    def as_dict(self) -> dict:
        return {"atol": self.atol, "rtol": self.rtol, "dtype": self.dtype, "steps": self.steps, "scale": self.scale,
                "growth": self.growth, "bound": self.describe()}


def bound_for(dtype, *, steps: int = 1, scale: float = 0.0) -> Bound:
    """The policy's bound for values computed in `dtype` over a recurrence of `steps` steps
    whose states reach magnitude `scale` (see Bound.scale; `magnitude` computes it)."""
    name = str(getattr(dtype, "name", dtype))
    name = name if name in POLICY else DEFAULT_DTYPE
    atol, rtol = POLICY[name]
    return Bound(atol, rtol, name, max(int(steps or 1), 1), float(scale))


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
