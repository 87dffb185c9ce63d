"""The canonical math of ``canonical.py`` in float64 numpy: the oracle every backend matches.

Slow, untrainable and deliberately plain; written once, from the definitions, so that a
backend bug cannot hide behind another backend sharing it.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, logsumexp, softmax

from . import canonical as C
from .errors import UnsupportedOp
from .residual import KINDS as RESIDUAL_KINDS, no_inverse
from .spec import FlowSpec


def softplus(a):
    return np.logaddexp(0.0, a)


def log_sigmoid(a):
    return -softplus(-a)


def _unpack(theta, spec: FlowSpec):
    """theta (n, k, P) -> the transformer's named parameters."""
    if spec.transform == "additive":
        return (theta[..., 0],)
    if spec.transform == "affine":
        return theta[..., 0], theta[..., 1]
    if spec.transform == "mlp":
        M = spec.naf_hidden
        return theta[..., :M], theta[..., M:2 * M], theta[..., 2 * M:]
    K = spec.bins
    return theta[..., :K], theta[..., K:2 * K], theta[..., 2 * K:]


def _log_scale(s, spec):
    return s if spec.scale == "exp" else log_sigmoid(s + 2.0)


def _knots(raw, bound):
    K = raw.shape[-1]
    sizes = C.MIN_BIN_SIZE + (1 - C.MIN_BIN_SIZE * K) * softmax(raw, axis=-1)
    cum = np.concatenate([np.zeros(raw.shape[:-1] + (1,)), np.cumsum(sizes, -1)], -1)
    cum = 2 * bound * cum - bound
    cum[..., 0], cum[..., -1] = -bound, bound
    return cum


def _spline(u, w, h, d, bound, inverse):
    xk, yk = _knots(w, bound), _knots(h, bound)
    ones = np.ones(d.shape[:-1] + (1,))
    deriv = np.concatenate([ones, C.MIN_DERIVATIVE + softplus(d), ones], -1)
    inside = np.abs(u) <= bound
    u_in, u = u, np.clip(u, -bound, bound)
    knots_in = yk if inverse else xk
    k = np.clip(np.sum(u[..., None] >= knots_in[..., 1:-1], -1), 0, w.shape[-1] - 1)[..., None]
    take = lambda a, off=0: np.take_along_axis(a, k + off, -1)[..., 0]
    x0, x1, y0, y1 = take(xk), take(xk, 1), take(yk), take(yk, 1)
    d0, d1 = take(deriv), take(deriv, 1)
    wb, hb = x1 - x0, y1 - y0
    s = hb / wb
    if inverse:
        dy = u - y0
        a = hb * (s - d0) + dy * (d1 + d0 - 2 * s)
        b = hb * d0 - dy * (d1 + d0 - 2 * s)
        c = -s * dy
        disc = np.maximum(b * b - 4 * a * c, 0.0)
        t = 2 * c / (-b - np.sqrt(disc))
        out = t * wb + x0
    else:
        t = (u - x0) / wb
        out = y0 + hb * (s * t * t + d0 * t * (1 - t)) / (s + (d1 + d0 - 2 * s) * t * (1 - t))
    denom = s + (d1 + d0 - 2 * s) * t * (1 - t)
    logd = 2 * np.log(s) + np.log(d1 * t * t + 2 * s * t * (1 - t) + d0 * (1 - t) ** 2) \
        - 2 * np.log(denom)
    if inverse:
        logd = -logd
    return np.where(inside, out, u_in), np.where(inside, logd, 0.0)


def _dsf(u, a, b, w):
    alpha = C.MIN_DSF_SLOPE + softplus(a)
    pre = alpha * u[..., None] + b
    logw = log_softmax(w, -1)
    log_y = logsumexp(logw + log_sigmoid(pre), -1)
    log_1my = logsumexp(logw + log_sigmoid(-pre), -1)
    v = log_y - log_1my
    logd = logsumexp(logw + log_sigmoid(pre) + log_sigmoid(-pre) + np.log(alpha), -1) \
        - log_y - log_1my
    return v, logd


def _bisect(fn, target):
    lo, hi = -np.ones_like(target), np.ones_like(target)
    for _ in range(200):
        low = fn(lo) > target
        high = fn(hi) < target
        if not (low.any() or high.any()):
            break
        lo = np.where(low, 2 * lo, lo)
        hi = np.where(high, 2 * hi, hi)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        below = fn(mid) < target
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        if np.all(hi - lo <= 1e-12 * (1 + np.abs(mid))):
            break
    return 0.5 * (lo + hi)


def transformer(u, theta, spec: FlowSpec, inverse: bool):
    """The easy map g (inverse=False) or its inverse; returns (out, log|d out/d u|)."""
    p = _unpack(theta, spec)
    if spec.transform == "additive":
        return (u - p[0] if inverse else u + p[0]), np.zeros_like(u)
    if spec.transform == "affine":
        ls = _log_scale(p[1], spec)
        return ((u - p[0]) * np.exp(-ls), -ls) if inverse else (u * np.exp(ls) + p[0], ls)
    if spec.transform == "spline":
        return _spline(u, *p, spec.tail_bound, inverse)
    if not inverse:
        return _dsf(u, *p)
    x = _bisect(lambda t: _dsf(t, *p)[0], u)
    return x, -_dsf(x, *p)[1]


