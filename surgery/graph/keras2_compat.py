"""Keras 2.0-2.15 config differences, resolved once, when a file is read.

Keras 2 files span seven years of config formats. tf_keras (2.15) reads some old forms
itself and silently misreads others; every reader here (inspect, load, expose, convert,
splice) must see one form, so `formats.read_artifact` passes each Keras 2 config through
`normalize` and `formats.check_model_config` passes every config through `sequential_dict`.
The rules, what they mean and which are refused are listed in docs/KERAS2.md.

Pure functions on JSON values: nothing here imports Keras, and no input is mutated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from surgery.errors import NotSupportedError

# Keras 1 argument names, as Keras 2.0's legacy interfaces (keras/legacy/interfaces.py)
# renamed them when a Keras 1 config was deserialized. tf_keras no longer knows them.
KERAS1_ARGUMENTS = {
    "output_dim": "units",
    "init": "kernel_initializer",
    "inner_init": "recurrent_initializer",
    "inner_activation": "recurrent_activation",
    "W_regularizer": "kernel_regularizer",
    "U_regularizer": "recurrent_regularizer",
    "b_regularizer": "bias_regularizer",
    "W_constraint": "kernel_constraint",
    "U_constraint": "recurrent_constraint",
    "b_constraint": "bias_constraint",
    "dropout_W": "dropout",
    "dropout_U": "recurrent_dropout",
    "bias": "use_bias",
}
# The layers whose Keras 1 arguments map one to one (a custom layer may own these names).
KERAS1_LAYERS = frozenset({"Dense", "SimpleRNN", "GRU", "LSTM"})
# Keras 1 recurrent `consume_less` chose an implementation: a speed hint, same function.
CONSUME_LESS = {"cpu": 0, "mem": 1, "gpu": 2}

# Keras 1 `Merge(mode=...)` -> the Keras 2 merge layer computing the same thing.
MERGE_MODES = {
    "concat": ("Concatenate", lambda cfg: {"axis": cfg.get("concat_axis", -1)}),
    "sum": ("Add", lambda cfg: {}),
    "mul": ("Multiply", lambda cfg: {}),
    "ave": ("Average", lambda cfg: {}),
    "max": ("Maximum", lambda cfg: {}),
    "dot": ("Dot", lambda cfg: {"axes": cfg.get("dot_axes", -1), "normalize": False}),
    "cos": ("Dot", lambda cfg: {"axes": cfg.get("dot_axes", -1), "normalize": True}),
}

# GRU configs written before Keras 2.1.3 have no reset_after: those GRUs reset before the
# recurrent matmul. tf_keras' default is True, so it refuses their (3u,) bias.
_GRU_CLASSES = ("GRU", "GRUCell")
# tf.keras 2.x renamed VarianceScaling(distribution="normal") to "truncated_normal" and
# still reads the old name; Keras 3 refuses it.
_VARIANCE_SCALING = "VarianceScaling"


def sequential_dict(config):
    """Keras <= 2.2.2 wrote a Sequential's `config` as the bare list of its layers; newer
    Keras writes {"name": ..., "layers": [...]}. Every list form becomes the dict form,
    at any depth (nested Sequentials too). Other values are returned as they are."""
    return _rewrite(config, _sequential_entry)


def _sequential_entry(item: dict) -> dict:
    if item.get("class_name") != "Sequential" or not isinstance(item.get("config"), list):
        return item
    name = item.get("name") if isinstance(item.get("name"), str) else "sequential"
    return {**item, "config": {"name": name, "layers": item["config"]}}


def normalize(config: dict) -> tuple[dict, tuple[str, ...]]:
    """(the config in the form tf_keras 2.15 writes, one note per change) for a Keras 2
    model config. Raises NotSupportedError for what cannot be expressed."""
    notes: list[str] = []

    def layer(item: dict) -> dict:
        for rule in _RULES:
            item = rule(item, notes)
        return item

    return _rewrite(sequential_dict(config), layer), tuple(notes)


def normalize_artifact(artifact):
    """The artifact with a normalized Keras 2 config (see `normalize`); `normalized`
    lists what changed, so the loader knows the file's own config is not the one to load."""
    if artifact.keras_version and artifact.keras_version.startswith("1."):
        raise NotSupportedError(
            f"{artifact.path!r} was written by Keras {artifact.keras_version}: Keras 1 files store "
            "recurrent weights per gate and old argument names; load and re-save it with Keras 2"
        )
    if artifact.family != "keras2" or artifact.model_config is None:
        return artifact
    config, notes = normalize(artifact.model_config)
    if not notes:
        return artifact
    return dataclasses.replace(artifact, model_config=config, normalized=notes)


