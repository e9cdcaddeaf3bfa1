"""The one report every verification hands back.

A CheckReport says what was checked (`what`), the values claimed bit-exact (`exact`: name ->
max |diff|, each must be 0), the comparisons judged by the tolerance policy (`checks`: name ->
surgery.check.tolerance.Comparison) and the facts of the run (batch, data, note, `facts`).
Every operation's report is one (VerifyReport, StreamReport and StepReport are subclasses that
add only their own derived views), so each reads the same way: one `summary()` (verdict, what,
the worst exact difference, the worst comparison with its bound, the mismatched names), one
`as_dict()` with a common JSON core, and one `raise_if_failed`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from surgery.check import tolerance
from surgery.errors import VerificationError

SHOWN_MISMATCHES = 10  # names a failed summary lists; the rest are counted


@dataclass
class CheckReport:
    what: str = ""                                                      # one phrase: what was checked
    exact: dict[str, float] = field(default_factory=dict)               # claimed bit-exact: max |diff| == 0
    checks: dict[str, tolerance.Comparison] = field(default_factory=dict)  # under the tolerance policy
    batch: int | None = None
    data: str | None = None   # where the inputs came from, when the user gave them
    note: str | None = None   # how the check ran where the models cannot (e.g. cuDNN on CPU)
    facts: dict = field(default_factory=dict)  # anything else as_dict reports (JSON-able)
    # How the summary counts the two kinds: "1 original output(s) identical", "4 state output(s) vs ...".
    exact_label: str = "value(s) claimed bit-exact"
    checks_label: str = "value(s) under the tolerance policy"

    @property
    def exact_ok(self) -> bool:
        return all(diff == 0.0 for diff in self.exact.values())  # NaN is never 0

    @property
    def checks_ok(self) -> bool:
        return all(c.ok for c in self.checks.values())

    @property
    def ok(self) -> bool:
        return self.exact_ok and self.checks_ok

    @property
    def worst_exact(self) -> float:
        return max((diff if diff == diff else math.inf for diff in self.exact.values()), default=0.0)

    @property
    def errors(self) -> dict[str, float]:
        """max |diff| of each tolerance comparison."""
        return {name: c.max_abs_diff for name, c in self.checks.items()}

    @property
    def bounds(self) -> dict[str, tolerance.Bound]:
        return {name: c.bound for name, c in self.checks.items()}

    @property
    def mismatched(self) -> list[str]:
        return ([name for name, diff in self.exact.items() if diff != 0.0]
                + [name for name, c in self.checks.items() if not c.ok])

    def summary(self) -> str:
        parts = [self.what] if self.what else []
        if self.exact:
            parts.append(f"{len(self.exact)} {self.exact_label} {'identical' if self.exact_ok else 'differ'} "
                         f"(max |diff| {self.worst_exact:.3g})")
        if self.checks:
            parts.append(tolerance.worst(self.checks.values()).describe(f"{len(self.checks)} {self.checks_label}"))
        else:
            parts.append(f"no {self.checks_label}")
        if self.data:
            parts.append(f"on inputs from {self.data}")
        if self.note:
            parts.append(self.note)
        bad = self.mismatched
        if bad:
            more = len(bad) - SHOWN_MISMATCHES
            parts.append("mismatched: " + ", ".join(bad[:SHOWN_MISMATCHES]) + (f" and {more} more" if more > 0 else ""))
        head = ("verified" if self.ok else "VERIFICATION FAILED") + ": " + "; ".join(parts)
        return "\n".join([head, *self.detail_lines()])

    def detail_lines(self) -> list[str]:
        """Lines a report type adds below the summary's first line (indented)."""
        return []

    def details(self) -> dict:
        """Keys a report type adds to as_dict (they never replace the common ones)."""
        return {}

    def as_dict(self) -> dict:
        """The common core, then `facts` and `details()`; inf and NaN become null (JSON has neither)."""
        out = {"ok": self.ok, "what": self.what, "summary": self.summary(),
               "exact": dict(self.exact), "checks": {name: c.as_dict() for name, c in self.checks.items()},
               "mismatched": self.mismatched, "batch": self.batch, "data": self.data, "note": self.note}
        for key, value in {**self.facts, **self.details()}.items():
            out.setdefault(key, value)
        return json_safe(out)


def raise_if_failed(report: CheckReport) -> CheckReport:
    """The report, or VerificationError with its summary when it failed."""
    if not report.ok:
        raise VerificationError(report.summary())
    return report


def prefixed(prefix: str, report: CheckReport) -> tuple[dict[str, float], dict[str, tolerance.Comparison]]:
    """(exact, checks) of a part report with names `<prefix> <name>`, to merge into a whole."""
    return ({f"{prefix} {name}": diff for name, diff in report.exact.items()},
            {f"{prefix} {name}": c for name, c in report.checks.items()})


def json_safe(value):
    """`value` with every non-finite float (inf, NaN) as None, through dicts, lists and tuples."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value
