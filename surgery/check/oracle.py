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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

Array = np.ndarray
Activation = Callable[[Array], Array]
Step = Callable[[Array, list[Array]], tuple[Array, list[Array]]]

# --------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------

_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805
_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(x: Array) -> Array:
    # exp(-log(1 + exp(-x))) never overflows, unlike 1 / (1 + exp(-x)) for very negative x.
    return np.exp(-np.logaddexp(0.0, -x))


def _hard_sigmoid(x: Array) -> Array:
    # Keras 3 definition: relu6(x + 3) / 6 (Keras 2 used 0.2 * x + 0.5).
    return np.clip(x / 6.0 + 0.5, 0.0, 1.0)


def _keras2_hard_sigmoid(x: Array) -> Array:
    # Keras 2.0-2.15 (standalone, tf.keras, tf_keras; both TF and Theano backends).
    return np.clip(0.2 * x + 0.5, 0.0, 1.0)


def _elu(x: Array) -> Array:
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))


def _selu(x: Array) -> Array:
    return _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))


def _gelu(x: Array) -> Array:
    # keras.activations.gelu defaults to approximate=False: the exact erf form.
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


_ACTIVATIONS: dict[str, Activation] = {
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "relu": lambda x: np.maximum(x, 0.0),
    "linear": lambda x: x,
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "elu": _elu,
    "selu": _selu,
    "exponential": np.exp,
    "swish": lambda x: x * _sigmoid(x),
    "silu": lambda x: x * _sigmoid(x),
    "gelu": _gelu,
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "hard_silu": lambda x: x * _hard_sigmoid(x),
    "hard_swish": lambda x: x * _hard_sigmoid(x),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "mish": lambda x: x * np.tanh(np.logaddexp(0.0, x)),
    "log_sigmoid": lambda x: -np.logaddexp(0.0, -x),
    "hard_tanh": lambda x: np.clip(x, -1.0, 1.0),
    "tanh_shrink": lambda x: x - np.tanh(x),
}


# Keras 2 (tf_keras 2.15) knows these names only; every one computes what its Keras 3
# namesake does (gelu: exact erf form by default in both; swish = x * sigmoid(x); selu
# with the same constants; relu without max_value) except hard_sigmoid.
_KERAS2_NAMES = ("softmax", "elu", "selu", "softplus", "softsign", "swish", "relu", "gelu",
                 "tanh", "sigmoid", "exponential", "hard_sigmoid", "linear", "mish")
ACTIVATIONS_BY_FAMILY: dict[str, dict[str, Activation]] = {
    "keras3": _ACTIVATIONS,
    "keras2": {
        **{name: _ACTIVATIONS[name] for name in _KERAS2_NAMES if name in _ACTIVATIONS},
        "hard_sigmoid": _keras2_hard_sigmoid,
    },
}


def activation_name(identifier: object) -> str:
    """Reduce a serialized activation (None, name, or Keras dict) to its name."""
    if identifier is None:
        return "linear"
    if isinstance(identifier, str):
        return identifier
    if isinstance(identifier, dict):
        config = identifier.get("config")
        if isinstance(config, str):  # {"class_name": "function", "config": "tanh"}
            return config
        if isinstance(config, dict) and isinstance(config.get("name"), str):
            return config["name"]
        class_name = identifier.get("class_name")
        if isinstance(class_name, str) and class_name in _ACTIVATIONS:
            return class_name
    raise ValueError(f"Cannot interpret activation identifier, received: {identifier!r}")


def _activations(family: str) -> dict[str, Activation]:
    try:
        return ACTIVATIONS_BY_FAMILY[family]
    except KeyError:
        raise ValueError(f"Unknown Keras family, received: {family!r}") from None


def activation(name: str | dict | None, family: str = "keras3") -> Activation:
    """Return the float64 NumPy version of a Keras activation of `family`.

    Accepts a name ("tanh"), None (linear), or a serialized Keras activation dict.
    """
    resolved = activation_name(name)
    try:
        return _activations(family)[resolved]
    except KeyError:
        raise ValueError(f"Unknown {family} activation, received: {resolved!r}") from None


# --------------------------------------------------------------------------------------
# Cells: one time step, built from a cell config and the weights it owns
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cell:
    step: Step
    # Zero initial states for a given step input (batch, features...).
    zero_states: Callable[[Array], list[Array]]
    state_count: int


def _take(weights: Iterator[Array], what: str) -> Array:
    try:
        return np.asarray(next(weights), dtype=np.float64)
    except StopIteration:
        raise ValueError(f"Ran out of weights while reading {what!r}") from None


