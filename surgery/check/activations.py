"""NumPy activations for the oracle, by Keras name (Keras 2 and Keras 3 variants where they differ).
No TensorFlow or Keras here (see surgery.check.oracle).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from surgery.graph import registry


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
    return registry.activation_name(identifier, _ACTIVATIONS)


def family_activations(family: str) -> dict[str, Activation]:
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
        return family_activations(family)[resolved]
    except KeyError:
        raise ValueError(f"Unknown {family} activation, received: {resolved!r}") from None
