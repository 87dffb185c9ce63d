"""The scalar transformers of canonical.py in PyTorch (NAF's, ``mlp``, is ``adapters/naf.py``
over the torch ops table).

The spline is ``adapters/spline.py`` (written once for torch and jax) on the torch ops
table; that module says why it is not a library's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import naf
# NAF's bisection loop bodies, which the compile variant compiles (adapters/torch/__init__)
from ..naf import EAGER, Bisection, bracket_step, halve_step  # noqa: F401
from ..spline import spline
from .ops import OPS


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
        return spline(OPS, u, theta[..., :K], theta[..., K:2 * K], theta[..., 2 * K:],
                      float(spec.tail_bound), inverse)
    M = spec.naf_hidden
    p = theta[..., :M], theta[..., M:2 * M], theta[..., 2 * M:]
    return naf.dsf_inverse(OPS, u, *p, steps) if inverse else naf.dsf(OPS, u, *p)
