"""NumPy cells for the oracle: one time step of each recurrent cell (LSTM, GRU, SimpleRNN,
StackedRNNCells, ConvLSTM), built from a cell config and the weights it owns (`build_cell`).
No TensorFlow or Keras here (see surgery.check.oracle).

Weights are taken as given (float32 views of a live model's variables, say) and converted to
float64 a block of kernel rows at a time as each product uses them (`matmul64`): the oracle
computes in float64 while the float64 copy it holds stays under FLOAT64_BLOCK_BYTES, whatever
the layer's size. Blocking changes only the order in which each dot product's float64 terms
are summed (the blocks' partial sums are added in turn); a kernel that fits in one block is
multiplied whole, exactly as before blocking.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from surgery.check.activations import Activation, Array, Step, activation


# --------------------------------------------------------------------------------------
# Cells: one time step, built from a cell config and the weights it owns
# --------------------------------------------------------------------------------------


# The most float64 weight data held at once per product (a 1 GB model's LSTM kernel is
# 256 MB of float32, 512 MB as float64). A few MB: a block stays in cache between its
# conversion and its use, so blocks cost no more than the whole float64 kernel did.
FLOAT64_BLOCK_BYTES = 4 << 20


def matmul64(a: Array, weight: Array) -> Array:
    """`a @ weight` in float64 for a float64 `a` (..., k) and a 2-D `weight` (k, n) of any
    float dtype. A weight over FLOAT64_BLOCK_BYTES as float64 is converted a block of rows
    at a time (a row at least) and the blocks' partial products are added in order.

    The partial sums are NumPy's einsum loops, not BLAS: thousands of small multithreaded
    BLAS calls spin their threads, ruinous on a busy machine; einsum runs on this thread."""
    rows, columns = weight.shape
    flat = a.reshape(-1, rows)
    height = max(1, FLOAT64_BLOCK_BYTES // (8 * max(columns, 1)))
    if weight.dtype == np.float64 or height >= rows:
        product = flat @ np.asarray(weight, dtype=np.float64)
    else:
        product = np.zeros((flat.shape[0], columns))
        partial = np.empty_like(product)
        # One buffer refilled per block: fresh ones would each be page-faulted in anew.
        buffer = np.empty((height, columns))
        for start in range(0, rows, height):
            block = buffer[: min(height, rows - start)]
            block[...] = weight[start : start + height]
            np.einsum("ij,jk->ik", flat[:, start : start + height], block, out=partial)
            product += partial
    return product.reshape(*a.shape[:-1], columns)


def _unprepared(x: Array) -> Array:
    return x


@dataclass(frozen=True)
class Cell:
    # One time step: (the step's slice of `prepare(x)`, states) -> (output, new states).
    step: Step
    # Zero initial states for a given step input (batch, features...).
    zero_states: Callable[[Array], list[Array]]
    state_count: int
    # The input side of every step at once, on the whole sequence (batch, time, ...): one
    # pass over the input kernel rather than one per time step.
    prepare: Callable[[Array], Array] = _unprepared


def _take(weights: Iterator[Array], what: str) -> Array:
    """The next weight as given (any float dtype, never copied here)."""
    try:
        return np.asarray(next(weights))
    except StopIteration:
        raise ValueError(f"Ran out of weights while reading {what!r}") from None


def _take64(weights: Iterator[Array], what: str) -> Array:
    """The next weight in float64, for the small ones (biases) used whole."""
    return np.asarray(_take(weights, what), dtype=np.float64)


def expect_shape(array: Array, expected: tuple[int, ...], what: str) -> None:
    if array.shape != expected:
        raise ValueError(f"{what} should have shape {expected}, received: {array.shape!r}")


def _dense_weights(
    config: dict, weights: Iterator[Array], gates: int
) -> tuple[Array, Array, Array | None]:
    """Read kernel, recurrent kernel and (optional) bias of a dense recurrent cell."""
    units = int(config["units"])
    kernel = _take(weights, "kernel")
    recurrent_kernel = _take(weights, "recurrent_kernel")
    expect_shape(kernel, (*kernel.shape[:1], gates * units), "kernel")
    expect_shape(recurrent_kernel, (units, gates * units), "recurrent_kernel")
    bias = _take64(weights, "bias") if config.get("use_bias", True) else None
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


def _lstm_cell(config: dict, weights: Iterator[Array], family: str) -> Cell:
    kernel, recurrent_kernel, bias = _dense_weights(config, weights, gates=4)
    act = activation(config.get("activation", "tanh"), family)
    rec_act = activation(config.get("recurrent_activation", "sigmoid"), family)

    def step(x_kernel_t: Array, states: list[Array]) -> tuple[Array, list[Array]]:
        h_prev, c_prev = states
        z = x_kernel_t + matmul64(h_prev, recurrent_kernel)
        if bias is not None:
            z = z + bias
        return _lstm_gates_to_states(z, c_prev, act, rec_act)

    return Cell(step, _dense_zero_states(int(config["units"]), 2), state_count=2,
                prepare=lambda x: matmul64(x, kernel))


def _gru_biases(bias: Array | None, units: int, reset_after: bool) -> tuple[Array, Array]:
    """Split the GRU bias into (input bias, recurrent bias); zeros when absent."""
    if bias is None:
        return np.zeros(3 * units), np.zeros(3 * units)
    if reset_after:
        # Separate input and recurrent biases stacked as (2, 3 * units).
        expect_shape(bias, (2, 3 * units), "GRU bias (reset_after=True)")
        return bias[0], bias[1]
    expect_shape(bias, (3 * units,), "GRU bias (reset_after=False)")
    return bias, np.zeros(3 * units)


# A GRU config without reset_after: Keras 2 wrote one only before 2.1.3, whose GRUs reset
# before the recurrent matmul; every Keras 3 config that lacks it means the default, True.
GRU_RESET_AFTER_DEFAULT = {"keras2": False, "keras3": True}


def _gru_cell(config: dict, weights: Iterator[Array], family: str) -> Cell:
    units = int(config["units"])
    reset_after = bool(config.get("reset_after", GRU_RESET_AFTER_DEFAULT[family]))
    kernel, recurrent_kernel, bias = _dense_weights(config, weights, gates=3)
    input_bias, recurrent_bias = _gru_biases(bias, units, reset_after)
    act = activation(config.get("activation", "tanh"), family)
    rec_act = activation(config.get("recurrent_activation", "sigmoid"), family)

    def step(x_kernel_t: Array, states: list[Array]) -> tuple[Array, list[Array]]:
        (h_prev,) = states
        x_z, x_r, x_h = np.split(x_kernel_t + input_bias, 3, axis=-1)
        rec_z, rec_r, _ = np.split(matmul64(h_prev, recurrent_kernel) + recurrent_bias, 3, axis=-1)
        z = rec_act(x_z + rec_z)
        r = rec_act(x_r + rec_r)
        candidate_kernel = recurrent_kernel[:, 2 * units :]
        if reset_after:  # reset gate applied after the recurrent matmul
            rec_h = r * (matmul64(h_prev, candidate_kernel) + recurrent_bias[2 * units :])
        else:  # ... or before it
            rec_h = matmul64(r * h_prev, candidate_kernel)
        h = z * h_prev + (1.0 - z) * act(x_h + rec_h)
        return h, [h]

    return Cell(step, _dense_zero_states(units, 1), state_count=1, prepare=lambda x: matmul64(x, kernel))


def _simple_rnn_cell(config: dict, weights: Iterator[Array], family: str) -> Cell:
    kernel, recurrent_kernel, bias = _dense_weights(config, weights, gates=1)
    act = activation(config.get("activation", "tanh"), family)

    def step(x_kernel_t: Array, states: list[Array]) -> tuple[Array, list[Array]]:
        (h_prev,) = states
        pre = x_kernel_t + matmul64(h_prev, recurrent_kernel)
        if bias is not None:
            pre = pre + bias
        h = act(pre)
        return h, [h]

    return Cell(step, _dense_zero_states(int(config["units"]), 1), state_count=1,
                prepare=lambda x: matmul64(x, kernel))


def _stacked_cells(config: dict, weights: Iterator[Array], family: str) -> Cell:
    cells = [build_cell(cell_config, weights, family) for cell_config in config["cells"]]

    def step(x_t: Array, states: list[Array]) -> tuple[Array, list[Array]]:
        # x_t comes prepared for the first cell; each later cell prepares its own input.
        new_states: list[Array] = []
        for index, (cell, cell_states) in enumerate(zip(cells, _split_states(cells, states))):
            if index:
                x_t = cell.prepare(x_t[:, np.newaxis])[:, 0]
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

    return Cell(step, zero_states, state_count=sum(cell.state_count for cell in cells),
                prepare=cells[0].prepare if cells else _unprepared)


def _split_states(cells: Sequence[Cell], states: list[Array]) -> list[list[Array]]:
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
        result += matmul64(padded[(slice(None), *window, slice(None))], kernel[offset])
    return result


def _conv_lstm_cell(config: dict, weights: Iterator[Array], family: str) -> Cell:
    kernel = _take(weights, "kernel")
    recurrent_kernel = _take(weights, "recurrent_kernel")
    bias = _take64(weights, "bias") if config.get("use_bias", True) else None
    rank = kernel.ndim - 2
    filters = int(config["filters"])
    kernel_size = _as_tuple(config["kernel_size"], rank, "kernel_size")
    expect_shape(kernel, (*kernel_size, kernel.shape[-2], 4 * filters), "kernel")
    expect_shape(recurrent_kernel, (*kernel_size, filters, 4 * filters), "recurrent_kernel")
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

    return Cell(step, zero_states, state_count=2)


def _is_channels_first(config: dict) -> bool:
    data_format = config.get("data_format") or "channels_last"
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"Unsupported data_format, received: {data_format!r}")
    return data_format == "channels_first"


def _to_last(a: Array) -> Array:
    return np.moveaxis(a, 1, -1)


def _to_first(a: Array) -> Array:
    return np.moveaxis(a, -1, 1)


_CELL_BUILDERS: dict[str, Callable[[dict, Iterator[Array], str], Cell]] = {
    "LSTMCell": _lstm_cell,
    "GRUCell": _gru_cell,
    "SimpleRNNCell": _simple_rnn_cell,
    "StackedRNNCells": _stacked_cells,
    "ConvLSTMCell": _conv_lstm_cell,
}


def cell_class_name(serialized: dict) -> str:
    if not isinstance(serialized, dict) or "class_name" not in serialized:
        raise ValueError(f"Expected a serialized Keras object, received: {serialized!r}")
    return serialized["class_name"]


def build_cell(cell_config: dict, weights: Iterator[Array], family: str) -> Cell:
    name = cell_class_name(cell_config)
    try:
        builder = _CELL_BUILDERS[name]
    except KeyError:
        raise ValueError(f"Unsupported recurrent cell, received: {name!r}") from None
    return builder(cell_config.get("config", {}), weights, family)
