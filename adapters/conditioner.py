"""The canonical conditioner MLP, framework-free: written against any array type with
``@``, shared by the traced backends (jax, tfp) and the tfp-jax peer. Each evaluation hits
a ``passes.PassCounter``.
"""

from __future__ import annotations

from . import canonical as C
from .passes import PassCounter


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