def _expect_shape(array: Array, expected: tuple[int, ...], what: str) -> None:
    if array.shape != expected:
        raise ValueError(f"{what} should have shape {expected}, received: {array.shape!r}")


def _dense_weights(
    config: dict, weights: Iterator[Array], gates: int
) -> tuple[Array, Array, Array | None]:
    """Read kernel, recurrent kernel and (optional) bias of a dense recurrent cell."""
    units = int(config["units"])
    kernel = _take(weights, "kernel")
    recurrent_kernel = _take(weights, "recurrent_kernel")
    _expect_shape(kernel, (*kernel.shape[:1], gates * units), "kernel")
    _expect_shape(recurrent_kernel, (units, gates * units), "recurrent_kernel")
    bias = _take(weights, "bias") if config.get("use_bias", True) else None
    return kernel, recurrent_kernel, bias


def _dense_zero_states(units: int, count: int) -> Callable[[Array], list[Array]]:
    return lambda x_t: [np.zeros((x_t.shape[0], units)) for _ in range(count)]


def _lstm_gates_to_states(
    z: Array, c_prev: Array, act: Activation, rec_act: Activation
) -> tuple[Array, list[Array]]:
    """Gate order i, f, c, o along the last axis (shared by LSTM and ConvLSTM)."""
    z_i, z_f, z_c, z_o = np.split(z, 4, axis=-1)
    c = rec_act(z_f) * c_prev + rec_act(z_i) * act(z_c)
    h = rec_act(z_o) * act(c)
    return h, [h, c]


def _lstm_cell(config: dict, weights: Iterator[Array], family: str) -> _Cell:
    kernel, recurrent_kernel, bias = _dense_weights(config, weights, gates=4)
    act = activation(config.get("activation", "tanh"), family)
    rec_act = activation(config.get("recurrent_activation", "sigmoid"), family)

    def step(x_t: Array, states: list[Array]) -> tuple[Array, list[Array]]:
        h_prev, c_prev = states
        z = x_t @ kernel + h_prev @ recurrent_kernel
        if bias is not None:
            z = z + bias
        return _lstm_gates_to_states(z, c_prev, act, rec_act)

    return _Cell(step, _dense_zero_states(int(config["units"]), 2), state_count=2)


def _gru_biases(bias: Array | None, units: int, reset_after: bool) -> tuple[Array, Array]:
    """Split the GRU bias into (input bias, recurrent bias); zeros when absent."""
    if bias is None:
        return np.zeros(3 * units), np.zeros(3 * units)
    if reset_after:
        # Separate input and recurrent biases stacked as (2, 3 * units).
        _expect_shape(bias, (2, 3 * units), "GRU bias (reset_after=True)")
        return bias[0], bias[1]
    _expect_shape(bias, (3 * units,), "GRU bias (reset_after=False)")
    return bias, np.zeros(3 * units)


# A GRU config without reset_after: Keras 2 wrote one only before 2.1.3, whose GRUs reset
# before the recurrent matmul; every Keras 3 config that lacks it means the default, True.
GRU_RESET_AFTER_DEFAULT = {"keras2": False, "keras3": True}


def _gru_cell(config: dict, weights: Iterator[Array], family: str) -> _Cell:
    units = int(config["units"])
    reset_after = bool(config.get("reset_after", GRU_RESET_AFTER_DEFAULT[family]))
    kernel, recurrent_kernel, bias = _dense_weights(config, weights, gates=3)
    input_bias, recurrent_bias = _gru_biases(bias, units, reset_after)
    act = activation(config.get("activation", "tanh"), family)
    rec_act = activation(config.get("recurrent_activation", "sigmoid"), family)

    def step(x_t: Array, states: list[Array]) -> tuple[Array, list[Array]]:
        (h_prev,) = states
        x_z, x_r, x_h = np.split(x_t @ kernel + input_bias, 3, axis=-1)
        rec_z, rec_r, _ = np.split(h_prev @ recurrent_kernel + recurrent_bias, 3, axis=-1)
        z = rec_act(x_z + rec_z)
        r = rec_act(x_r + rec_r)
        candidate_kernel = recurrent_kernel[:, 2 * units :]
        if reset_after:  # reset gate applied after the recurrent matmul
            rec_h = r * (h_prev @ candidate_kernel + recurrent_bias[2 * units :])
        else:  # ... or before it
            rec_h = (r * h_prev) @ candidate_kernel
        h = z * h_prev + (1.0 - z) * act(x_h + rec_h)
        return h, [h]

    return _Cell(step, _dense_zero_states(units, 1), state_count=1)


