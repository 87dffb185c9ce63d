"""Blocks of canonical.py as torch modules; parameter names follow the canonical layout.

Every block maps x -> z with ``to_latent`` and z -> x with ``to_data``, each returning
(output, log|det d output / d input|) per row. Both take ``steps``, the bisection loop
bodies that an mlp (NAF) transformer's inverse runs (naf.Bisection); blocks
without such an inverse ignore it.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import canonical as C, residual
from ..errors import UnsupportedOp
from ..passes import PassCounter
from .ops import OPS
from .transformers import EAGER, transformer


def counts_now() -> bool:
    """Whether a conditioner pass counts now (a torch flow's ``PassCounter(counts=...)``):
    not while torch.compile traces, where a Python side effect runs once per trace, not per
    call (and dynamo would guard on the count); the torch backend's compile variant
    measures passes with one eager run instead."""
    return not torch.compiler.is_compiling()


class Linear(nn.Module):
    """y = x @ (weight * mask) + bias, weight stored (fan_in, fan_out) as in the layout."""

    def __init__(self, fan_in: int, fan_out: int, mask=None):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(fan_in, fan_out))
        self.bias = nn.Parameter(torch.zeros(fan_out))
        self.register_buffer("mask", None if mask is None else torch.as_tensor(mask),
                             persistent=False)

    def forward(self, x):
        w = self.weight if self.mask is None else self.weight * self.mask
        return torch.addmm(self.bias, x, w)


class Conditioned(nn.Module):
    """A coupling or MADE block: the core map h(u) = g(u; theta(.)) and its inverse."""

    def __init__(self, block: C.Block, spec, counter: PassCounter):
        super().__init__()
        self.block, self.spec, self.counter = block, spec, counter
        masks = C.block_masks(block)
        sizes = block.net_sizes
        self.net = nn.ModuleList(
            Linear(fi, fo, None if masks is None else masks[k])
            for k, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:])))
        # in place: the layer's output is fresh and neither backward needs it as it was
        # (addmm's needs its inputs, relu's and tanh's their own output), so each
        # activation saves allocating and writing a (batch, width) tensor
        self.act = torch.relu_ if spec.activation == "relu" else torch.tanh_
        self.P = block.params_per_dim
        if block.kind == "coupling":
            self.register_buffer("A", torch.tensor(block.identity), persistent=False)
            self.register_buffer("B", torch.tensor(block.transformed), persistent=False)
        else:
            # one conditioner pass per degree, lowest first
            self.order = [int(i) for i in torch.argsort(torch.tensor(block.degrees))]

    def theta(self, h):
        self.counter.hit()
        for k, layer in enumerate(self.net):
            h = layer(h)
            if k < len(self.net) - 1:
                h = self.act(h)
        return h.reshape(h.shape[0], -1, self.P)

    def solves(self, inverse: bool) -> bool:
        """Whether core(., inverse) searches for a root (bisection, a data-dependent loop)."""
        return inverse and self.spec.transform == "mlp"

    def core(self, u, inverse: bool, steps=EAGER):
        spec = self.spec
        if self.block.kind == "coupling":
            theta = self.theta(u.index_select(1, self.A))
            vb, ld = transformer(u.index_select(1, self.B), theta, spec, inverse, steps)
            return u.index_copy(1, self.B, vb), ld.sum(1)
        if not inverse:
            v, ld = transformer(u, self.theta(u), spec, False)
            return v, ld.sum(1)
        out = torch.zeros_like(u)
        total = torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
        for i in self.order:
            theta = self.theta(out)[:, i:i + 1]
            val, ld = transformer(u[:, i:i + 1], theta, spec, True, steps)
            out = out.index_copy(1, torch.tensor([i], device=u.device), val)
            total = total + ld[:, 0]
        return out, total

    def to_latent(self, x, steps=EAGER):
        return self.core(x, self.block.inverted, steps)

    def to_data(self, z, steps=EAGER):
        return self.core(z, not self.block.inverted, steps)


class ActNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    @torch.no_grad()
    def initialize(self, x):
        self.loc.copy_(x.mean(0))
        self.log_scale.copy_(torch.log(x.std(0, unbiased=False) + C.ACTNORM_EPS))

    def to_latent(self, x, steps=None):
        return (x - self.loc) * torch.exp(-self.log_scale), \
            (-self.log_scale.sum()).expand(x.shape[0])

    def to_data(self, z, steps=None):
        return z * torch.exp(self.log_scale) + self.loc, self.log_scale.sum().expand(z.shape[0])


class LU(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.lower = nn.Parameter(torch.zeros(dim, dim))
        self.upper = nn.Parameter(torch.zeros(dim, dim))
        self.log_diag = nn.Parameter(torch.zeros(dim))
        self.register_buffer("sign", torch.ones(dim))
        self.register_buffer("perm", torch.arange(dim))

    def factors(self):
        eye = torch.eye(self.log_diag.shape[0], device=self.log_diag.device)
        L = torch.tril(self.lower, -1) + eye
        U = torch.triu(self.upper, 1) + torch.diag(self.sign * torch.exp(self.log_diag))
        return L, U

    def to_latent(self, x, steps=None):
        L, U = self.factors()
        return (x @ (L @ U).T)[:, self.perm], self.log_diag.sum().expand(x.shape[0])

    def to_data(self, z, steps=None):
        L, U = self.factors()
        y = z[:, torch.argsort(self.perm)].T
        y = torch.linalg.solve_triangular(L, y, upper=False, unitriangular=True)
        y = torch.linalg.solve_triangular(U, y, upper=True)
        return y.T, (-self.log_diag.sum()).expand(z.shape[0])


class Scale(nn.Module):
    """NICE's final diagonal scaling."""

    def __init__(self, dim: int):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def to_latent(self, x, steps=None):
        return x * torch.exp(self.log_scale), self.log_scale.sum().expand(x.shape[0])

    def to_data(self, z, steps=None):
        return z * torch.exp(-self.log_scale), (-self.log_scale.sum()).expand(z.shape[0])


class Residual(nn.Module):
    """A planar or radial layer (``residual.py``): z -> x only."""

    def __init__(self, block: C.Block, spec):
        super().__init__()
        self.kind, self.spec = block.kind, spec
        for p in residual.PARAMS[block.kind]:
            self.register_parameter(p, nn.Parameter(torch.zeros(residual.shape(p, block.dim))))

    def to_latent(self, x, steps=None):
        raise UnsupportedOp(residual.no_inverse(self.spec))

    def to_data(self, z, steps=None):
        return residual.layer(OPS, self.kind, z,
                              [getattr(self, p) for p in residual.PARAMS[self.kind]])


def make_block(block: C.Block, spec, counter: PassCounter) -> nn.Module:
    if block.conditioned:
        return Conditioned(block, spec, counter)
    if block.kind in residual.KINDS:
        return Residual(block, spec)
    return {"actnorm": ActNorm, "lu": LU, "scale": Scale}[block.kind](block.dim)
