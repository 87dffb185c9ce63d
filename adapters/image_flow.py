"""The multi-scale image flows of ``image.py``, written once for every framework.

The math takes ``ops``, the table of array functions of ``ops.py`` (one per framework, in
each backend's ``ops`` module), and plain ``params`` (canonical name -> framework array).
Everything else is arithmetic, slicing and ``@``, which torch, jax.numpy and TensorFlow
spell alike. One definition means the three backends cannot drift apart in structure;
the parity tests still hold each backend to the others numerically.
"""

from __future__ import annotations

import numpy as np

from .image import ImageBlock, ImageSpec, blocks
from .ops import Ops, base_log_prob
from .passes import PassCounter


class ImageModel:
    """Pure functions of (params, data) for one spec, on one framework's ops.

    ``counter`` (or None) is hit once per coupling net evaluation, as the vector flows
    count their conditioner passes."""

    def __init__(self, spec: ImageSpec, ops: Ops, counter: PassCounter | None = None):
        self.spec, self.ops, self.counter = spec, ops, counter
        self.layout = blocks(spec)
        self._checker = {}

    # --- blocks --------------------------------------------------------------------------
    def _net(self, params, b: ImageBlock, u):
        if self.counter is not None:
            self.counter.hit()
        o, p = self.ops, params
        h = o.relu(o.conv2d(u, p[f"{b.name}.net.0.weight"], p[f"{b.name}.net.0.bias"]))
        h = o.relu(o.conv2d(h, p[f"{b.name}.net.1.weight"], p[f"{b.name}.net.1.bias"]))
        return o.conv2d(h, p[f"{b.name}.net.2.weight"], p[f"{b.name}.net.2.bias"])

    def _log_scale(self, s):
        o = self.ops
        return o.log_sigmoid(s + 2.0) if self.spec.scale == "sigmoid" else o.tanh(s)

    def _mask(self, b: ImageBlock):
        """Checkerboard mask (1, h, w, 1): 1 on the conditioning pixels."""
        key = (b.shape, b.parity)
        if key not in self._checker:
            h, w, _ = b.shape
            m = (np.add.outer(np.arange(h), np.arange(w)) % 2 == b.parity)
            self._checker[key] = m.astype(np.float32)[None, :, :, None]
        return self.ops.const(self._checker[key])

    def _coupling(self, params, b: ImageBlock, u, inverse: bool):
        o = self.ops
        c = b.channels
        if b.mask == "checker":
            m = self._mask(b)
            theta = self._net(params, b, u * m)
            shift, log_c = theta[..., 0::2], self._log_scale(theta[..., 1::2])
            keep = 1.0 - m
            if inverse:
                v = u * m + keep * ((u - shift) * o.exp(-log_c))
            else:
                v = u * m + keep * (u * o.exp(log_c) + shift)
            ld = o.sum(log_c * keep, (1, 2, 3))
            return v, (-ld if inverse else ld)
        half = c // 2 if b.parity == 0 else c - c // 2
        a_part, b_part = (u[..., :half], u[..., half:]) if b.parity == 0 else \
            (u[..., c - half:], u[..., :c - half])
        theta = self._net(params, b, a_part)
        shift, log_c = theta[..., 0::2], self._log_scale(theta[..., 1::2])
        if inverse:
            out = (b_part - shift) * o.exp(-log_c)
        else:
            out = b_part * o.exp(log_c) + shift
        v = o.concat([a_part, out] if b.parity == 0 else [out, a_part], 3)
        ld = o.sum(log_c, (1, 2, 3))
        return v, (-ld if inverse else ld)

    def _invconv_matrix(self, params, b: ImageBlock):
        o, n = self.ops, b.name
        c = b.channels
        lower = params[f"{n}.lower"] * o.const(np.tril(np.ones((c, c)), -1)) + o.const(np.eye(c))
        upper = (params[f"{n}.upper"] * o.const(np.triu(np.ones((c, c)), 1))
                 + o.const(np.eye(c)) * (params[f"{n}.sign"] * o.exp(params[f"{n}.log_diag"])))
        return o.take(lower @ upper, params[f"{n}.perm"])

    def _squeeze(self, u, b: ImageBlock):
        h, w, c = b.shape
        o = self.ops
        u = o.reshape(u, (-1, h // 2, 2, w // 2, 2, c))
        u = o.transpose(u, (0, 1, 3, 5, 2, 4))
        return o.reshape(u, (-1, h // 2, w // 2, 4 * c))

    def _unsqueeze(self, v, b: ImageBlock):
        h, w, c = b.shape
        o = self.ops
        v = o.reshape(v, (-1, h // 2, w // 2, c, 2, 2))
        v = o.transpose(v, (0, 1, 4, 2, 5, 3))
        return o.reshape(v, (-1, h, w, c))

    # --- the flow ------------------------------------------------------------------------
    def to_latent(self, params, x):
        """x (n, H*W*C) -> (z (n, H*W*C), log|det dz/dx| (n,))."""
        o = self.ops
        u = o.reshape(x, (-1, *self.spec.shape))
        total = 0.0
        parts = []
        for b in self.layout:
            h, w, c = b.shape
            if b.kind == "squeeze":
                u = self._squeeze(u, b)
            elif b.kind == "split":
                parts.append(o.reshape(u[..., c // 2:], (-1, h * w * (c - c // 2))))
                u = u[..., :c // 2]
            elif b.kind == "actnorm":
                ls = params[f"{b.name}.log_scale"]
                u = (u - params[f"{b.name}.loc"]) * o.exp(-ls)
                total = total - h * w * o.sum(ls, (0,))
            elif b.kind == "invconv":
                u = u @ o.transpose(self._invconv_matrix(params, b), (1, 0))
                total = total + h * w * o.sum(params[f"{b.name}.log_diag"], (0,))
            else:
                u, ld = self._coupling(params, b, u, inverse=False)
                total = total + ld
        h, w, c = self._final_shape()
        parts.append(o.reshape(u, (-1, h * w * c)))
        z = o.concat(parts, 1)
        return z, total + 0.0 * z[:, 0]  # per row even for a flow of constant log-det

    def to_data(self, params, z):
        """z (n, H*W*C) -> (x, log|det dx/dz|)."""
        o = self.ops
        sizes = self._split_sizes()
        starts = np.cumsum([0] + sizes)
        parts = [z[:, starts[i]:starts[i + 1]] for i in range(len(sizes))]
        h, w, c = self._final_shape()
        u = o.reshape(parts.pop(), (-1, h, w, c))
        total = 0.0
        for b in reversed(self.layout):
            h, w, c = b.shape
            if b.kind == "squeeze":
                u = self._unsqueeze(u, b)
            elif b.kind == "split":
                u = o.concat([u, o.reshape(parts.pop(), (-1, h, w, c - c // 2))], 3)
            elif b.kind == "actnorm":
                ls = params[f"{b.name}.log_scale"]
                u = u * o.exp(ls) + params[f"{b.name}.loc"]
                total = total + h * w * o.sum(ls, (0,))
            elif b.kind == "invconv":
                u = u @ o.transpose(o.inv(self._invconv_matrix(params, b)), (1, 0))
                total = total - h * w * o.sum(params[f"{b.name}.log_diag"], (0,))
            else:
                u, ld = self._coupling(params, b, u, inverse=True)
                total = total + ld
        x = o.reshape(u, (-1, self.spec.dim))
        return x, total + 0.0 * x[:, 0]

    def base_log_prob(self, z):
        return base_log_prob(self.ops, z, "normal")

    def log_prob(self, params, x):
        z, ld = self.to_latent(params, x)
        return self.base_log_prob(z) + ld

    def actnorm_init(self, params, x) -> dict:
        """Glow's data-dependent ActNorm init from batch x: the new loc and log_scale of
        every ActNorm, each from the statistics of its input after the earlier ones are
        set. Returns {canonical name: array}."""
        o = self.ops
        params = dict(params)
        new = {}
        u = o.reshape(x, (-1, *self.spec.shape))
        for b in self.layout:
            if b.kind == "squeeze":
                u = self._squeeze(u, b)
            elif b.kind == "split":
                u = u[..., :b.channels // 2]
            elif b.kind == "actnorm":
                mean, std = o.mean_std(u)
                new[f"{b.name}.loc"] = mean
                new[f"{b.name}.log_scale"] = o.log(std + 1e-6)
                params.update({k: new[k] for k in (f"{b.name}.loc", f"{b.name}.log_scale")})
                u = (u - mean) / (std + 1e-6)
            elif b.kind == "invconv":
                u = u @ o.transpose(self._invconv_matrix(params, b), (1, 0))
            else:
                u, _ = self._coupling(params, b, u, inverse=False)
        return new

    # --- shapes --------------------------------------------------------------------------
    def _final_shape(self):
        h, w, c = self.spec.shape
        for b in self.layout:
            if b.kind == "squeeze":
                h, w, c = h // 2, w // 2, 4 * c
            elif b.kind == "split":
                c = c // 2
        return h, w, c

    def _split_sizes(self) -> list[int]:
        sizes = [b.shape[0] * b.shape[1] * (b.channels - b.channels // 2)
                 for b in self.layout if b.kind == "split"]
        h, w, c = self._final_shape()
        return sizes + [h * w * c]
