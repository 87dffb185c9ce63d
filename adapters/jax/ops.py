"""The ops table (``adapters/ops.py``) on JAX, for the image flows and NAF's transformer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..ops import Ops


class JaxOps(Ops):
    reshape = staticmethod(jnp.reshape)
    transpose = staticmethod(jnp.transpose)
    ones_like = staticmethod(jnp.ones_like)
    relu = staticmethod(jax.nn.relu)
    tanh = staticmethod(jnp.tanh)
    exp = staticmethod(jnp.exp)
    sin = staticmethod(jnp.sin)
    cos = staticmethod(jnp.cos)
    sqrt = staticmethod(jnp.sqrt)
    clip = staticmethod(jnp.clip)
    cumsum = staticmethod(jnp.cumsum)
    log = staticmethod(jnp.log)
    abs = staticmethod(jnp.abs)
    softplus = staticmethod(jax.nn.softplus)
    log_sigmoid = staticmethod(jax.nn.log_sigmoid)
    clamp_min = staticmethod(jnp.maximum)
    where = staticmethod(jnp.where)
    stop_gradient = staticmethod(jax.lax.stop_gradient)
    any = staticmethod(jnp.any)
    all = staticmethod(jnp.all)
    logsumexp = staticmethod(jax.nn.logsumexp)
    log_softmax = staticmethod(jax.nn.log_softmax)
    inv = staticmethod(jnp.linalg.inv)

    def concat(self, parts, axis):
        return jnp.concatenate(parts, axis)

    def take(self, a, index):
        return jnp.take(a, index, axis=0)

    def take_last(self, a, index):
        return jnp.take_along_axis(a, index[..., None], -1)[..., 0]

    def softmax(self, a, axis):
        return jax.nn.softmax(a, axis)

    def const(self, array):
        return jnp.asarray(np.asarray(array, np.float32))

    def sum(self, a, axes):
        return jnp.sum(a, axis=axes)

    def mean_std(self, x):
        return jnp.mean(x, (0, 1, 2)), jnp.std(x, (0, 1, 2))

    def conv2d(self, x, w, b):
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b

    def until(self, step, state, limit):
        # lax.while_loop: traced once, so the program does not grow with the steps taken
        def cond(carry):
            _, stop, i = carry
            return ~stop & (i < limit)

        def body(carry):
            *state, stop = step(*carry[0])
            return tuple(state), stop, carry[2] + 1

        state, _, _ = jax.lax.while_loop(cond, body, (tuple(state), jnp.zeros((), bool), 0))
        return state


OPS = JaxOps()
