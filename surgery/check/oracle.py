"""Independent NumPy reference for the recurrent layers that surgery touches.

The oracle re-implements, in float64, the inference-time math of Keras recurrent layers
(LSTM, GRU, SimpleRNN, ConvLSTM1D/2D/3D, RNN over a cell or StackedRNNCells, and
Bidirectional) straight from their serialized config and `get_weights()` list, with the
activations of the family that wrote the config (`family="keras2"`: Keras 2.x / tf_keras,
whose `hard_sigmoid` is clip(0.2x + 0.5, 0, 1); `"keras3"`: relu6(x + 3) / 6). It exists
to check Keras numerically, so it must never import TensorFlow or Keras: a bug shared by
the checker and the checked would hide itself.

Semantics follow `keras/src/layers/rnn/*` and `keras/src/backend/tensorflow/rnn.py`
(the non-unrolled path):

* `go_backwards` walks the time axis in reverse and returns the sequence in processed
  (i.e. reversed) order.
* At a masked step the states are carried over unchanged and the output is the previous
  step's output (zeros before the first step), or zeros if `zero_output_for_mask`.
* `Bidirectional` forces `zero_output_for_mask = return_sequences` on both sub-layers and
  flips the backward output sequence back before merging.
* `RNN(StackedRNNCells)` returns one list of states per cell; the oracle flattens them in
  cell order (`[cell0 states..., cell1 states..., ...]`).

The activations are in surgery.check.activations and the one-step cells in surgery.check.cells;
this module runs them over time (masks, go_backwards, initial states, Bidirectional).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from surgery.check.activations import Array, Step, family_activations
from surgery.check.cells import Cell, build_cell, cell_class_name, expect_shape


# --------------------------------------------------------------------------------------
# The time loop shared by every recurrent layer
# --------------------------------------------------------------------------------------


def _keep(mask_t: Array, like: Array) -> Array:
    """Broadcast a (batch,) mask over the trailing axes of `like`."""
    return mask_t.reshape(mask_t.shape + (1,) * (like.ndim - 1))


def _recur(
    step: Step,
    x: Array,
    states: list[Array],
    mask: Array | None,
    go_backwards: bool,
    zero_output_for_mask: bool,
) -> tuple[Array, list[Array]]:
    """Run `step` over the time axis (1) of `x` (the cell's prepared input). Returns (outputs
    in processed order, states)."""
    time_indices = range(x.shape[1] - 1, -1, -1) if go_backwards else range(x.shape[1])
    outputs: list[Array] = []
    for t in time_indices:
        output, new_states = step(x[:, t], states)
        if mask is not None:
            keep = mask[:, t]
            if zero_output_for_mask or not outputs:
                fallback = np.zeros_like(output)
            else:
                fallback = outputs[-1]
            output = np.where(_keep(keep, output), output, fallback)
            new_states = [np.where(_keep(keep, n), n, s) for n, s in zip(new_states, states)]
        outputs.append(output)
        states = new_states
    return np.stack(outputs, axis=1), states


def _check_inputs(x: Array, mask: Array | None) -> None:
    if x.ndim < 3:
        raise ValueError(f"Input must be (batch, time, features...), received shape: {x.shape!r}")
    if mask is not None and mask.shape != x.shape[:2]:
        raise ValueError(f"Mask must have shape {x.shape[:2]}, received: {mask.shape!r}")


def _initial_states(
    cell: Cell, x: Array, initial_state: Sequence[Array] | None
) -> list[Array]:
    zeros = cell.zero_states(x[:, 0])
    if initial_state is None:
        return zeros
    states = [np.asarray(s, dtype=np.float64) for s in initial_state]
    if len(states) != len(zeros):
        raise ValueError(
            f"Expected {len(zeros)} initial states, received: {len(states)}"
        )
    for index, (state, zero) in enumerate(zip(states, zeros)):
        expect_shape(state, zero.shape, f"initial_state[{index}]")
    return states


def _run_recurrent(
    layer: dict,
    cell: Cell,
    x: Array,
    mask: Array | None,
    initial_state: Sequence[Array] | None,
) -> tuple[Array, list[Array]]:
    time_major = bool(layer.get("time_major", False))
    if time_major:  # Keras 2 only: x and mask are (time, batch, ...)
        x = np.swapaxes(x, 0, 1)
        mask = None if mask is None else np.swapaxes(mask, 0, 1)
    _check_inputs(x, mask)
    states = _initial_states(cell, x, initial_state)
    outputs, states = _recur(
        cell.step,
        cell.prepare(x),
        states,
        mask,
        go_backwards=bool(layer.get("go_backwards", False)),
        zero_output_for_mask=bool(layer.get("zero_output_for_mask", False)),
    )
    if not layer.get("return_sequences", False):
        return outputs[:, -1], states
    return (np.swapaxes(outputs, 0, 1) if time_major else outputs), states


# --------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------

LayerResult = tuple[Array | list[Array], list[Array]]
LayerRunner = Callable[
    [dict, Iterator[Array], Array, Array | None, Sequence[Array] | None, str], LayerResult
]


def _cell_layer(cell_class: str) -> LayerRunner:
    """Runner for a layer (LSTM, GRU, ...) whose config doubles as its cell's config."""

    def run(
        layer_config: dict,
        weights: Iterator[Array],
        x: Array,
        mask: Array | None,
        initial_state: Sequence[Array] | None,
        family: str,
    ) -> LayerResult:
        config = layer_config.get("config", {})
        cell = build_cell({"class_name": cell_class, "config": config}, weights, family)
        return _run_recurrent(config, cell, x, mask, initial_state)

    return run


