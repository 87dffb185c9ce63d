"""The scalar transformers of canonical.py in PyTorch.

The spline is written here rather than taken from nflows/normflows: their
``rational_quadratic_spline`` computes the same math but asserts on a negative
discriminant, which float32 rounding can produce (bayesiains/nflows#87), and evaluates
out-of-bound inputs in a way whose gradients can turn NaN. Here the discriminant is
clamped at 0 and the spline sees clamped inputs, the identity tails are chosen after.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from ..canonical import (BISECTION_MAX_ITERS, BISECTION_TOL, MIN_BIN_SIZE, MIN_DERIVATIVE,
                         MIN_DSF_SLOPE)


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


def dsf(u, a, b, w):
    """Deep sigmoidal flow v = logit(sum softmax(w) sigmoid(alpha u + b)), in log space."""
    alpha = MIN_DSF_SLOPE + F.softplus(a)
    pre = alpha * u[..., None] + b
    logw = torch.log_softmax(w, -1)
    ls_pos, ls_neg = F.logsigmoid(pre), F.logsigmoid(-pre)
    log_y = torch.logsumexp(logw + ls_pos, -1)
    log_1my = torch.logsumexp(logw + ls_neg, -1)
    logd = torch.logsumexp(logw + ls_pos + ls_neg + torch.log(alpha), -1) - log_y - log_1my
    return log_y - log_1my, logd


def bracket_step(fn, target, lo, hi):
    """One bracket doubling: (lo, hi, whether any row still needed to move)."""
    low, high = fn(lo) > target, fn(hi) < target
    return torch.where(low, 2 * lo, lo), torch.where(high, 2 * hi, hi), (low | high).any()


def halve_step(fn, target, lo, hi):
    """One halving: (lo, hi, whether every bracket is now below tolerance)."""
    mid = 0.5 * (lo + hi)
    below = fn(mid) < target
    lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return lo, hi, (hi - lo <= BISECTION_TOL * (1 + mid.abs())).all()


class Bisection(NamedTuple):
    """The loop bodies of ``bisect``. The loops themselves stop on data (one host sync per
    iteration), so the torch backend's ``compile`` variant compiles these bodies and keeps
    the loops in Python (see adapters/torch/__init__.py)."""
    bracket: Callable = bracket_step
    halve: Callable = halve_step


EAGER = Bisection()


@torch.no_grad()
def bisect(fn, target, steps: Bisection = EAGER):
    """Solve fn(u) = target for increasing fn, elementwise: bracket doubling, then halving."""
    lo, hi = -torch.ones_like(target), torch.ones_like(target)
    for _ in range(BISECTION_MAX_ITERS):
        lo, hi, moved = steps.bracket(fn, target, lo, hi)
        if not bool(moved):
            break
    for _ in range(BISECTION_MAX_ITERS):
        lo, hi, done = steps.halve(fn, target, lo, hi)
        if bool(done):
            break
    return 0.5 * (lo + hi)


def dsf_inverse(v, a, b, w, steps: Bisection = EAGER):
    # the root search sees no autograd history (it runs under no_grad anyway): compiled
    # loop bodies then meet the same tensors in training and in sampling
    ad, bd, wd = a.detach(), b.detach(), w.detach()
    u = bisect(lambda t: dsf(t, ad, bd, wd)[0], v.detach(), steps)
    # Implicit-function gradients without changing the value: d u/d v = 1/g' and
    # d u/d theta = -(d g/d theta)/g' at the root found by bisection.
    val, logd = dsf(u, a, b, w)
    slope = torch.exp(logd).detach().clamp_min(1e-30)
    u = u + ((v - v.detach()) - (val - val.detach())) / slope
    return u, -dsf(u, a, b, w)[1]


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
    return dsf_inverse(u, *p, steps) if inverse else dsf(u, *p)
