"""The image flows of ``adapters/image_flow.py`` on JAX: the ops table and the model with
the signatures ``adapters.jax.Compiled`` jits (trained and fixed parameters apart)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..passes import PassCounter
from ..image import ImageSpec
from ..image_flow import ImageModel, Ops


class JaxOps(Ops):
    reshape = staticmethod(jnp.reshape)
    transpose = staticmethod(jnp.transpose)
    relu = staticmethod(jax.nn.relu)
    log_sigmoid = staticmethod(jax.nn.log_sigmoid)
    tanh = staticmethod(jnp.tanh)
    exp = staticmethod(jnp.exp)
    log = staticmethod(jnp.log)
    inv = staticmethod(jnp.linalg.inv)

    def concat(self, parts, axis):
        return jnp.concatenate(parts, axis)

    def conv2d(self, x, w, b):
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b

    def sum(self, a, axes):
        return jnp.sum(a, axis=axes)

    def take(self, a, index):
        return jnp.take(a, index, axis=0)

    def const(self, array):
        return jnp.asarray(np.asarray(array, np.float32))

    def mean_std(self, x):
        return jnp.mean(x, (0, 1, 2)), jnp.std(x, (0, 1, 2))


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
