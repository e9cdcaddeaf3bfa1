"""Weight layouts of recurrent cells, and conversion into the Keras 3 layout.

A recurrent cell's weights are (kernel, recurrent_kernel[, bias]). What a file holds depends
on who wrote it:

| layout                 | kernel        | recurrent_kernel | bias          |
|------------------------|---------------|------------------|---------------|
| Keras 3 / Keras 2 LSTM | (in, 4u)      | (u, 4u)          | (4u,)         |
| Keras 2 CuDNNLSTM      | (in, 4u) *    | (u, 4u) *        | (8u,) in+rec  |
| GRU reset_after=True   | (in, 3u)      | (u, 3u)          | (2, 3u)       |
| GRU reset_after=False  | (in, 3u)      | (u, 3u)          | (3u,)         |
| Keras 2 CuDNNGRU       | (in, 3u) *    | (u, 3u) *        | (6u,) in, rec |
| SimpleRNN              | (in, u)       | (u, u)           | (u,)          |
| ConvLSTM{1,2,3}D       | (*k, in, 4f)  | (*k, f, 4f)      | (4f,)         |

Gate blocks along the last axis: LSTM i, f, c, o; GRU z, r, h. The Keras 2 CuDNN layers
store their gate blocks in the same Keras order (cuDNN's own r, z, h order for GRU is
applied only when tf_keras packs the cuDNN parameter buffer, in `CuDNNGRU._process_batch`).
What differs (*) is each gate block's memory layout: tf_keras hands every stored block
to cuDNN by a plain C-order reshape, so a stored (in, u) input block holds cuDNN's row-major
(u, in) matrix and a stored (u, u) recurrent block holds the transposed matrix. The
conversion is the one tf_keras applies when it loads a CuDNN weights file into LSTM/GRU
(`tf_keras/src/saving/legacy/hdf5_format.py`, `_convert_rnn_weights`):

    kernel block    k (in, u) -> k.T.reshape((in, u), order="F")   (== k.reshape(u, in).T)
    recurrent block r (u, u)  -> r.T
    CuDNNLSTM bias  (8u,)     -> input half + recurrent half       (4u,)
    CuDNNGRU bias   (6u,)     -> reshape (2, 3u): [input biases; recurrent biases]

CuDNNGRU computes the reset-after GRU, so it converts into `GRU(reset_after=True)` only.

Pure NumPy: nothing here imports Keras or reads files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from types import SimpleNamespace

import numpy as np

from surgery.errors import UsageError

# Gate count per cell family.
GATES = {"lstm": 4, "gru": 3, "simple": 1, "conv_lstm": 4}

# Cell / layer class name -> (family, layout).
CLASS_FAMILIES = {
    "LSTM": ("lstm", "keras"), "LSTMCell": ("lstm", "keras"), "LSTMV1": ("lstm", "keras"),
    "GRU": ("gru", "keras"), "GRUCell": ("gru", "keras"), "GRUV1": ("gru", "keras"),
    "SimpleRNN": ("simple", "keras"), "SimpleRNNCell": ("simple", "keras"),
    "ConvLSTM1D": ("conv_lstm", "keras"), "ConvLSTM2D": ("conv_lstm", "keras"),
    "ConvLSTM3D": ("conv_lstm", "keras"), "ConvLSTMCell": ("conv_lstm", "keras"),
    "ConvLSTM1DCell": ("conv_lstm", "keras"), "ConvLSTM2DCell": ("conv_lstm", "keras"),
    "ConvLSTM3DCell": ("conv_lstm", "keras"),
    "CuDNNLSTM": ("lstm", "cudnn"), "CuDNNGRU": ("gru", "cudnn"),
}

ROLES = ("kernel", "recurrent_kernel", "bias")


@dataclass(frozen=True)
class CellLayout:
    """What one stored cell is: enough to check compatibility and convert it."""

    family: str               # lstm | gru | simple | conv_lstm
    layout: str               # keras | cudnn
    units: int                # units (filters for ConvLSTM)
    kernel_shape: tuple
    recurrent_shape: tuple
    bias_shape: tuple | None  # None: no bias (use_bias=False)
    reset_after: bool | None = None  # GRU only

    @property
    def input_dims(self) -> tuple:
        """Everything in the kernel shape but the gate axis: (in,) or (*kernel_size, in)."""
        return tuple(self.kernel_shape[:-1])

    def describe(self) -> str:
        name = {"lstm": "LSTM", "gru": "GRU", "simple": "SimpleRNN", "conv_lstm": "ConvLSTM"}[self.family]
        if self.layout == "cudnn":
            name = "CuDNN" + name
        elif self.family == "gru":
            name += f"(reset_after={self.reset_after})"
        return name

    def shapes(self) -> dict:
        out = {"kernel": self.kernel_shape, "recurrent_kernel": self.recurrent_shape}
        if self.bias_shape is not None:
            out["bias"] = self.bias_shape
        return out


def classify(shapes: dict, class_hint: str | None = None, where: str = "cell") -> CellLayout:
    """Name the layout of stored weights from their shapes (and the class, when known).

    shapes: {"kernel": shape, "recurrent_kernel": shape, ["bias": shape]}.
    The bias shape tells CuDNN from Keras layouts; a class hint must agree with the shapes.
    """
    try:
        kernel = tuple(int(d) for d in shapes["kernel"])
        recurrent = tuple(int(d) for d in shapes["recurrent_kernel"])
    except KeyError as missing:
        raise UsageError(f"{where}: no {missing.args[0]} weight among {sorted(shapes)}") from None
    bias = tuple(int(d) for d in shapes["bias"]) if shapes.get("bias") is not None else None
    if len(recurrent) < 2 or len(kernel) != len(recurrent) or recurrent[-2] <= 0:
        raise UsageError(
            f"{where}: kernel {kernel} and recurrent_kernel {recurrent} are not a recurrent cell's weights"
        )
    units = recurrent[-2]
    gates, rest = divmod(recurrent[-1], units)
    conv = len(recurrent) > 2
    if rest or gates not in (1, 3, 4) or (conv and gates != 4) or kernel[-1] != recurrent[-1]:
        raise UsageError(
            f"{where}: kernel {kernel} and recurrent_kernel {recurrent} match no recurrent cell "
            "(expected (…, g·units) with g = 4 for LSTM, 3 for GRU, 1 for SimpleRNN)"
        )
    family = "conv_lstm" if conv else {4: "lstm", 3: "gru", 1: "simple"}[gates]
    layout, reset_after = "keras", None
    if bias is not None:
        g = gates * units
        if family == "lstm" and bias == (2 * g,):
            layout = "cudnn"
        elif family == "gru" and bias == (2 * g,):
            layout, reset_after = "cudnn", True
        elif family == "gru" and bias == (2, g):
            reset_after = True
        elif family == "gru" and bias == (g,):
            reset_after = False
        elif bias != (g,):
            raise UsageError(
                f"{where}: bias {bias} does not fit a {family} cell of {units} units "
                f"(kernel {kernel}, recurrent_kernel {recurrent})"
            )
    elif family == "gru":
        reset_after = None  # no bias: both GRU variants store the same weights
    found = CellLayout(family, layout, units, kernel, recurrent, bias, reset_after)
    if class_hint is not None and class_hint in CLASS_FAMILIES:
        hinted_family, hinted_layout = CLASS_FAMILIES[class_hint]
        if hinted_family != family or (hinted_layout == "cudnn") != (layout == "cudnn"):
            raise UsageError(
                f"{where}: class {class_hint} does not match its weights "
                f"(kernel {kernel}, recurrent_kernel {recurrent}, bias {bias}: a {found.describe()})"
            )
    return found


def expected_layout(cell_config: dict, weight_shapes: dict) -> CellLayout:
    """The Keras 3 layout a destination cell wants, from its config and registry shapes."""
    class_name = cell_config.get("class_name", "?")
    inner = cell_config.get("config", {})
    if class_name not in CLASS_FAMILIES:
        raise UsageError(f"no weight layout known for recurrent cell class {class_name!r}")
    family, _layout = CLASS_FAMILIES[class_name]
    use_bias = inner.get("use_bias", True)
    reset_after = bool(inner.get("reset_after", True)) if family == "gru" else None
    units = int(inner.get("units", inner.get("filters", 0)))
    return CellLayout(
        family, "keras", units,
        tuple(weight_shapes["kernel"]), tuple(weight_shapes["recurrent_kernel"]),
        tuple(weight_shapes["bias"]) if use_bias and "bias" in weight_shapes else None,
        reset_after if use_bias else (reset_after if family == "gru" else None),
    )


# ----------------------------------------------------------------------------------------
# Conversion plans


@dataclass(frozen=True)
class WeightTransform:
    """How one destination weight is made from the source weights.

    kind: "copy" (same bytes, maybe another dtype: streamable row by row),
          "cudnn_kernel", "cudnn_recurrent" (per-gate block relayout),
          "sum_halves" (CuDNNLSTM bias), "reshape" (CuDNNGRU bias).
    """

    role: str
    kind: str
    source_role: str
    source_shape: tuple
    shape: tuple
    gates: int = 1

    def apply(self, array: np.ndarray) -> np.ndarray:
        return _APPLY[self.kind](np.asarray(array), self)

    def note(self) -> str:
        if self.kind == "copy":
            return ""
        return {
            "cudnn_kernel": "cuDNN input-kernel layout per gate",
            "cudnn_recurrent": "cuDNN recurrent-kernel layout per gate (transposed)",
            "sum_halves": "cuDNN input + recurrent biases summed",
            "reshape": "cuDNN biases split into input/recurrent rows",
        }[self.kind]


def _copy(array, transform):
    return array


def _cudnn_kernel(array, transform):
    blocks = np.split(array, transform.gates, axis=-1)
    return np.concatenate([b.T.reshape(b.shape, order="F") for b in blocks], axis=-1)


def _cudnn_recurrent(array, transform):
    blocks = np.split(array, transform.gates, axis=-1)
    return np.concatenate([b.T for b in blocks], axis=-1)


def _sum_halves(array, transform):
    first, second = np.split(array, 2)
    return first + second


def _reshape(array, transform):
    return array.reshape(transform.shape)


_APPLY: dict[str, Callable] = {
    "copy": _copy, "cudnn_kernel": _cudnn_kernel, "cudnn_recurrent": _cudnn_recurrent,
    "sum_halves": _sum_halves, "reshape": _reshape,
}


def plan_conversion(source: CellLayout, dest: CellLayout, *, source_name: str, dest_name: str) -> list[WeightTransform]:
    """Transforms turning `source` weights into `dest` weights; UsageError on any mismatch.

    The message names both cells and shows both sets of shapes.
    """

    def mismatch(why: str) -> UsageError:
        return UsageError(
            f"cannot splice {source_name} ({source.describe()}: {_shapes_text(source.shapes())}) into "
            f"{dest_name} ({dest.describe()}: {_shapes_text(dest.shapes())}): {why}"
        )

    if source.family != dest.family:
        raise mismatch("different kinds of cell")
    if source.units != dest.units:
        raise mismatch(f"units {source.units} != {dest.units}")
    if source.input_dims != dest.input_dims:
        raise mismatch(f"input dims {source.input_dims} != {dest.input_dims}")
    if (source.bias_shape is None) != (dest.bias_shape is None):
        raise mismatch("one has a bias (use_bias=True) and the other not")
    if source.family == "gru" and source.bias_shape is not None and source.reset_after != dest.reset_after:
        if source.layout == "cudnn":
            raise mismatch("CuDNNGRU weights only fit GRU(reset_after=True)")
        raise mismatch(f"reset_after {source.reset_after} != {dest.reset_after}")
    gates = GATES[source.family]
    transforms = []
    if source.layout == "cudnn" and dest.layout != "cudnn":  # cuDNN into cuDNN: a plain copy
        transforms.append(WeightTransform("kernel", "cudnn_kernel", "kernel", source.kernel_shape,
                                          dest.kernel_shape, gates))
        transforms.append(WeightTransform("recurrent_kernel", "cudnn_recurrent", "recurrent_kernel",
                                          source.recurrent_shape, dest.recurrent_shape, gates))
        if dest.bias_shape is not None:
            kind = "sum_halves" if source.family == "lstm" else "reshape"
            transforms.append(WeightTransform("bias", kind, "bias", source.bias_shape, dest.bias_shape, gates))
    else:
        for role, src_shape, dst_shape in (
            ("kernel", source.kernel_shape, dest.kernel_shape),
            ("recurrent_kernel", source.recurrent_shape, dest.recurrent_shape),
            ("bias", source.bias_shape, dest.bias_shape),
        ):
            if dst_shape is None:
                continue
            if tuple(src_shape) != tuple(dst_shape):
                raise mismatch(f"{role} {tuple(src_shape)} != {tuple(dst_shape)}")
            transforms.append(WeightTransform(role, "copy", role, tuple(src_shape), tuple(dst_shape), gates))
    return transforms


def _shapes_text(shapes: dict) -> str:
    return ", ".join(f"{name} {tuple(shape)}" for name, shape in shapes.items())


# ----------------------------------------------------------------------------------------
# The inverse direction (Keras -> CuDNN), as tf_keras writes it. Used to build CuDNN-layout
# files from trained Keras weights (tests, and anyone who needs to hand weights back).


def to_cudnn(weights: list[np.ndarray], family: str) -> list[np.ndarray]:
    """[kernel, recurrent_kernel, bias] in Keras layout -> the Keras 2 CuDNN layer's layout.

    LSTM: the bias is split evenly into input and recurrent halves (only their sum matters).
    GRU:  the (2, 3u) reset_after bias is flattened to (6u,).
    """
    kernel, recurrent, bias = (np.asarray(w) for w in weights)
    gates = GATES[family]
    kernel = np.concatenate([_to_cudnn_block(b) for b in np.split(kernel, gates, axis=-1)], axis=-1)
    recurrent = np.concatenate([b.T for b in np.split(recurrent, gates, axis=-1)], axis=-1)
    if family == "lstm":
        bias = np.concatenate([0.5 * bias, 0.5 * bias])
    elif family == "gru":
        if bias.shape != (2, recurrent.shape[-1]):
            raise UsageError(f"CuDNNGRU needs GRU(reset_after=True) weights, bias (2, 3u); received {bias.shape}")
        bias = bias.reshape(-1)
    else:
        raise UsageError(f"no CuDNN layout for family {family!r}")
    return [kernel, recurrent, bias]


def _to_cudnn_block(block: np.ndarray) -> np.ndarray:
    # Inverse of k.T.reshape(k.shape, order="F"): tf_keras' transpose_input(from_cudnn=False).
    return block.T.reshape(block.shape, order="C")


def cudnn_to_keras(weights: list[np.ndarray], gates: int) -> list[np.ndarray]:
    """CuDNN layout -> Keras LSTM (gates=4) / GRU(reset_after=True) (gates=3), as tf.keras'
    own loader converted it: per-gate kernel transposition, LSTM bias halves summed, GRU
    biases reshaped to (2, 3*units)."""
    kernel, recurrent, bias = weights
    spec = SimpleNamespace(gates=gates)  # the block transforms only read the gate count
    kernel = _cudnn_kernel(np.asarray(kernel), spec)
    recurrent = _cudnn_recurrent(np.asarray(recurrent), spec)
    bias = _sum_halves(np.asarray(bias), spec) if gates == 4 else np.asarray(bias).reshape((2, -1))
    return [kernel, recurrent, bias]
