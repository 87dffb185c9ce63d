"""The image flows of ``adapters/image_flow.py`` on TensorFlow: the ops table and the
model with the interface ``adapters.tfp`` traces (``Model``'s). TFP ships no multi-scale
flow for these layouts (tfb.Glow is its own architecture with its own weight layout), so
the flow is the shared math on TF ops; the base is tfd.Normal's log-density."""

from __future__ import annotations

import numpy as np

from ..passes import PassCounter
from ..image import ImageSpec
from ..image_flow import ImageModel, Ops
from ..native.tf import tf


class TFOps(Ops):
    def reshape(self, a, shape):
        return tf.reshape(a, shape)

    def transpose(self, a, perm):
        return tf.transpose(a, perm)

    def concat(self, parts, axis):
        return tf.concat(parts, axis)

    def conv2d(self, x, w, b):
        return tf.nn.conv2d(x, w, 1, "SAME") + b

    relu = staticmethod(tf.nn.relu)
    log_sigmoid = staticmethod(tf.math.log_sigmoid)
    tanh = staticmethod(tf.math.tanh)
    exp = staticmethod(tf.math.exp)
    log = staticmethod(tf.math.log)
    inv = staticmethod(tf.linalg.inv)

    def sum(self, a, axes):
        return tf.reduce_sum(a, axis=axes)

    def take(self, a, index):
        return tf.gather(a, index)

    def const(self, array):
        return tf.constant(np.asarray(array, np.float32))

    def mean_std(self, x):
        mean, var = tf.nn.moments(x, axes=[0, 1, 2])
        return mean, tf.sqrt(var)


class TfImageModel:
    def __init__(self, spec: ImageSpec):
        self.spec = spec
        self.counter = PassCounter()
        self.math = ImageModel(spec, TFOps(), self.counter)
        self.layout = self.math.layout

    def to_latent(self, params, x):
        return self.math.to_latent(params, x)

    def to_data(self, params, z):
        return self.math.to_data(params, z)

    def log_prob(self, params, x):
        return self.math.log_prob(params, x)

    def base_sample(self, n, seed):
        return tf.random.stateless_normal([n, self.spec.dim], seed, dtype=tf.float32)

    def sample(self, params, n, seed):
        return self.to_data(params, self.base_sample(n, seed))[0]

    def actnorm_init(self, params, x) -> dict:
        return self.math.actnorm_init(params, x)
