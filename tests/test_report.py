"""The one report type (surgery/check/report.py): every operation's verification reads, fails and
serializes the same way. Pure NumPy: no model is needed to judge a report."""

import json
import math

import numpy as np
import pytest

from surgery.check import tolerance
from surgery.check.report import CheckReport, prefixed, raise_if_failed
from surgery.errors import VerificationError

BOUND = tolerance.bound_for("float32", steps=10)
CORE = {"ok", "what", "summary", "exact", "checks", "mismatched", "batch", "data", "note"}


def _within():
    return tolerance.compare([1.0, 2.0], [1.0, 2.0 + 1e-7], BOUND)


def _beyond():
    return tolerance.compare([1.0, 2.0], [1.0, 2.1], BOUND)


def test_passing_report_summary_and_common_core():
    report = CheckReport(what="the thing against its original", exact={"output 0": 0.0, "output 1": -0.0},
                         checks={"lstm_h": _within()}, batch=4, data="x.npy", note="on a stand-in",
                         exact_label="original output(s)", checks_label="state output(s) vs NumPy oracle",
                         facts={"layers_checked": 3, "ok": "never replaces the core"})
    assert report.ok and report.exact_ok and report.checks_ok and report.mismatched == []
    assert report.summary() == (
        "verified: the thing against its original; 2 original output(s) identical (max |diff| 0); "
        + _within().describe("1 state output(s) vs NumPy oracle") + "; on inputs from x.npy; on a stand-in")
    payload = report.as_dict()
    assert CORE <= set(payload) and payload["ok"] is True and payload["layers_checked"] == 3
    assert payload["summary"] == report.summary() and payload["exact"] == {"output 0": 0.0, "output 1": 0.0}
    assert payload["checks"]["lstm_h"] == _within().as_dict()
    assert (payload["batch"], payload["data"], payload["note"]) == (4, "x.npy", "on a stand-in")
    assert report.errors == {"lstm_h": _within().max_abs_diff} and report.bounds == {"lstm_h": BOUND}


def test_ok_needs_every_exact_value_zero_and_every_comparison_within():
    assert CheckReport().ok  # nothing claimed, nothing failed
    assert not CheckReport(exact={"a": 0.0, "b": 1e-12}).ok
    assert not CheckReport(exact={"a": math.nan}).ok  # NaN is never "identical"
    assert not CheckReport(checks={"s": _within(), "t": _beyond()}).ok
    assert CheckReport(exact={"a": 0.0}, checks={"s": _within()}).ok


def test_failed_exact_value_is_named_and_raised_with_the_summary():
    report = CheckReport(what="outputs", exact={"output 0": 0.0, "output 1": 2.5e-8}, checks={"s": _within()})
    assert not report.ok and report.checks_ok and not report.exact_ok
    text = report.summary()
    assert text.startswith("VERIFICATION FAILED: outputs; ")
    assert "2 value(s) claimed bit-exact differ (max |diff| 2.5e-08)" in text
    assert text.endswith("mismatched: output 1")
    with pytest.raises(VerificationError) as raised:
        raise_if_failed(report)
    assert str(raised.value) == text
    passing = CheckReport(exact={"output 0": 0.0})
    assert raise_if_failed(passing) is passing


def test_failed_comparison_is_described_with_its_bound_and_named():
    report = CheckReport(what="states", checks={"lstm_h": _within(), "lstm_c": _beyond()},
                         checks_label="state(s) vs NumPy oracle")
    assert not report.ok and report.exact_ok and report.mismatched == ["lstm_c"]
    text = report.summary()
    assert _beyond().describe("2 state(s) vs NumPy oracle") in text and "EXCEEDS" in text
    assert text.endswith("mismatched: lstm_c") and report.as_dict()["mismatched"] == ["lstm_c"]
    with pytest.raises(VerificationError, match="lstm_c"):
        raise_if_failed(report)


def test_many_mismatches_are_counted_not_all_listed():
    report = CheckReport(exact={f"output {i}": 1.0 for i in range(13)})
    assert report.summary().endswith("output 8, output 9 and 3 more")
    assert len(report.as_dict()["mismatched"]) == 13


def test_as_dict_is_strict_json_with_inf_and_nan():
    shape_mismatch = tolerance.compare(np.zeros(3), np.zeros(4), BOUND)
    assert math.isinf(shape_mismatch.max_abs_diff)
    report = CheckReport(exact={"output 0": math.inf, "output 1": math.nan}, checks={"h": shape_mismatch},
                         facts={"per_run": [{"outputs": {"y": math.inf}}, (0.5, -math.inf)]})
    payload = json.loads(json.dumps(report.as_dict(), allow_nan=False))
    assert payload["ok"] is False and payload["exact"] == {"output 0": None, "output 1": None}
    assert payload["checks"]["h"]["max_abs_diff"] is None
    assert payload["per_run"] == [{"outputs": {"y": None}}, [0.5, None]]
    assert "max |diff| inf" in payload["summary"] and "output 0, output 1, h" in payload["summary"]


def test_prefixed_merges_part_reports_under_their_names():
    part = CheckReport(exact={"output 0": 0.0}, checks={"lstm_h": _within()})
    exact, checks = prefixed("A", part)
    assert exact == {"A output 0": 0.0} and checks == {"A lstm_h": _within()}


def test_every_operation_report_is_the_one_type_with_its_own_views():
    from surgery.check.verify import VerifyReport
    from surgery.ops.seq2seq.run import StepReport
    from surgery.ops.stream.verify import StreamReport

    verify = VerifyReport(exact={"output 0": 0.0}, checks={"lstm_h": _within()}, batch=4)
    assert verify.summary().startswith("verified: the rebuilt model against its original; 1 original output(s) "
                                       "identical (max |diff| 0); 1 state output(s) vs NumPy oracle: ")
    assert verify.output_diffs == [0.0] and verify.outputs_identical and verify.states_ok
    assert verify.as_dict()["state_max_abs_diff"] == verify.state_errors == {"lstm_h": _within().max_abs_diff}
    assert CORE | {"outputs_identical", "output_max_abs_diff", "state_tolerance", "state_checks"} <= set(
        verify.as_dict())

    step = StepReport(steps=3, batch=2, checks={"dense": _beyond()})
    assert step.summary().startswith("VERIFICATION FAILED: encoder, then the decoder step model run 3 step(s)")
    assert step.output_diffs == {"dense": _beyond().max_abs_diff} and step.as_dict()["steps"] == 3

    stream = StreamReport(length=20, tolerance=1e-5)
    assert stream.check("output y", [1.0, 2.0], [1.0, 2.0]) == 0.0
    stream.check("output y", [1.0, 2.0], [1.0, 2.5])  # the worst per key is kept
    assert not stream.ok and stream.checks["output y"].max_abs_diff == 0.5
    assert stream.summary().startswith("VERIFICATION FAILED: streaming against the full-sequence model (T=20); ")
    assert "out of bound: output y" in stream.summary()
    assert stream.as_dict()["length"] == 20 and stream.as_dict()["mismatched"] == ["output y"]
    for report in (verify, step, stream):
        assert isinstance(report, CheckReport)
