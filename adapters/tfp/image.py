"""The image flows of ``adapters/image_flow.py`` on TensorFlow (over the TF ops table,
``ops.py``): the model with the interface ``adapters.tfp`` traces (``Model``'s). TFP ships
no multi-scale flow for these layouts (tfb.Glow is its own architecture with its own
weight layout), so the flow is the shared math on TF ops; the base is tfd.Normal's
log-density."""

from __future__ import annotations

from ..image import ImageSpec
from ..image_flow import ImageModel
from ..native.tf import tf
from ..passes import PassCounter
from .ops import TFOps


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
