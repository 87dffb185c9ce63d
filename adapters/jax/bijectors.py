"""Canonical blocks as distrax bijectors, each oriented x -> z (forward = density direction).

From distrax as shipped: ScalarAffine (additive, affine, ActNorm, NICE scale),
LowerUpperTriangularAffine, Block, Chain, Inverse. Written here because distrax has no
such piece: the deep sigmoidal transformer and its bisection inverse (the shared
``adapters/naf.py`` on the jax ops table), a MADE autoregressive layer with its
sequential inverse, a permutation; and a coupling that transforms only its B half
(distrax.MaskedCoupling transforms all, see SplitCoupling).

The spline is the shared ``adapters/spline.py`` on the jax ops table, not distrax's
RationalQuadraticSpline: distrax computes the canonical spline once its parameters are
mapped (an absolute minimum bin size, slopes softplus(raw + log(e^(1 - m) - 1)) + m, K+1
slopes with 'identity' boundary slopes), but at twice the cost under jit, which made the
matched nsf and nsf-ar slower than TFP's spline on the same JAX (issue 16; spline.py has
the numbers).
"""

from __future__ import annotations


import distrax
import jax
import jax.numpy as jnp
import numpy as np

from .. import canonical as C, naf, residual
from ..errors import UnsupportedOp
from ..conditioner import mlp
from ..passes import PassCounter
from ..spline import spline
from .ops import OPS



class DeepSigmoidal(distrax.Bijector):
    """NAF's monotone transformer, elementwise; inverse by bisection."""

    def __init__(self, a, b, w):
        super().__init__(event_ndims_in=0)
        self.a, self.b, self.w = a, b, w

    def forward_and_log_det(self, x):
        return naf.dsf(OPS, x, self.a, self.b, self.w)

    def inverse_and_log_det(self, y):
        return naf.dsf_inverse(OPS, y, self.a, self.b, self.w)


class Spline(distrax.Bijector):
    """The canonical rational-quadratic spline, elementwise, identity outside the bound."""

    def __init__(self, theta, bins: int, bound: float):
        super().__init__(event_ndims_in=0)
        self.w, self.h, self.d = theta[..., :bins], theta[..., bins:2 * bins], \
            theta[..., 2 * bins:]
        self.bound = bound

    def forward_and_log_det(self, x):
        return spline(OPS, x, self.w, self.h, self.d, self.bound, inverse=False)

    def inverse_and_log_det(self, y):
        return spline(OPS, y, self.w, self.h, self.d, self.bound, inverse=True)


def transformer(theta, spec) -> distrax.Bijector:
    """The scalar bijector g(.; theta) for theta (..., P), elementwise over (...)."""
    t = spec.transform
    if t == "additive":
        return distrax.ScalarAffine(shift=theta[..., 0])
    if t == "affine":
        s = theta[..., 1]
        log_scale = s if spec.scale == "exp" else jax.nn.log_sigmoid(s + 2.0)
        return distrax.ScalarAffine(shift=theta[..., 0], log_scale=log_scale)
    if t == "spline":
        return Spline(theta, spec.bins, float(spec.tail_bound))
    M = spec.naf_hidden
    return DeepSigmoidal(theta[..., :M], theta[..., M:2 * M], theta[..., 2 * M:])


class MaskedAutoregressive(distrax.Bijector):
    """v_i = g(u_i; theta_i(u_<i)): one pass forward, dim passes (lax.fori_loop) inverse."""

    def __init__(self, theta_fn, make, order, counter: PassCounter):
        super().__init__(event_ndims_in=1)
        self.theta_fn, self.make, self.counter = theta_fn, make, counter
        self.order = jnp.asarray(order)
        self.dim = len(order)

    def forward_and_log_det(self, x):
        y, ld = self.make(self.theta_fn(x)).forward_and_log_det(x)
        return y, ld.sum(-1)

    def inverse_and_log_det(self, y):
        def body(k, state):
            out, total = state
            i = self.order[k]
            theta = jax.lax.dynamic_index_in_dim(self.theta_fn(out), i, axis=1, keepdims=False)
            yi = jax.lax.dynamic_index_in_dim(y, i, axis=1, keepdims=False)
            val, ld = self.make(theta).inverse_and_log_det(yi)
            return out.at[:, i].set(val), total + ld

        with self.counter.loop(self.dim):  # the body is traced once, runs dim times
            init = (jnp.zeros_like(y), jnp.zeros(y.shape[:-1], y.dtype))
            return jax.lax.fori_loop(0, self.dim, body, init)


