"""What the jax and tfp models of a vector flow share, framework-free: the spec's block
layout, the pass counter its conditioners hit, the flow x -> z as a chain of one bijector
per canonical block, the base distribution and Glow's data-dependent ActNorm init.

Each backend's ``Model`` subclasses ``ChainModel``, names its bijector library (distrax,
tfp.bijectors) and its array module, and writes the ops with its own signatures (jax
keeps trained and fixed parameters apart; TFP reads the log-det separately).
"""

from __future__ import annotations

import abc
from typing import Any, Callable

from . import canonical as C
from .passes import PassCounter
from .spec import FlowSpec


class ChainModel(abc.ABC):
    # set by each backend's Model
    chain: Callable           # [bijectors] -> one bijector applying the last element first
    block_bijector: Callable  # (block, params, spec, counter) -> the block's bijector, x -> z
    distributions: Any        # a module with MultivariateNormalDiag, Independent, Logistic
    array: Any                # an array module with zeros and ones (jax.numpy, tensorflow)

    def __init__(self, spec: FlowSpec):
        self.spec = spec
        self.layout = C.blocks(spec)
        self.counter = PassCounter()

    def bijector(self, params):
        """x -> z as one chain of the blocks' bijectors; params: canonical name -> array."""
        parts = [self.block_bijector(b, params, self.spec, self.counter) for b in self.layout]
        return self.chain(parts[::-1])

    def base(self):
        d, D = self.distributions, self.spec.dim
        loc, scale = self.array.zeros(D), self.array.ones(D)
        if self.spec.base == "normal":
            return d.MultivariateNormalDiag(loc, scale)
        return d.Independent(d.Logistic(loc, scale), 1)

    @abc.abstractmethod
    def actnorm_stats(self, x) -> tuple:
        """(mean, log(std + ACTNORM_EPS)) of batch x over its rows."""

    def _actnorm_init(self, params: dict, x) -> dict:
        """Glow's data-dependent init: each ActNorm's loc and log_scale from batch x as it
        reaches that block; the new arrays by canonical name."""
        params, out = dict(params), {}
        for b in self.layout:
            if b.kind == "actnorm":
                out[f"{b.name}.loc"], out[f"{b.name}.log_scale"] = self.actnorm_stats(x)
                params.update(out)
            x = self.block_bijector(b, params, self.spec, PassCounter()).forward(x)
        return out