def _simple_rnn_cell(config: dict, weights: Iterator[Array], family: str) -> _Cell:
    kernel, recurrent_kernel, bias = _dense_weights(config, weights, gates=1)
    act = activation(config.get("activation", "tanh"), family)

    def step(x_t: Array, states: list[Array]) -> tuple[Array, list[Array]]:
        (h_prev,) = states
        pre = x_t @ kernel + h_prev @ recurrent_kernel
        if bias is not None:
            pre = pre + bias
        h = act(pre)
        return h, [h]

    return _Cell(step, _dense_zero_states(int(config["units"]), 1), state_count=1)


def _stacked_cells(config: dict, weights: Iterator[Array], family: str) -> _Cell:
    cells = [_build_cell(cell_config, weights, family) for cell_config in config["cells"]]

    def step(x_t: Array, states: list[Array]) -> tuple[Array, list[Array]]:
        new_states: list[Array] = []
        for cell, cell_states in zip(cells, _split_states(cells, states)):
            x_t, cell_new_states = cell.step(x_t, cell_states)
            new_states.extend(cell_new_states)
        return x_t, new_states

    def zero_states(x_t: Array) -> list[Array]:
        states: list[Array] = []
        for cell in cells:
            cell_states = cell.zero_states(x_t)
            states.extend(cell_states)
            # Every built-in cell's output has the shape of its first state.
            x_t = np.zeros_like(cell_states[0])
        return states

    return _Cell(step, zero_states, state_count=sum(cell.state_count for cell in cells))


def _split_states(cells: Sequence[_Cell], states: list[Array]) -> list[list[Array]]:
    groups, start = [], 0
    for cell in cells:
        groups.append(states[start : start + cell.state_count])
        start += cell.state_count
    return groups


# --------------------------------------------------------------------------------------
# N-d convolution (channels_last) for ConvLSTM
# --------------------------------------------------------------------------------------


def _as_tuple(value: object, rank: int, what: str) -> tuple[int, ...]:
    values = (value,) * rank if isinstance(value, int) else tuple(value)  # type: ignore[arg-type]
    if len(values) != rank or not all(isinstance(v, int) and v > 0 for v in values):
        raise ValueError(f"{what} should be {rank} positive integers, received: {value!r}")
    return values


