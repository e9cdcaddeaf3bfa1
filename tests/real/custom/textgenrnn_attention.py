"""Trusted tf_keras (Keras 2) definition of textgenrnn's AttentionWeightedAverage layer.

Written for the real-model suite from the layer's published math (DeepMoji's attention:
softmax over time of x @ W, masked steps weighted 0, weighted sum over time); the
package's own code is never imported.
"""

import tensorflow as tf
import tf_keras
from tf_keras import backend as K


class AttentionWeightedAverage(tf_keras.layers.Layer):
    def __init__(self, return_attention=False, **kwargs):
        self.supports_masking = True
        self.return_attention = return_attention
        super().__init__(**kwargs)

    def build(self, input_shape):
        self.input_spec = [tf_keras.layers.InputSpec(ndim=3)]
        self.W = self.add_weight(shape=(int(input_shape[2]), 1), name=f"{self.name}_W",
                                 initializer="uniform", trainable=True)
        super().build(input_shape)

    def call(self, x, mask=None):
        logits = K.dot(x, self.W)
        shape = tf.shape(x)
        logits = tf.reshape(logits, (shape[0], shape[1]))
        ai = K.exp(logits - K.max(logits, axis=-1, keepdims=True))
        if mask is not None:
            ai = ai * K.cast(mask, K.floatx())
        att = ai / (K.sum(ai, axis=1, keepdims=True) + K.epsilon())
        result = K.sum(x * K.expand_dims(att), axis=1)
        if self.return_attention:
            return [result, att]
        return result

    def compute_output_shape(self, input_shape):
        if self.return_attention:
            return [(input_shape[0], input_shape[2]), (input_shape[0], input_shape[1])]
        return (input_shape[0], input_shape[2])

    def compute_mask(self, inputs, input_mask=None):
        if isinstance(input_mask, list):
            return [None] * len(input_mask)
        return None

    def get_config(self):
        config = super().get_config()
        config["return_attention"] = self.return_attention
        return config
