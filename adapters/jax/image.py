"""The image flows of ``adapters/image_flow.py`` on JAX (over the jax ops table, ``ops.py``):
the model with the signatures ``adapters.jax.Compiled`` jits (trained and fixed parameters
apart)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..image import ImageSpec
from ..image_flow import ImageModel
from ..passes import PassCounter
from .ops import JaxOps


class JaxImageModel:
    """``adapters.jax.Model``'s interface over the shared image math."""

    def __init__(self, spec: ImageSpec):
        self.spec = spec
        self.counter = PassCounter()
        self.math = ImageModel(spec, JaxOps(), self.counter)
        self.layout = self.math.layout

    def to_latent(self, train, fixed, x):
        return self.math.to_latent({**train, **fixed}, x)

    def to_data(self, train, fixed, z):
        return self.math.to_data({**train, **fixed}, z)

    def log_prob(self, train, fixed, x):
        return self.math.log_prob({**train, **fixed}, x)

    def base_sample(self, key, n):
        return jax.random.normal(key, (n, self.spec.dim), jnp.float32)

    def sample(self, train, fixed, key, n):
        return self.to_data(train, fixed, self.base_sample(key, n))[0]

    def actnorm_init(self, train, fixed, x) -> dict:
        return self.math.actnorm_init({**train, **fixed}, x)
