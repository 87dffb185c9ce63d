"""Framework-free pieces that the traced backends (jax, tfp) share: the canonical
conditioner MLP, written against any array type with ``@``, and the count of conditioner
evaluations ("passes") that an op issues.

Counting happens in Python, so under a tracer it runs once per trace, not per execution:
a loop body traced once must count as many times as the loop runs (``loop``), and a call
that the framework traces but never runs counts zero (``skip``). Eagerly every call is
an execution and counts itself.
"""

from __future__ import annotations

import collections
import contextlib

from . import canonical as C


class PassCounter:
    def __init__(self):
        self.n = 0
        self.scale = 1
        self.skip = 0

    def hit(self):
        if self.skip:
            self.skip -= 1
            return
        self.n += self.scale

    @contextlib.contextmanager
    def loop(self, trips: int, skip: int = 0):
        """Calls inside count ``trips`` times each; the first ``skip`` calls count zero."""
        outer = (self.scale, self.skip)
        self.scale, self.skip = self.scale * trips, skip
        try:
            yield
        finally:
            self.scale, self.skip = outer

    def counted(self, op: str, fn, passes: dict, traces: collections.Counter):
        """fn, recording in ``passes[op]`` the conditioner evaluations of one call (or one
        trace) and in ``traces[op]`` how often it ran in Python (once per trace when
        jitted: the no-retrace tests read it)."""
        def run(*args):
            self.n = 0
            traces[op] += 1
            out = fn(*args)
            passes[op] = self.n
            return out
        return run


def mlp(params: dict, block: C.Block, masks, activation, h, counter: PassCounter):
    """The canonical conditioner y = act(x @ (W * mask) + b), layer by layer, on any array
    type with ``@``; returns the raw (n, outputs) layer, dimension-major."""
    counter.hit()
    n_layers = len(block.net_sizes) - 1
    for k in range(n_layers):
        w = params[f"{block.name}.net.{k}.weight"]
        if masks is not None:
            w = w * masks[k]
        h = h @ w + params[f"{block.name}.net.{k}.bias"]
        if k < n_layers - 1:
            h = activation(h)
    return h