class SplitCoupling(distrax.Bijector):
    """v_A = u_A, v_B = g(u_B; theta(u_A)). distrax.MaskedCoupling runs the transformer on
    every dimension (the masked ones with dummy parameters) and then masks: twice the
    spline work at even dim. This one transforms only B. A and B are the two contiguous
    halves of the canonical masks: static slices and a concatenation, not a gather and a
    scatter (as TFP's RealNVP does)."""

    def __init__(self, A, B, conditioner, make):
        super().__init__(event_ndims_in=1)
        if np.any(np.diff(A) != 1) or np.any(np.diff(B) != 1):
            raise ValueError(f"coupling halves must be contiguous, got {A} and {B}")
        self.conditioner, self.make = conditioner, make
        self.A, self.B = slice(int(A[0]), int(A[-1]) + 1), slice(int(B[0]), int(B[-1]) + 1)
        self.a_first = A[0] < B[0]

    def _apply(self, x, inverse: bool):
        xa = x[:, self.A]
        g = self.make(self.conditioner(xa))
        fn = g.inverse_and_log_det if inverse else g.forward_and_log_det
        v, ld = fn(x[:, self.B])
        parts = [xa, v] if self.a_first else [v, xa]
        return jnp.concatenate(parts, axis=1), ld.sum(-1)

    def forward_and_log_det(self, x):
        return self._apply(x, inverse=False)

    def inverse_and_log_det(self, y):
        return self._apply(y, inverse=True)


class Permute(distrax.Bijector):
    """(P y)_i = y[perm[i]]."""

    def __init__(self, perm):
        super().__init__(event_ndims_in=1)
        self.perm = perm

    def forward_and_log_det(self, x):
        return x[..., self.perm], jnp.zeros(x.shape[:-1], x.dtype)

    def inverse_and_log_det(self, y):
        return y[..., jnp.argsort(self.perm)], jnp.zeros(y.shape[:-1], y.dtype)


class Residual(distrax.Bijector):
    """A planar or radial layer (``adapters/residual.py``): its inverse is the layer's
    z -> x; its forward, x -> z, has no closed form and is refused."""

    def __init__(self, kind: str, arrays, spec):
        super().__init__(event_ndims_in=1)
        self.kind, self.arrays, self.spec = kind, arrays, spec

    def forward_and_log_det(self, x):
        raise UnsupportedOp(residual.no_inverse(self.spec))

    def inverse_and_log_det(self, y):
        return residual.layer(OPS, self.kind, y, self.arrays)  # log|det dx/dz|: the
        # inverse's own log-det


def block_bijector(block: C.Block, params: dict, spec, counter: PassCounter) -> distrax.Bijector:
    """One canonical block as a distrax bijector whose forward is x -> z."""
    n = block.name
    if block.kind in residual.KINDS:
        return Residual(block.kind, residual.named(params, block), spec)
    if block.kind == "actnorm":
        return distrax.Block(distrax.Chain([
            distrax.ScalarAffine(shift=jnp.zeros_like(params[f"{n}.loc"]),
                                 log_scale=-params[f"{n}.log_scale"]),
            distrax.ScalarAffine(shift=-params[f"{n}.loc"])]), 1)
    if block.kind == "scale":
        ls = params[f"{n}.log_scale"]
        return distrax.Block(distrax.ScalarAffine(shift=jnp.zeros_like(ls), log_scale=ls), 1)
    if block.kind == "lu":
        matrix = (jnp.tril(params[f"{n}.lower"], -1) + jnp.triu(params[f"{n}.upper"], 1)
                  + jnp.diag(params[f"{n}.sign"] * jnp.exp(params[f"{n}.log_diag"])))
        return distrax.Chain([Permute(params[f"{n}.perm"]),
                              distrax.LowerUpperTriangularAffine(matrix, jnp.zeros(block.dim))])
    masks = C.block_masks(block)
    masks = None if masks is None else [jnp.asarray(m) for m in masks]
    act = jax.nn.relu if spec.activation == "relu" else jnp.tanh
    P = block.params_per_dim

    def make(theta):
        return transformer(theta, spec)

    if block.kind == "coupling":
        A, B = np.asarray(block.identity), np.asarray(block.transformed)

        def conditioner(u_a):
            out = mlp(params, block, None, act, u_a, counter)
            return out.reshape(out.shape[0], len(B), P)

        core = SplitCoupling(A, B, conditioner, make)
    else:
        def theta_fn(u):
            out = mlp(params, block, masks, act, u, counter)
            return out.reshape(out.shape[0], block.dim, P)

        core = MaskedAutoregressive(theta_fn, make, np.argsort(block.degrees), counter)
    return distrax.Inverse(core) if block.inverted else core
