"""Real trained recurrent models from public packages, through the real CLI.

Slow and opt-in: `make test-real` (fetches into the cache first), or
`python tests/real/fetch.py && pytest -m real -p no:xdist tests/real`.
Every command runs `lstm-surgery` in a subprocess; the states it exposes are checked against
the project's NumPy oracle fed with the raw weights read from the file with h5py
(tests/real/real_oracle.py), never with the tool's own loading. Expected outcomes other than
"exit 0, verified" are listed per model and command in models.json (`expect`).

A JSON summary of every command is written to $LSTM_SURGERY_REAL_REPORT (default:
<cache>/report.json).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

import fetch  # noqa: E402
import real_oracle  # noqa: E402

pytestmark = [pytest.mark.real, pytest.mark.slow]

MODELS = fetch.load_models()
CACHE = fetch.cache_dir()
REPORT = Path(os.environ.get("LSTM_SURGERY_REAL_REPORT") or CACHE / "report.json")
BATCH = 3
FREE_TIME = 10  # timesteps used where the file leaves time free


def _missing() -> list[str]:
    return [m["id"] for m in MODELS if not fetch.model_path(m, CACHE).exists()]


@pytest.fixture(scope="session", autouse=True)
def _cache_present():
    missing = _missing()
    if missing:
        pytest.skip(
            f"real-model cache {CACHE} lacks {', '.join(missing)}: run `python tests/real/fetch.py` "
            f"(or `make test-real`); set LSTM_SURGERY_REAL_CACHE to use another folder"
        )


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

_results: dict[str, dict] = {}


def _record(model_id: str, command: str, entry: dict) -> None:
    _results.setdefault(model_id, {})[command] = entry
    try:
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        old = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    except (OSError, ValueError):
        old = {}
    old.setdefault(model_id, {})[command] = entry
    REPORT.write_text(json.dumps(old, indent=1, default=str))


def _cli() -> list[str]:
    exe = shutil.which("lstm-surgery")
    return [exe] if exe else [sys.executable, str(ROOT / "cli.py")]


def run_cli(args: list[str], timeout: int = 1800) -> tuple[int, dict | None, str]:
    proc = subprocess.run(_cli() + args, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    doc = None
    if "--json" in args:
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            doc = None
    err = [line for line in proc.stderr.splitlines() if line.startswith(("error", "internal error", "unexpected"))]
    return proc.returncode, doc, (err[-1] if err else proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "")


def run_model(path: Path, feed: dict, custom: str | None, work: Path, tag: str) -> list[tuple[str, np.ndarray]]:
    inp, out = work / f"{tag}.in.npz", work / f"{tag}.out.npz"
    np.savez(inp, **feed)
    cmd = [sys.executable, str(HERE / "run_model.py"), str(path), str(inp), str(out)]
    if custom:
        cmd.append(custom)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode:
        tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?"
        raise AssertionError(f"loading/running {path.name} outside the tool failed: {tail}")
    data = np.load(out)
    keys = sorted(data.files, key=lambda k: int(k.split(":", 1)[0]))
    return [(k.split(":", 1)[1], data[k]) for k in keys]


def close(actual, ref, T: int, states=(), rerun=None) -> tuple[bool, float, float]:
    """float32 Keras vs float64 oracle under the project's one tolerance policy
    (surgery/check/tolerance.py): floored at the layer's largest state magnitude, growing like
    sqrt(T), plus the recurrence's measured amplification of one rounding when the plain
    bound is exceeded and `rerun` (the oracle one rounding away) is given."""
    from surgery.check import tolerance

    bound = tolerance.bound_for("float32", steps=T, scale=tolerance.magnitude(states or [ref]))
    check = tolerance.compare(actual, ref, bound)
    if not check.ok and rerun is not None:
        bound = tolerance.with_sensitivity(bound, [ref], lambda: [rerun()])
        check = tolerance.compare(actual, ref, bound)
    return check.ok, check.max_abs_diff, check.ratio


def _embedding_dim_for(layers: list[dict], input_name: str) -> int | None:
    for layer in layers:
        if input_name not in layer["inbound"]:
            continue
        if layer["class_name"] == "Embedding":
            return int(layer["config"]["input_dim"])
        text = json.dumps(layer["config"])
        if layer["class_name"] in ("TimeDistributed", "Model", "Functional") and '"Embedding"' in text:
            start = text.index('"Embedding"')
            dim = json.loads("{" + text[text.index('"input_dim"', start):].split(",")[0] + "}")
            return int(dim["input_dim"])
    return None


def make_inputs(path: Path, masked: bool, seed: int = 0) -> tuple[list[np.ndarray], int]:
    rng = np.random.default_rng(seed)
    with h5py.File(path, "r") as f:
        layers, in_names, _ = real_oracle.normalized_layers(real_oracle.model_config(f))
    by_name = {layer["name"]: layer for layer in layers}
    arrays, T = [], 1
    for name in in_names:
        shape = list(by_name[name]["config"]["batch_input_shape"])
        shape[0] = BATCH
        if len(shape) > 1 and shape[1] is None:
            shape[1] = FREE_TIME
        shape = [FREE_TIME if s is None else s for s in shape]
        T = max(T, shape[1] if len(shape) > 1 else 1)
        vocab = _embedding_dim_for(layers, name)
        if vocab:
            x = rng.integers(1, vocab, size=shape)
            if masked and len(shape) == 2:
                pad = max(1, shape[1] // 4)
                x[1, -pad:] = 0  # post-padding
                x[2, :pad] = 0  # pre-padding
            dtype = by_name[name]["config"].get("dtype", "float32")
            arrays.append(x.astype("int32" if "int" in str(dtype) else "float32"))
        else:
            arrays.append((0.5 * rng.standard_normal(shape)).astype("float32"))
    return arrays, T


class Model:
    """Per-model state shared by the command tests (one work folder, one inspect)."""

    _cache: dict[str, "Model"] = {}

    def __init__(self, entry: dict, root: Path):
        self.entry = entry
        self.id = entry["id"]
        self.path = fetch.model_path(entry, CACHE)
        self.work = root / self.id
        self.work.mkdir(parents=True, exist_ok=True)
        self.custom = str(HERE / entry["custom_objects"]) if entry.get("custom_objects") else None
        self.masked = "masking" in entry.get("features", [])
        self.inputs, self.T = make_inputs(self.path, self.masked)
        self._inspect = None
        self._reference = None

    @classmethod
    def get(cls, entry: dict, tmp_path_factory) -> "Model":
        if entry["id"] not in cls._cache:
            cls._cache[entry["id"]] = cls(entry, tmp_path_factory.mktemp("real"))
        return cls._cache[entry["id"]]

    def opts(self) -> list[str]:
        return ["--custom-objects", self.custom] if self.custom else []

    def inspect(self) -> dict:
        if self._inspect is None:
            rc, doc, err = run_cli(["inspect", str(self.path), "--json"])
            assert rc == 0 and doc, f"inspect exit {rc}: {err}"
            self._inspect = doc
        return self._inspect

    def site_layers(self) -> dict[str, str]:
        return {s["name"]: s["layer"] for s in self.inspect()["sites"]}

    def reference(self) -> real_oracle.Result:
        if self._reference is None:
            self._reference = real_oracle.run(str(self.path), self.inputs, stop_unsupported=False)
        return self._reference

    def feed(self) -> dict:
        return {f"__pos{i}": x for i, x in enumerate(self.inputs)}


def expectation(entry: dict, command: str) -> dict:
    return entry.get("expect", {}).get(command, {"exit": 0})


def check_outcome(model: Model, command: str, rc: int, doc: dict | None, err: str) -> bool:
    """Assert the expected exit; return True when the command was expected to succeed."""
    want = expectation(model.entry, command)
    _record(model.id, command, {"exit": rc, "error": err or None, "expected_exit": want["exit"],
                                 "verification": (doc or {}).get("verification")})
    if want["exit"] != 0:
        assert rc == want["exit"], f"{command}: expected exit {want['exit']} ({want.get('message')}), got {rc}: {err}"
        if want.get("message"):
            assert want["message"] in err, f"{command}: expected message {want['message']!r}, got: {err}"
        return False
    assert rc == 0, f"{command}: exit {rc}: {err}"
    if doc is not None and isinstance(doc.get("verification"), dict):
        assert doc["verification"].get("ok", True), f"{command}: verification not ok: {doc['verification']}"
    return True


IDS = [m["id"] for m in MODELS]
ENTRIES = {m["id"]: m for m in MODELS}


# --------------------------------------------------------------------------------------
# the commands
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", IDS)
def test_inspect(model_id, tmp_path_factory):
    model = Model.get(ENTRIES[model_id], tmp_path_factory)
    rc, doc, err = run_cli(["inspect", str(model.path), "--json"])
    if not check_outcome(model, "inspect", rc, doc, err):
        return
    assert doc["family"] == model.entry["family"]
    assert doc["supported"], doc.get("unsupported_reason")
    ref = model.reference()
    found = set(model.site_layers().values())
    # every standard recurrent layer of the file is a site
    assert set(ref.states) <= found or not ref.states, f"sites {sorted(found)} miss {sorted(set(ref.states) - found)}"


def _state_map(model: Model, items: list[dict]) -> dict[str, tuple[str, int]]:
    """tool state name -> (layer, index in the oracle's flat state list)."""
    layers = model.site_layers()
    ref = model.reference()
    out = {}
    for item in items:
        layer = layers.get(item["site"], item["site"])
        if layer not in ref.configs:
            continue
        roles = real_oracle.oracle.state_roles(ref.configs[layer])
        role = item["role"]
        for short, long in (("fw_", "forward/"), ("bw_", "backward/")):
            if role.startswith(short):
                role = long + role[len(short):]
        assert role in roles, f"state {item['name']}: role {item['role']!r} is none of the oracle's {roles}"
        out[item["name"]] = (layer, roles.index(role))
    return out


@pytest.mark.parametrize("model_id", IDS)
def test_expose_state_outputs(model_id, tmp_path_factory):
    model = Model.get(ENTRIES[model_id], tmp_path_factory)
    out = model.work / "exposed.h5"
    rc, doc, err = run_cli(["expose-state", str(model.path), "-o", str(out), "--force", "--json", *model.opts()])
    if not check_outcome(model, "expose-state", rc, doc, err):
        return
    ref = model.reference()
    mapping = _state_map(model, doc["state_outputs"])
    assert mapping or not ref.states, "no state output maps to a layer the oracle computed"
    got = dict(run_model(out, model.feed(), model.custom, model.work, "exposed"))
    worst = {}
    for name, (layer, idx) in mapping.items():
        x, mask = ref.layer_inputs[layer]

        def rerun(layer=layer, idx=idx, x=x, mask=mask):
            from surgery.check import tolerance

            moved = tolerance.perturbed([x], "float32")[0]
            return real_oracle.run_recurrent(str(model.path), layer, moved, mask=mask)[1][idx]

        ok, diff, ratio = close(got[name], ref.states[layer][idx], model.T, ref.states[layer], rerun)
        worst[name] = diff
        assert ok, f"state {name} differs from the oracle on the file's raw weights: max |diff| {diff:.3g} ({ratio:.2f}x bound)"
    if ref.outputs:
        originals = [y for n, y in got.items() if n not in {s["name"] for s in doc["state_outputs"]}]
        for y, r in zip(originals, ref.outputs):
            # An output's rounding follows the largest magnitudes upstream (the cell states).
            ok, diff, _ = close(y, r, model.T, [r, *(v for vs in ref.states.values() for v in vs)])
            assert ok, f"original output differs from the NumPy model: {diff:.3g}"
    _results[model.id]["expose-state"]["oracle_max_abs_diff"] = worst
    _record(model.id, "expose-state", _results[model.id]["expose-state"])


@pytest.mark.parametrize("model_id", IDS)
def test_expose_state_inputs(model_id, tmp_path_factory):
    model = Model.get(ENTRIES[model_id], tmp_path_factory)
    out = model.work / "exposed_in.h5"
    rc, doc, err = run_cli(["expose-state", str(model.path), "-o", str(out), "--inputs", "--force", "--json", *model.opts()])
    if not check_outcome(model, "expose-state --inputs", rc, doc, err):
        return
    ref = model.reference()
    ins = _state_map(model, doc["state_inputs"])
    outs = _state_map(model, doc["state_outputs"])
    if not ins:
        return
    # drive the first recurrent layer that takes a state input from a nonzero initial state
    rng = np.random.default_rng(1)
    first_layer = next(iter(ref.states))
    feed = model.feed()
    initial: dict[str, list] = {}
    for item in doc["state_inputs"]:
        shape = [BATCH] + [d for d in item["shape"][1:]]
        layer_idx = ins.get(item["name"])
        value = (0.5 * rng.standard_normal(shape)).astype("float32") if layer_idx and layer_idx[0] == first_layer else np.zeros(shape, "float32")
        feed[item["name"]] = value
        if layer_idx and layer_idx[0] == first_layer:
            initial.setdefault(first_layer, [None] * len(ref.states[first_layer]))[layer_idx[1]] = value
    if first_layer not in initial or any(v is None for v in initial[first_layer]):
        pytest.fail(f"no complete set of state inputs for {first_layer}: {sorted(ins)}")
    got = dict(run_model(out, feed, model.custom, model.work, "exposed_in"))
    x, mask = ref.layer_inputs[first_layer]
    _, states = real_oracle.run_recurrent(str(model.path), first_layer, x, mask=mask, initial_state=initial[first_layer])
    checked = 0
    for name, (layer, idx) in outs.items():
        if layer != first_layer:
            continue
        def rerun(idx=idx):
            from surgery.check import tolerance

            moved = tolerance.perturbed([x, *initial[first_layer]], "float32")
            return real_oracle.run_recurrent(str(model.path), first_layer, moved[0], mask=mask,
                                             initial_state=moved[1:])[1][idx]

        ok, diff, ratio = close(got[name], states[idx], model.T, states, rerun)
        assert ok, f"{name} from a nonzero initial state differs from the oracle: {diff:.3g} ({ratio:.2f}x bound)"
        checked += 1
    assert checked, "no state output of the first recurrent layer to compare"


@pytest.mark.parametrize("model_id", IDS)
def test_convert(model_id, tmp_path_factory):
    model = Model.get(ENTRIES[model_id], tmp_path_factory)
    out = model.work / "converted.keras"
    rc, doc, err = run_cli(["convert", str(model.path), "-o", str(out), "--force", "--json", *model.opts()])
    if not check_outcome(model, "convert", rc, doc, err):
        return
    ref = model.reference()
    if not ref.outputs:
        return  # a layer the NumPy model does not compute: the tool's own check stands
    got = run_model(out, model.feed(), model.custom, model.work, "converted")
    for (name, y), r in zip(got, ref.outputs):
        ok, diff, ratio = close(y, r, model.T, [r, *(v for vs in ref.states.values() for v in vs)])
        assert ok, f"Keras 3 model output {name} differs from the Keras 2 semantics of the file: {diff:.3g}"


@pytest.mark.parametrize("model_id", IDS)
def test_stream(model_id, tmp_path_factory):
    model = Model.get(ENTRIES[model_id], tmp_path_factory)
    out = model.work / "step_model"
    rc, doc, err = run_cli(["stream", str(model.path), "-o", str(out), "--force", "--json", *model.opts()])
    check_outcome(model, "stream", rc, doc, err)


def _perturbed_copy(src: Path, dst: Path, layers: list[str]) -> None:
    shutil.copyfile(src, dst)
    rng = np.random.default_rng(2)
    with h5py.File(dst, "r+") as f:
        for layer in layers:
            g = f["model_weights"][layer]
            for n in g.attrs["weight_names"]:
                n = n.decode() if isinstance(n, bytes) else n
                d = g[n]
                d[...] = (rng.standard_normal(d.shape) * 0.1).astype(d.dtype)


@pytest.mark.parametrize("model_id", IDS)
def test_splice_weights(model_id, tmp_path_factory):
    model = Model.get(ENTRIES[model_id], tmp_path_factory)
    layers = sorted(set(model.site_layers().values()))
    b = model.work / "fresh_b.h5"
    _perturbed_copy(model.path, b, layers)
    out = model.work / "spliced.h5"
    rc, doc, err = run_cli(["splice", str(model.path), str(b), "--mode", "weights", "-o", str(out), "--force", "--json", *model.opts()])
    if not check_outcome(model, "splice --mode weights", rc, doc, err):
        return
    with h5py.File(model.path, "r") as fa, h5py.File(out, "r") as fo:
        for layer in layers:
            wa = real_oracle.layer_weights(fa, layer)
            wo = real_oracle.layer_weights(fo, layer)
            if [w.shape for w in wa] == [w.shape for w in wo]:
                for x, y in zip(wa, wo):
                    np.testing.assert_array_equal(x, y, err_msg=f"{layer}: spliced weights are not A's")
            else:  # the tool translated a CuDNN layout: compare in the oracle's layout
                spec = {item["name"]: item for item in real_oracle.normalized_layers(real_oracle.model_config(fa))[0]}[layer]
                want = real_oracle.recurrent_weights(spec["class_name"], spec["config"], wa)
                for x, y in zip(want, wo):
                    np.testing.assert_allclose(x.reshape(y.shape), y, rtol=0, atol=1e-6)


@pytest.mark.parametrize("model_id", [m["id"] for m in MODELS if m.get("custom_objects")])
def test_custom_layer_needs_custom_objects(model_id, tmp_path_factory):
    """Without --custom-objects a custom class is refused (exit 3, naming it), nothing loaded."""
    model = Model.get(ENTRIES[model_id], tmp_path_factory)
    rc, doc, err = run_cli(["expose-state", str(model.path), "-o", str(model.work / "nocustom.h5"), "--force"])
    _record(model.id, "expose-state (no --custom-objects)", {"exit": rc, "error": err or None, "expected_exit": 3})
    assert rc == 3, f"expected exit 3 (unsafe content refused), got {rc}: {err}"