def _axis_padding(
    size: int, kernel: int, stride: int, dilation: int, padding: str
) -> tuple[tuple[int, int], int]:
    """(pad_before, pad_after) and output size along one spatial axis, TF rules."""
    span = (kernel - 1) * dilation + 1
    if padding == "valid":
        out = (size - span) // stride + 1
        if out <= 0:
            raise ValueError(
                f"Input size {size} is too small for kernel span {span}, received padding: "
                f"{padding!r}"
            )
        return (0, 0), out
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + span - size, 0)
        return (total // 2, total - total // 2), out
    raise ValueError(f"Unsupported padding, received: {padding!r}")


def _conv(
    x: Array,
    kernel: Array,
    strides: tuple[int, ...],
    padding: str,
    dilation: tuple[int, ...],
) -> Array:
    """Cross-correlation of x (batch, *spatial, in) with kernel (*k, in, out)."""
    kernel_size = kernel.shape[:-2]
    axes = [
        _axis_padding(n, k, s, d, padding)
        for n, k, s, d in zip(x.shape[1:-1], kernel_size, strides, dilation)
    ]
    pads = [pad for pad, _ in axes]
    out_sizes = [out for _, out in axes]
    padded = np.pad(x, [(0, 0), *pads, (0, 0)])
    result = np.zeros((x.shape[0], *out_sizes, kernel.shape[-1]))
    # One matmul per kernel offset: small inputs make clarity worth more than speed.
    for offset in np.ndindex(*kernel_size):
        window = tuple(
            slice(o * d, o * d + (n - 1) * s + 1, s)
            for o, d, n, s in zip(offset, dilation, out_sizes, strides)
        )
        result += padded[(slice(None), *window, slice(None))] @ kernel[offset]
    return result


def _conv_lstm_cell(config: dict, weights: Iterator[Array], family: str) -> _Cell:
    kernel = _take(weights, "kernel")
    recurrent_kernel = _take(weights, "recurrent_kernel")
    bias = _take(weights, "bias") if config.get("use_bias", True) else None
    rank = kernel.ndim - 2
    filters = int(config["filters"])
    kernel_size = _as_tuple(config["kernel_size"], rank, "kernel_size")
    _expect_shape(kernel, (*kernel_size, kernel.shape[-2], 4 * filters), "kernel")
    _expect_shape(recurrent_kernel, (*kernel_size, filters, 4 * filters), "recurrent_kernel")
    strides = _as_tuple(config.get("strides", 1), rank, "strides")
    dilation = _as_tuple(config.get("dilation_rate", 1), rank, "dilation_rate")
    padding = str(config.get("padding", "valid")).lower()
    channels_first = _is_channels_first(config)
    act = activation(config.get("activation", "tanh"), family)
    rec_act = activation(config.get("recurrent_activation", "sigmoid"), family)
    ones = (1,) * rank

    def step_channels_last(x_t: Array, states: list[Array]) -> tuple[Array, list[Array]]:
        h_prev, c_prev = states
        z = _conv(x_t, kernel, strides, padding, dilation)
        # The recurrent conv always uses stride 1, "same" padding and no dilation.
        z = z + _conv(h_prev, recurrent_kernel, ones, "same", ones)
        if bias is not None:
            z = z + bias
        return _lstm_gates_to_states(z, c_prev, act, rec_act)

    def step(x_t: Array, states: list[Array]) -> tuple[Array, list[Array]]:
        if not channels_first:
            return step_channels_last(x_t, states)
        h, new_states = step_channels_last(_to_last(x_t), [_to_last(s) for s in states])
        return _to_first(h), [_to_first(s) for s in new_states]

    def zero_states(x_t: Array) -> list[Array]:
        spatial = x_t.shape[2:] if channels_first else x_t.shape[1:-1]
        out_sizes = [
            _axis_padding(n, k, s, d, padding)[1]
            for n, k, s, d in zip(spatial, kernel_size, strides, dilation)
        ]
        shape = (
            (x_t.shape[0], filters, *out_sizes)
            if channels_first
            else (x_t.shape[0], *out_sizes, filters)
        )
        return [np.zeros(shape), np.zeros(shape)]

    return _Cell(step, zero_states, state_count=2)


def _is_channels_first(config: dict) -> bool:
    data_format = config.get("data_format") or "channels_last"
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"Unsupported data_format, received: {data_format!r}")
    return data_format == "channels_first"


def _to_last(a: Array) -> Array:
    return np.moveaxis(a, 1, -1)


def _to_first(a: Array) -> Array:
    return np.moveaxis(a, -1, 1)


_CELL_BUILDERS: dict[str, Callable[[dict, Iterator[Array], str], _Cell]] = {
    "LSTMCell": _lstm_cell,
    "GRUCell": _gru_cell,
    "SimpleRNNCell": _simple_rnn_cell,
    "StackedRNNCells": _stacked_cells,
    "ConvLSTMCell": _conv_lstm_cell,
}


def _class_name(serialized: dict) -> str:
    if not isinstance(serialized, dict) or "class_name" not in serialized:
        raise ValueError(f"Expected a serialized Keras object, received: {serialized!r}")
    return serialized["class_name"]


def _build_cell(cell_config: dict, weights: Iterator[Array], family: str) -> _Cell:
    name = _class_name(cell_config)
    try:
        builder = _CELL_BUILDERS[name]
    except KeyError:
        raise ValueError(f"Unsupported recurrent cell, received: {name!r}") from None
    return builder(cell_config.get("config", {}), weights, family)


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
    """Run `step` over the time axis (1). Returns (outputs in processed order, states)."""
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
    cell: _Cell, x: Array, initial_state: Sequence[Array] | None
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
        _expect_shape(state, zero.shape, f"initial_state[{index}]")
    return states


def _run_recurrent(
    layer: dict,
    cell: _Cell,
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
        x,
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
        cell = _build_cell({"class_name": cell_class, "config": config}, weights, family)
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
    cell = _build_cell(config["cell"], weights, family)
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
    name = _class_name(layer_config)
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
        weights: the layer's `get_weights()` list (Bidirectional: forward then backward).
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
    _activations(family)  # an unknown family fails before any work
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
            f"{_class_name(layer_config)} used {len(weights) - leftover} weights, "
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
    name = _class_name(cell_config)
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
    name = _class_name(layer_config)
    try:
        roles = _LAYER_STATE_ROLES[name]
    except KeyError:
        raise ValueError(f"Unsupported recurrent layer, received: {name!r}") from None
    return roles(layer_config.get("config", {}))