def _rnn_layer(
    layer_config: dict,
    weights: Iterator[Array],
    x: Array,
    mask: Array | None,
    initial_state: Sequence[Array] | None,
    family: str,
) -> LayerResult:
    config = layer_config.get("config", {})
    if "cell" not in config:
        raise ValueError(f"RNN config has no 'cell', received keys: {sorted(config)!r}")
    cell = build_cell(config["cell"], weights, family)
    return _run_recurrent(config, cell, x, mask, initial_state)


_MERGES: dict[str | None, Callable[[Array, Array], Array | list[Array]]] = {
    "concat": lambda fw, bw: np.concatenate([fw, bw], axis=-1),
    "sum": lambda fw, bw: fw + bw,
    "mul": lambda fw, bw: fw * bw,
    "ave": lambda fw, bw: (fw + bw) / 2.0,
    None: lambda fw, bw: [fw, bw],
}


def _with_config(serialized: dict, **changes: object) -> dict:
    return {**serialized, "config": {**serialized.get("config", {}), **changes}}


def _bidirectional_layers(config: dict) -> tuple[dict, dict]:
    forward = config["layer"]
    backward = config.get("backward_layer")
    if backward is None:
        # Keras rebuilds the backward layer from the forward config with go_backwards=True.
        backward = _with_config(forward, go_backwards=True)
    forward_backwards = forward.get("config", {}).get("go_backwards", False)
    backward_backwards = backward.get("config", {}).get("go_backwards", False)
    if forward_backwards == backward_backwards:
        raise ValueError(
            "Forward and backward layers need different go_backwards, received: "
            f"{forward_backwards!r} for both"
        )

    # Keras forces zero_output_for_mask = return_sequences on both directions.
    def forced(layer: dict) -> dict:
        return_sequences = layer.get("config", {}).get("return_sequences", False)
        return _with_config(layer, zero_output_for_mask=return_sequences)

    return forced(forward), forced(backward)


def _bidirectional(
    layer_config: dict,
    weights: Iterator[Array],
    x: Array,
    mask: Array | None,
    initial_state: Sequence[Array] | None,
    family: str,
) -> LayerResult:
    config = layer_config.get("config", {})
    merge_mode = config.get("merge_mode", "concat")
    if merge_mode not in _MERGES:
        raise ValueError(f"Unsupported merge_mode, received: {merge_mode!r}")
    forward, backward = _bidirectional_layers(config)
    forward_state = backward_state = None
    if initial_state is not None:
        # Forward states first, then backward. Keras splits the list in half; splitting at
        # the forward layer's state count agrees whenever that works and stays right
        # when the directions hold different numbers of states (LSTM forward, GRU back).
        half = len(state_roles(forward))
        forward_state, backward_state = initial_state[:half], initial_state[half:]
    fw_out, fw_states = _run_layer(forward, weights, x, mask, forward_state, family)
    bw_out, bw_states = _run_layer(backward, weights, x, mask, backward_state, family)
    backward_config = backward.get("config", {})
    if backward_config.get("return_sequences", False):
        time_axis = 0 if backward_config.get("time_major", False) else 1
        bw_out = np.flip(bw_out, axis=time_axis)
    return _MERGES[merge_mode](fw_out, bw_out), [*fw_states, *bw_states]


# Layers whose own config doubles as the config of the cell they wrap.
_LAYER_CELLS: dict[str, str] = {
    "LSTM": "LSTMCell",
    "GRU": "GRUCell",
    "SimpleRNN": "SimpleRNNCell",
    "ConvLSTM1D": "ConvLSTMCell",
    "ConvLSTM2D": "ConvLSTMCell",
    "ConvLSTM3D": "ConvLSTMCell",
}

