"""The ops table (``adapters/ops.py``) on TensorFlow, for the image flows and NAF's
transformer."""

from __future__ import annotations

import numpy as np

from ..native.tf import tf
from ..ops import Ops


class TFOps(Ops):
    def reshape(self, a, shape):
        return tf.reshape(a, shape)

    def transpose(self, a, perm):
        return tf.transpose(a, perm)

    def concat(self, parts, axis):
        return tf.concat(parts, axis)

    def take_last(self, a, index):
        return tf.gather(a, index, batch_dims=len(index.shape))

    def cumsum(self, a, axis):
        return tf.math.cumsum(a, axis)

    def softmax(self, a, axis):
        return tf.nn.softmax(a, axis)

    def take(self, a, index):
        return tf.gather(a, index)

    def const(self, array):
        return tf.constant(np.asarray(array, np.float32))

    ones_like = staticmethod(tf.ones_like)
    relu = staticmethod(tf.nn.relu)
    tanh = staticmethod(tf.math.tanh)
    exp = staticmethod(tf.math.exp)
    sin = staticmethod(tf.math.sin)
    cos = staticmethod(tf.math.cos)
    sqrt = staticmethod(tf.math.sqrt)
    clip = staticmethod(tf.clip_by_value)
    log = staticmethod(tf.math.log)
    abs = staticmethod(tf.math.abs)
    softplus = staticmethod(tf.math.softplus)
    log_sigmoid = staticmethod(tf.math.log_sigmoid)
    clamp_min = staticmethod(tf.maximum)
    where = staticmethod(tf.where)
    stop_gradient = staticmethod(tf.stop_gradient)
    any = staticmethod(tf.reduce_any)
    all = staticmethod(tf.reduce_all)
    logsumexp = staticmethod(tf.reduce_logsumexp)
    log_softmax = staticmethod(tf.nn.log_softmax)
    inv = staticmethod(tf.linalg.inv)

    def sum(self, a, axes):
        return tf.reduce_sum(a, axis=axes)

    def mean_std(self, x):
        mean, var = tf.nn.moments(x, axes=[0, 1, 2])
        return mean, tf.sqrt(var)

    def conv2d(self, x, w, b):
        return tf.nn.conv2d(x, w, 1, "SAME") + b

    def until(self, step, state, limit):
        # maximum_iterations (the limit): XLA needs a bound for the accumulators that TF
        # builds when this loop sits inside a differentiated MAF loop
        out = tf.while_loop(lambda *carry: tf.logical_not(carry[-1]),
                            lambda *carry: step(*carry[:-1]),
                            (*state, tf.constant(False)), maximum_iterations=limit)
        return tuple(out[:-1])


OPS = TFOps()
