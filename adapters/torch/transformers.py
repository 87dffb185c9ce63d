"""The scalar transformers of canonical.py in PyTorch (NAF's, ``mlp``, is ``adapters/naf.py``
over the torch ops table).

The spline is written here rather than taken from nflows/normflows: their
``rational_quadratic_spline`` computes the same math but asserts on a negative
discriminant, which float32 rounding can produce (bayesiains/nflows#87), and evaluates
out-of-bound inputs in a way whose gradients can turn NaN. Here the discriminant is
clamped at 0 and the spline sees clamped inputs, the identity tails are chosen after.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import naf
from ..canonical import MIN_BIN_SIZE, MIN_DERIVATIVE
# NAF's bisection loop bodies, which the compile variant compiles (adapters/torch/__init__)
from ..naf import EAGER, Bisection, bracket_step, halve_step  # noqa: F401
from .ops import OPS


def _knots(raw, bound):
    K = raw.shape[-1]
    sizes = MIN_BIN_SIZE + (1 - MIN_BIN_SIZE * K) * torch.softmax(raw, -1)
    cum = F.pad(torch.cumsum(sizes, -1), (1, 0))
    cum = 2 * bound * cum - bound
    # pin the end knots exactly, as the cumulative sum rounds
    return torch.cat([torch.full_like(cum[..., :1], -bound), cum[..., 1:-1],
                      torch.full_like(cum[..., :1], bound)], -1)


def spline(u, w, h, d, bound: float, inverse: bool):
    xk, yk = _knots(w, bound), _knots(h, bound)
    deriv = MIN_DERIVATIVE + F.softplus(d)
    one = torch.ones_like(deriv[..., :1])
    deriv = torch.cat([one, deriv, one], -1)
    inside = (u >= -bound) & (u <= bound)
    uc = u.clamp(-bound, bound)
    knots_in = yk if inverse else xk
    k = (uc[..., None] >= knots_in[..., 1:-1]).sum(-1, keepdim=True)

    def take(a, off=0):
        return a.gather(-1, k + off)[..., 0]

    x0, x1, y0, y1 = take(xk), take(xk, 1), take(yk), take(yk, 1)
    d0, d1 = take(deriv), take(deriv, 1)
    wb, hb = x1 - x0, y1 - y0
    s = hb / wb
    if inverse:
        dy = uc - y0
        a = hb * (s - d0) + dy * (d1 + d0 - 2 * s)
        b = hb * d0 - dy * (d1 + d0 - 2 * s)
        c = -s * dy
        disc = (b * b - 4 * a * c).clamp_min(0.0)
        t = 2 * c / (-b - torch.sqrt(disc))
        out = t * wb + x0
    else:
        t = (uc - x0) / wb
    t1 = t * (1 - t)
    denom = s + (d1 + d0 - 2 * s) * t1
    if not inverse:
        out = y0 + hb * (s * t * t + d0 * t1) / denom
    logd = 2 * torch.log(s) + torch.log(d1 * t * t + 2 * s * t1 + d0 * (1 - t) ** 2) \
        - 2 * torch.log(denom)
    if inverse:
        logd = -logd
    return torch.where(inside, out, u), torch.where(inside, logd, torch.zeros_like(logd))


def transformer(u, theta, spec, inverse: bool, steps: Bisection = EAGER):
    """g(u; theta) or its inverse for u (n, k), theta (n, k, P): (out, log|d out / d u|).
    ``steps``: the bisection loop bodies, for the one inverse without a closed form (mlp)."""
    t = spec.transform
    if t == "additive":
        shift = theta[..., 0]
        return (u - shift if inverse else u + shift), torch.zeros_like(u)
    if t == "affine":
        shift, s = theta[..., 0], theta[..., 1]
        ls = s if spec.scale == "exp" else F.logsigmoid(s + 2.0)
        if inverse:
            return (u - shift) * torch.exp(-ls), -ls
        return u * torch.exp(ls) + shift, ls
    if t == "spline":
        K = spec.bins
        return spline(u, theta[..., :K], theta[..., K:2 * K], theta[..., 2 * K:],
                      float(spec.tail_bound), inverse)
    M = spec.naf_hidden
    p = theta[..., :M], theta[..., M:2 * M], theta[..., 2 * M:]
    return naf.dsf_inverse(OPS, u, *p, steps) if inverse else naf.dsf(OPS, u, *p)