_LAYER_RUNNERS: dict[str, LayerRunner] = {
    **{layer: _cell_layer(cell) for layer, cell in _LAYER_CELLS.items()},
    "RNN": _rnn_layer,
    "Bidirectional": _bidirectional,
}


def _run_layer(
    layer_config: dict,
    weights: Iterator[Array],
    x: Array,
    mask: Array | None,
    initial_state: Sequence[Array] | None,
    family: str,
) -> LayerResult:
    name = cell_class_name(layer_config)
    try:
        runner = _LAYER_RUNNERS[name]
    except KeyError:
        raise ValueError(f"Unsupported recurrent layer, received: {name!r}") from None
    return runner(layer_config, weights, x, mask, initial_state, family)


def run_layer(
    layer_config: dict,
    weights: list[Array],
    x: Array,
    mask: Array | None = None,
    initial_state: list[Array] | None = None,
    family: str = "keras3",
) -> tuple[Array | list[Array], list[Array]]:
    """Run a serialized Keras recurrent layer in float64 NumPy.

    Args:
        layer_config: `{"class_name": ..., "config": {...}}` as in a `.keras` config.json.
        weights: the layer's `get_weights()` list (Bidirectional: forward then backward), or
            read-only views of its variables: any float dtype, never copied whole; kernels
            are converted to float64 a block of rows at a time (surgery.check.cells.matmul64).
        x: input, (batch, time, features...).
        mask: optional (batch, time) boolean mask; False marks a skipped step.
        initial_state: optional flat list of states in Keras order; zeros when None.
        family: "keras3" or "keras2", the family that wrote `layer_config`: it decides
            what an activation name means (Keras 2 hard_sigmoid is 0.2x + 0.5, clipped).

    Returns:
        (output, final_states): the full sequence if `return_sequences` else the last
        output (a `[forward, backward]` list for Bidirectional with merge_mode None),
        and the flat list of final states in Keras order.
    """
    family_activations(family)  # an unknown family fails before any work
    remaining = iter(weights)
    output, states = _run_layer(
        layer_config,
        remaining,
        np.asarray(x, dtype=np.float64),
        None if mask is None else np.asarray(mask, dtype=bool),
        initial_state,
        family,
    )
    leftover = sum(1 for _ in remaining)
    if leftover:
        raise ValueError(
            f"{cell_class_name(layer_config)} used {len(weights) - leftover} weights, "
            f"received: {len(weights)}"
        )
    return output, states


# --------------------------------------------------------------------------------------
# State roles
# --------------------------------------------------------------------------------------


def _stacked_roles(config: dict) -> list[str]:
    return [
        f"cell_{index}/{role}"
        for index, cell in enumerate(config.get("cells", []))
        for role in _cell_state_roles(cell)
    ]


_CELL_STATE_ROLES: dict[str, Callable[[dict], list[str]]] = {
    "LSTMCell": lambda _: ["h", "c"],
    "GRUCell": lambda _: ["h"],
    "SimpleRNNCell": lambda _: ["h"],
    "ConvLSTMCell": lambda _: ["h", "c"],
    "StackedRNNCells": _stacked_roles,
}


def _cell_state_roles(cell_config: dict) -> list[str]:
    name = cell_class_name(cell_config)
    try:
        roles = _CELL_STATE_ROLES[name]
    except KeyError:
        raise ValueError(f"Unsupported recurrent cell, received: {name!r}") from None
    return roles(cell_config.get("config", {}))


def _bidirectional_roles(config: dict) -> list[str]:
    forward, backward = _bidirectional_layers(config)
    return [f"forward/{role}" for role in state_roles(forward)] + [
        f"backward/{role}" for role in state_roles(backward)
    ]


def _cell_layer_roles(cell_class: str) -> Callable[[dict], list[str]]:
    return lambda config: _cell_state_roles({"class_name": cell_class, "config": config})


_LAYER_STATE_ROLES: dict[str, Callable[[dict], list[str]]] = {
    **{layer: _cell_layer_roles(cell) for layer, cell in _LAYER_CELLS.items()},
    "RNN": lambda config: _cell_state_roles(config["cell"]),
    "Bidirectional": _bidirectional_roles,
}


def state_roles(layer_config: dict) -> list[str]:
    """Names of the flat final states `run_layer` returns, in the same order.

    LSTM -> ["h", "c"]; GRU -> ["h"]; RNN(StackedRNNCells) -> ["cell_0/h", "cell_0/c",
    "cell_1/h", ...]; Bidirectional -> ["forward/h", ..., "backward/h", ...].
    """
    name = cell_class_name(layer_config)
    try:
        roles = _LAYER_STATE_ROLES[name]
    except KeyError:
        raise ValueError(f"Unsupported recurrent layer, received: {name!r}") from None
    return roles(layer_config.get("config", {}))
