"""channels_first convolutions on CPUs whose TensorFlow kernels take NHWC only.

TensorFlow's own CPU Conv2D (and pooling) kernels accept NHWC only; NCHW works where
oneDNN replaces them (Intel CPUs with TF_ENABLE_ONEDNN_OPTS on) or on a GPU. Keras 3
compiles 3-D channels_first convolutions with XLA for that reason but runs 1-D and 2-D ones
(ConvLSTM1D/2D with data_format="channels_first") eagerly, so on an AMD CPU, or with
TF_ENABLE_ONEDNN_OPTS=0, they fail with "only supports the NHWC tensor format". XLA's CPU
backend accepts every layout: a call that fails that way is run again XLA-compiled; it
computes the same function (round-off aside), and the tool's checks then apply as usual.
tf_keras transposes to NHWC itself and never needs this.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from surgery.errors import NotSupportedError

T = TypeVar("T")

# TensorFlow's wording (Conv2D, MaxPool, AvgPool ... on CPU).
NHWC_ONLY_MARKERS = ("only supports the NHWC tensor format", "only supports NHWC")


def is_nhwc_only_error(error: BaseException) -> bool:
    text = str(error)
    return any(marker in text for marker in NHWC_ONLY_MARKERS)


def run(fn: Callable[[], T]) -> T:
    """fn(), or fn compiled with XLA where this CPU cannot run a channels_first op eagerly.

    fn must be traceable (a Keras model call) and return tensors (None allowed in the
    structure): under XLA nothing but its return value comes back.
    """
    try:
        return fn()
    except Exception as error:
        if not is_nhwc_only_error(error):
            raise
    import tensorflow as tf

    try:
        return tf.function(fn, jit_compile=True)()
    except Exception as error:
        text = " ".join(str(error).split())[:200]
        raise NotSupportedError(
            "this CPU's TensorFlow kernels cannot run a channels_first (NCHW) convolution and "
            f"the XLA-compiled retry failed too ({type(error).__name__}: {text}); run on a GPU "
            "or with oneDNN (TF_ENABLE_ONEDNN_OPTS=1 on an Intel CPU)"
        ) from None
