"""Trusted tf_keras (Keras 2) definition of rnnmorph's ReversedLSTM layer.

An LSTM that always runs backwards (go_backwards=True) and flips its output sequence back
into input order; written for the real-model suite, the package's own code is never imported.
"""

import tf_keras
from tf_keras import backend as K


class ReversedLSTM(tf_keras.layers.LSTM):
    def __init__(self, units, **kwargs):
        kwargs["go_backwards"] = True
        super().__init__(units, **kwargs)

    def call(self, inputs, **kwargs):
        return K.reverse(super().call(inputs, **kwargs), 1)