class Reference:
    """x -> z and z -> x of a spec under given canonical weights, in float64."""

    def __init__(self, spec: FlowSpec, weights: dict):
        self.spec = spec
        self.w = {k: np.asarray(v, np.float64) if v.dtype.kind == "f" else v
                  for k, v in C.check_weights(spec, weights).items()}
        self.blocks = C.blocks(spec)

    def _net(self, b: C.Block, inp):
        masks = C.block_masks(b)
        n = len(b.net_sizes) - 1
        h = inp
        for k in range(n):
            wk = self.w[f"{b.name}.net.{k}.weight"]
            if masks is not None:
                wk = wk * masks[k]
            h = h @ wk + self.w[f"{b.name}.net.{k}.bias"]
            if k < n - 1:
                h = np.maximum(h, 0) if self.spec.activation == "relu" else np.tanh(h)
        return h.reshape(h.shape[0], -1, b.params_per_dim)

    def _core(self, b: C.Block, u, inverse: bool):
        """h (inverse=False: one pass) or h^-1 of a conditioned block."""
        if b.kind == "coupling":
            A, B = list(b.identity), list(b.transformed)
            theta = self._net(b, u[:, A])
            out = u.copy()
            out[:, B], ld = transformer(u[:, B], theta, self.spec, inverse)
            return out, ld.sum(1)
        if not inverse:
            v, ld = transformer(u, self._net(b, u), self.spec, False)
            return v, ld.sum(1)
        out = np.zeros_like(u)
        total = np.zeros(u.shape[0])
        for i in np.argsort(b.degrees):
            theta = self._net(b, out)[:, i:i + 1]
            val, ld = transformer(u[:, i:i + 1], theta, self.spec, True)
            out[:, i] = val[:, 0]
            total += ld[:, 0]
        return out, total

    def _residual(self, b: C.Block, z):
        """A planar or radial layer z -> x, in the paper's own form (not residual.py's)."""
        w, n = self.w, b.name
        if b.kind == "planar":
            u, v, bias = w[f"{n}.u"], w[f"{n}.w"], w[f"{n}.b"][0]
            wu = v @ u
            u_hat = u + (-1 + softplus(wu) - wu) * v / (v @ v)
            t = np.tanh(z @ v + bias)
            psi = (1 - t ** 2)[:, None] * v
            return z + t[:, None] * u_hat, np.log(np.abs(1 + psi @ u_hat))
        alpha = softplus(w[f"{n}.alpha"][0])
        beta = -alpha + softplus(w[f"{n}.beta"][0])
        diff = z - w[f"{n}.z0"]
        r = np.linalg.norm(diff, axis=1)
        h = 1 / (alpha + r)
        dh = -1 / (alpha + r) ** 2
        ld = (z.shape[1] - 1) * np.log1p(beta * h) + np.log1p(beta * h + beta * dh * r)
        return z + (beta * h)[:, None] * diff, ld

    def _block(self, b: C.Block, u, to_latent: bool):
        w, n = self.w, b.name
        if b.kind in RESIDUAL_KINDS:
            if to_latent:
                raise UnsupportedOp(no_inverse(self.spec))
            return self._residual(b, u)
        if b.conditioned:
            return self._core(b, u, inverse=(to_latent == b.inverted))
        if b.kind == "actnorm":
            ls = w[f"{n}.log_scale"]
            if to_latent:
                return (u - w[f"{n}.loc"]) * np.exp(-ls), -np.full(len(u), ls.sum())
            return u * np.exp(ls) + w[f"{n}.loc"], np.full(len(u), ls.sum())
        if b.kind == "scale":
            ls = w[f"{n}.log_scale"]
            return (u * np.exp(ls), np.full(len(u), ls.sum())) if to_latent else \
                (u * np.exp(-ls), -np.full(len(u), ls.sum()))
        W = self.lu_matrix(n)
        ld = w[f"{n}.log_diag"].sum()
        if to_latent:
            return u @ W.T, np.full(len(u), ld)
        return np.linalg.solve(W, u.T).T, -np.full(len(u), ld)

    def lu_matrix(self, n: str):
        w = self.w
        D = len(w[f"{n}.log_diag"])
        L = np.tril(w[f"{n}.lower"], -1) + np.eye(D)
        U = np.triu(w[f"{n}.upper"], 1) + np.diag(w[f"{n}.sign"] * np.exp(w[f"{n}.log_diag"]))
        return (L @ U)[w[f"{n}.perm"]]

    def inverse(self, x):
        z, total = np.asarray(x, np.float64), 0.0
        for b in self.blocks:
            z, ld = self._block(b, z, True)
            total = total + ld
        return z, total

    def forward(self, z):
        x, total = np.asarray(z, np.float64), 0.0
        for b in reversed(self.blocks):
            x, ld = self._block(b, x, False)
            total = total + ld
        return x, total

    def log_prob(self, x):
        z, ld = self.inverse(x)
        if self.spec.base == "normal":
            base = -0.5 * z ** 2 - 0.5 * np.log(2 * np.pi)
        else:
            base = -z - 2 * softplus(-z)
        with np.errstate(invalid="ignore"):  # inf - inf past an overflow: see the rule
            return C.overflow_is_minus_inf(base.sum(1) + ld)
