"""An independent float64 NumPy run of a Keras 2 `.h5` model, read with h5py only.

The recurrent layers go through the project's own NumPy oracle (`surgery.check.oracle.run_layer`,
which imports neither TensorFlow nor Keras); everything else a real model puts around them
(Embedding, Dropout, BatchNormalization, Dense, Conv1D, pooling, Concatenate, textgenrnn's
attention) is computed here. The weights come straight from the file's datasets, by the
file's own `weight_names`, and CuDNN layouts are translated here, the way tf.keras' loader
(`_convert_rnn_weights`) did: per-gate transposed kernels, LSTM bias halves summed, GRU bias
as (2, 3 * units). The tool's loading code is never used.

Keras 2 semantics are stated here, not inferred from the tool: `hard_sigmoid` is
clip(0.2x + 0.5, 0, 1) (family "keras2" of the oracle), a GRU config without `reset_after`
(saved before Keras 2.1.3) means reset_after=False, CuDNN GRUs are reset_after=True with a
sigmoid recurrent activation.

`run(path, inputs)` returns the model's outputs and, per recurrent layer, its final states
(and the inputs it saw), or raises `Unsupported` naming the first layer it cannot compute.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import h5py
import numpy as np

from surgery.check import oracle

RECURRENT = {"LSTM", "GRU", "SimpleRNN", "CuDNNLSTM", "CuDNNGRU", "Bidirectional"}
IDENTITY = {"Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "ActivityRegularization", "AlphaDropout"}


class Unsupported(Exception):
    pass


@dataclass
class Result:
    outputs: list[np.ndarray]
    states: dict[str, list[np.ndarray]] = field(default_factory=dict)  # layer name -> flat states
    layer_inputs: dict[str, tuple[np.ndarray, np.ndarray | None]] = field(default_factory=dict)
    configs: dict[str, dict] = field(default_factory=dict)  # the (translated) recurrent configs


def _act(name, x):
    if isinstance(name, dict):
        name = name.get("class_name") or name.get("config", {}).get("name")
    if name in (None, "linear"):
        return x
    if name == "relu":
        return np.maximum(x, 0)
    if name == "tanh":
        return np.tanh(x)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-x))
    if name == "hard_sigmoid":
        return np.clip(0.2 * x + 0.5, 0, 1)
    if name == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise Unsupported(f"activation {name!r}")


def model_config(f: h5py.File) -> dict:
    raw = f.attrs["model_config"]
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def layer_weights(f: h5py.File, layer: str) -> list[np.ndarray]:
    g = f["model_weights"][layer] if "model_weights" in f else f[layer]
    names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs.get("weight_names", [])]
    return [np.asarray(g[n], dtype=np.float64) for n in names]


def normalized_layers(config: dict) -> tuple[list[dict], list[str], list[str]]:
    """(layers with `inbound` names, input layer names, output layer names) of a flat graph."""
    cls, cfg = config["class_name"], config["config"]
    if cls == "Sequential":
        seq = cfg if isinstance(cfg, list) else cfg["layers"]
        layers, prev = [], None
        for layer in seq:
            lc = layer["config"]
            if layer["class_name"] == "InputLayer":
                layers.append({"class_name": "InputLayer", "config": lc, "name": lc["name"], "inbound": []})
                prev = lc["name"]
                continue
            if prev is None:
                layers.append({"class_name": "InputLayer", "name": "__input__", "inbound": [],
                               "config": {"batch_input_shape": lc["batch_input_shape"], "dtype": lc.get("dtype", "float32")}})
                prev = "__input__"
            layers.append({"class_name": layer["class_name"], "config": lc, "name": lc["name"], "inbound": [prev]})
            prev = lc["name"]
        return layers, [layers[0]["name"]], [prev]
    layers = []
    for layer in cfg["layers"]:
        nodes = layer.get("inbound_nodes") or []
        if len(nodes) > 1:
            raise Unsupported(f"shared layer {layer['name']}")
        inbound = [t[0] for t in nodes[0]] if nodes else []
        layers.append({"class_name": layer["class_name"], "config": layer["config"], "name": layer["name"], "inbound": inbound})
    return layers, [t[0] for t in cfg["input_layers"]], [t[0] for t in cfg["output_layers"]]


def _cudnn_lstm_weights(w: list[np.ndarray]) -> list[np.ndarray]:
    kernel, recurrent, bias = w
    n = 4

    def tr_in(k):
        return k.T.reshape(k.shape, order="F")

    kernel = np.hstack([tr_in(k) for k in np.hsplit(kernel, n)])
    recurrent = np.hstack([k.T for k in np.hsplit(recurrent, n)])
    bias = np.sum(np.split(bias, 2), axis=0)
    return [kernel, recurrent, bias]


def _cudnn_gru_weights(w: list[np.ndarray]) -> list[np.ndarray]:
    kernel, recurrent, bias = w
    n = 3

    def tr_in(k):
        return k.T.reshape(k.shape, order="F")

    kernel = np.hstack([tr_in(k) for k in np.hsplit(kernel, n)])
    recurrent = np.hstack([k.T for k in np.hsplit(recurrent, n)])
    return [kernel, recurrent, bias.reshape(2, -1)]


def translate_recurrent(class_name: str, cfg: dict) -> dict:
    """The serialized layer the oracle should run, with Keras 2 defaults made explicit."""
    cfg = dict(cfg)
    if class_name == "CuDNNLSTM":
        cfg.update(activation="tanh", recurrent_activation="sigmoid", use_bias=True)
        return {"class_name": "LSTM", "config": cfg}
    if class_name == "CuDNNGRU":
        cfg.update(activation="tanh", recurrent_activation="sigmoid", use_bias=True, reset_after=True)
        return {"class_name": "GRU", "config": cfg}
    if class_name == "GRU":
        cfg.setdefault("reset_after", False)  # saved before Keras 2.1.3: the classic GRU
    if class_name == "Bidirectional":
        inner = cfg["layer"]
        cfg["layer"] = translate_recurrent(inner["class_name"], inner["config"])
        if "backward_layer" in cfg:
            back = cfg["backward_layer"]
            cfg["backward_layer"] = translate_recurrent(back["class_name"], back["config"])
        return {"class_name": "Bidirectional", "config": cfg}
    return {"class_name": class_name, "config": cfg}


def recurrent_weights(class_name: str, cfg: dict, w: list[np.ndarray]) -> list[np.ndarray]:
    if class_name == "CuDNNLSTM":
        return _cudnn_lstm_weights(w)
    if class_name == "CuDNNGRU":
        return _cudnn_gru_weights(w)
    if class_name == "Bidirectional":
        inner = cfg["layer"]["class_name"]
        half = len(w) // 2
        return recurrent_weights(inner, cfg["layer"]["config"], w[:half]) + recurrent_weights(inner, cfg["layer"]["config"], w[half:])
    return w


def _conv1d(x, kernel, bias, cfg):
    if cfg.get("dilation_rate", [1]) not in ([1], (1,), 1):
        raise Unsupported("dilated Conv1D")
    stride = cfg.get("strides", [1])[0]
    k = kernel.shape[0]
    if cfg.get("padding", "valid") == "same":
        total = max(k - 1, 0)
        x = np.pad(x, ((0, 0), (total // 2, total - total // 2), (0, 0)))
    elif cfg.get("padding", "valid") != "valid":
        raise Unsupported(f"Conv1D padding {cfg['padding']}")
    t_out = (x.shape[1] - k) // stride + 1
    out = np.stack([np.einsum("btc,tcf->bf", x[:, i * stride:i * stride + k], kernel) for i in range(t_out)], axis=1)
    if bias is not None:
        out = out + bias
    return _act(cfg.get("activation"), out)


def _maxpool1d(x, cfg):
    p = cfg.get("pool_size", [2])
    p = p[0] if isinstance(p, (list, tuple)) else p
    s = cfg.get("strides") or p
    s = s[0] if isinstance(s, (list, tuple)) else s
    if cfg.get("padding", "valid") == "same":
        t_out = -(-x.shape[1] // s)
        total = max((t_out - 1) * s + p - x.shape[1], 0)
        x = np.pad(x, ((0, 0), (total // 2, total - total // 2), (0, 0)), constant_values=-np.inf)
    elif cfg.get("padding", "valid") == "valid":
        t_out = (x.shape[1] - p) // s + 1
    else:
        raise Unsupported(f"MaxPooling1D padding {cfg['padding']}")
    return np.stack([x[:, i * s:i * s + p].max(axis=1) for i in range(t_out)], axis=1)


def _batchnorm(x, w, cfg):
    i = 0
    gamma = beta = None
    if cfg.get("scale", True):
        gamma = w[i]; i += 1
    if cfg.get("center", True):
        beta = w[i]; i += 1
    mean, var = w[i], w[i + 1]
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) else axis
    if axis not in (-1, x.ndim - 1):
        raise Unsupported("BatchNormalization on a non-last axis")
    y = (x - mean) / np.sqrt(var + cfg.get("epsilon", 1e-3))
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


def _attention(x, mask, w):
    logits = (x @ w[0])[..., 0]
    ai = np.exp(logits - logits.max(axis=-1, keepdims=True))
    if mask is not None:
        ai = ai * mask
    att = ai / (ai.sum(axis=1, keepdims=True) + 1e-7)
    return (x * att[..., None]).sum(axis=1)


def run(path: str, inputs: list[np.ndarray], stop_unsupported: bool = True) -> Result:
    """Run the whole model; with stop_unsupported=False, return what was computed before
    the first unsupported layer (outputs then empty)."""
    with h5py.File(path, "r") as f:
        config = model_config(f)
        layers, in_names, out_names = normalized_layers(config)
        values: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for name, x in zip(in_names, inputs):
            values[name] = (np.asarray(x, dtype=np.float64), None)
        result = Result(outputs=[])
        try:
            for layer in layers:
                cls, cfg, name = layer["class_name"], layer["config"], layer["name"]
                if cls == "InputLayer":
                    continue
                ins = [values[n] for n in layer["inbound"]]
                if cls == "Concatenate":
                    axis = cfg.get("axis", -1)
                    if any(m is not None for _, m in ins):
                        raise Unsupported("Concatenate of masked tensors")
                    values[name] = (np.concatenate([v for v, _ in ins], axis=axis), None)
                    continue
                if len(ins) != 1:
                    raise Unsupported(f"{cls} {name} with {len(ins)} inputs")
                x, mask = ins[0]
                w = layer_weights(f, name)
                if cls == "Embedding":
                    ids = x.astype(np.int64)
                    values[name] = (w[0][ids], (ids != 0) if cfg.get("mask_zero") else None)
                elif cls in IDENTITY:
                    values[name] = (x, mask)
                elif cls == "BatchNormalization":
                    values[name] = (_batchnorm(x, w, cfg), mask)
                elif cls == "Dense":
                    y = x @ w[0] + (w[1] if cfg.get("use_bias", True) else 0)
                    values[name] = (_act(cfg.get("activation"), y), mask)
                elif cls == "Activation":
                    values[name] = (_act(cfg.get("activation"), x), mask)
                elif cls == "Conv1D":
                    values[name] = (_conv1d(x, w[0], w[1] if cfg.get("use_bias", True) else None, cfg), None)
                elif cls == "MaxPooling1D":
                    values[name] = (_maxpool1d(x, cfg), None)
                elif cls == "AttentionWeightedAverage":
                    values[name] = (_attention(x, mask, w), None)
                elif cls in RECURRENT:
                    serial = translate_recurrent(cls, cfg)
                    ow = recurrent_weights(cls, cfg, w)
                    out, states = oracle.run_layer(serial, ow, x, mask=mask, family="keras2")
                    result.states[name] = states
                    result.layer_inputs[name] = (x, mask)
                    result.configs[name] = serial
                    inner = serial["config"].get("layer", {}).get("config", serial["config"])
                    keep = mask if inner.get("return_sequences") else None
                    values[name] = (out, keep)
                else:
                    raise Unsupported(f"{cls} ({name})")
            result.outputs = [values[n][0] for n in out_names]
        except Unsupported:
            if stop_unsupported:
                raise
        return result


def run_recurrent(path: str, layer: str, x, mask=None, initial_state=None):
    """One recurrent layer of the file, on given inputs (for --inputs checks)."""
    with h5py.File(path, "r") as f:
        layers, _, _ = normalized_layers(model_config(f))
        spec = next(item for item in layers if item["name"] == layer)
        serial = translate_recurrent(spec["class_name"], spec["config"])
        w = recurrent_weights(spec["class_name"], spec["config"], layer_weights(f, layer))
    return oracle.run_layer(serial, w, x, mask=mask, initial_state=initial_state, family="keras2")