# --------------------------------------------------------------------------------------
# Rules: (serialized object, notes) -> serialized object; each returns a new dict or its input.


def _config(item: dict) -> dict | None:
    config = item.get("config")
    return config if isinstance(config, dict) and isinstance(item.get("class_name"), str) else None


def _layer_name(item: dict) -> str:
    config = _config(item) or {}
    return str(config.get("name") or item.get("name") or item.get("class_name"))


def _keras1_arguments(item: dict, notes: list) -> dict:
    config = _config(item)
    old = sorted(set(config or {}) & (set(KERAS1_ARGUMENTS) | {"consume_less"}))
    if not old or item.get("class_name") not in KERAS1_LAYERS:
        return item
    new = {k: v for k, v in config.items() if k not in old}
    for key in old:
        value = config[key]
        if key == "consume_less":
            target, value = "implementation", CONSUME_LESS.get(value, 1)
        else:
            target = KERAS1_ARGUMENTS[key]
        if target in new and new[target] != value:
            raise NotSupportedError(
                f"layer {_layer_name(item)!r} sets both {key}={config[key]!r} and {target}={new[target]!r}"
            )
        new[target] = value
        notes.append(f"{_layer_name(item)}: Keras 1 argument {key} -> {target}")
    return {**item, "config": new}


def _gru_reset_after(item: dict, notes: list) -> dict:
    config = _config(item)
    if item.get("class_name") not in _GRU_CLASSES or config is None or "reset_after" in config:
        return item
    notes.append(f"{_layer_name(item)}: GRU without reset_after (Keras < 2.1.3) -> reset_after=False")
    return {**item, "config": {**config, "reset_after": False}}


def _variance_scaling(item: dict, notes: list) -> dict:
    config = _config(item)
    if item.get("class_name") != _VARIANCE_SCALING or config is None \
            or config.get("distribution") != "normal":
        return item
    notes.append("VarianceScaling distribution 'normal' -> 'truncated_normal' (as tf.keras reads it)")
    return {**item, "config": {**config, "distribution": "truncated_normal"}}


def _merge(item: dict, notes: list) -> dict:
    config = _config(item)
    if item.get("class_name") != "Merge" or config is None:
        return item
    mode = config.get("mode", "sum")
    if "layers" in config or not isinstance(mode, str) or mode not in MERGE_MODES:
        raise NotSupportedError(
            f"layer {_layer_name(item)!r} is a Keras 1 Merge (mode={mode!r}"
            f"{', merging whole models' if 'layers' in config else ''}), which tf_keras cannot "
            "load; rebuild it with Concatenate/Add/... in Keras 2 and re-save"
        )
    target, arguments = MERGE_MODES[mode]
    base = {k: config[k] for k in ("name", "trainable", "dtype") if k in config}
    notes.append(f"{_layer_name(item)}: Keras 1 Merge(mode={mode!r}) -> {target}")
    return {**item, "class_name": target, "config": {**base, **arguments(config)}}


_RULES: tuple[Callable[[dict, list], dict], ...] = (
    _merge, _keras1_arguments, _gru_reset_after, _variance_scaling,
)


def _rewrite(value, rule: Callable[[dict], dict]):
    """The JSON value with `rule` applied to every dict, outermost first. Copy on write:
    only what changed (and the containers above it) is new; the rest is shared with the
    input, which is never modified, and an unchanged value comes back as itself."""
    if isinstance(value, dict):
        value = rule(value)
        changed = None
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                new = _rewrite(item, rule)
                if new is not item:
                    changed = dict(value) if changed is None else changed
                    changed[key] = new
        return value if changed is None else changed
    if isinstance(value, list):
        changed = None
        for index, item in enumerate(value):
            if isinstance(item, (dict, list)):
                new = _rewrite(item, rule)
                if new is not item:
                    changed = list(value) if changed is None else changed
                    changed[index] = new
        return value if changed is None else changed
    return value
