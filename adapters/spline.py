"""The canonical rational-quadratic spline (Durkan et al. 2019), written once over the ops
table (``ops.py``) for the torch and jax backends (TFP's matched backend uses
``tfb.RationalQuadraticSpline``, mapped in ``adapters/tfp``).

Written here rather than taken from a library: nflows/normflows' ``rational_quadratic_spline``
asserts on a negative discriminant, which float32 rounding can produce
(bayesiains/nflows#87), and evaluates out-of-bound inputs in a way whose gradients can turn
NaN; distrax's ``RationalQuadraticSpline`` computes the same function at twice the cost
under jit (263 against 127 us for 1024 x 1 values and 8 bins, one thread: it evaluates
every bin and selects). Here the discriminant is clamped at 0, the spline sees clamped
inputs and the identity tails are chosen after, and each value reads its own bin only.
"""

from __future__ import annotations

from .canonical import MIN_BIN_SIZE, MIN_DERIVATIVE


def knots(ops, raw, bound: float):
    """K + 1 knot positions on [-bound, bound] from K unnormalised bin sizes."""
    K = raw.shape[-1]
    sizes = MIN_BIN_SIZE + (1 - MIN_BIN_SIZE * K) * ops.softmax(raw, -1)
    inner = 2 * bound * ops.cumsum(sizes[..., :-1], -1) - bound
    # the end knots exactly at the bounds: the cumulative sum rounds
    edge = ops.ones_like(inner[..., :1]) * bound
    return ops.concat([-edge, inner, edge], -1)


def spline(ops, u, w, h, d, bound: float, inverse: bool):
    """g(u) or its inverse, elementwise over u (...,), bins from w, h (..., K) and inner
    knot slopes from d (..., K - 1): (out, log|d out / d u|); identity outside the bound."""
    xk, yk = knots(ops, w, bound), knots(ops, h, bound)
    one = ops.ones_like(d[..., :1])
    deriv = ops.concat([one, MIN_DERIVATIVE + ops.softplus(d), one], -1)
    inside = (u >= -bound) & (u <= bound)
    uc = ops.clip(u, -bound, bound)
    knots_in = yk if inverse else xk
    k = ops.sum(uc[..., None] >= knots_in[..., 1:-1], -1)  # the bin: inner knots below

    def take(a, off=0):
        return ops.take_last(a, k + off)

    x0, x1, y0, y1 = take(xk), take(xk, 1), take(yk), take(yk, 1)
    d0, d1 = take(deriv), take(deriv, 1)
    wb, hb = x1 - x0, y1 - y0
    s = hb / wb
    if inverse:
        dy = uc - y0
        a = hb * (s - d0) + dy * (d1 + d0 - 2 * s)
        b = hb * d0 - dy * (d1 + d0 - 2 * s)
        c = -s * dy
        disc = ops.clamp_min(b * b - 4 * a * c, 0.0)
        t = 2 * c / (-b - ops.sqrt(disc))
        out = t * wb + x0
    else:
        t = (uc - x0) / wb
    t1 = t * (1 - t)
    denom = s + (d1 + d0 - 2 * s) * t1
    if not inverse:
        out = y0 + hb * (s * t * t + d0 * t1) / denom
    logd = 2 * ops.log(s) + ops.log(d1 * t * t + 2 * s * t1 + d0 * (1 - t) ** 2) \
        - 2 * ops.log(denom)
    if inverse:
        logd = -logd
    return ops.where(inside, out, u), ops.where(inside, logd, 0 * ops.ones_like(logd))
