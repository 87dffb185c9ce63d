"""The table of array functions through which math is written once for every framework.

The image flows (``image_flow.py``), NAF's deep sigmoidal transformer (``naf.py``) and the
rational-quadratic spline (``spline.py``) take
``ops``, one framework's table (``adapters/{torch,jax,tfp}/ops.py``); everything else they
do is arithmetic, comparison, slicing and ``@``, which torch, jax.numpy and TensorFlow
spell alike. Only what the frameworks spell differently is here, and the one construct
that really differs, a loop that stops on data (``until``).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np


class Ops:
    """What a framework supplies. Image arrays are NHWC; conv weights HWIO."""

    # --- shapes and constants ----------------------------------------------------------
    def reshape(self, a, shape): ...
    def transpose(self, a, perm): ...
    def concat(self, parts, axis): ...
    def take(self, a, index): ...            # rows of a matrix by an int array
    def take_last(self, a, index): ...       # a[..., index[...]]: one entry per position
    def const(self, array: np.ndarray): ...  # float32 constant
    def ones_like(self, a): ...

    # --- elementwise -------------------------------------------------------------------
    def relu(self, a): ...
    def tanh(self, a): ...
    def exp(self, a): ...
    def sin(self, a): ...
    def cos(self, a): ...
    def sqrt(self, a): ...
    def log(self, a): ...
    def abs(self, a): ...
    def softplus(self, a): ...
    def log_sigmoid(self, a): ...
    def clamp_min(self, a, low: float): ...
    def clip(self, a, low: float, high: float): ...
    def where(self, cond, a, b): ...
    def stop_gradient(self, a): ...

    # --- reductions --------------------------------------------------------------------
    def sum(self, a, axes): ...
    def any(self, a): ...                    # over all elements, a boolean scalar
    def all(self, a): ...
    def cumsum(self, a, axis: int): ...
    def softmax(self, a, axis: int): ...
    def logsumexp(self, a, axis: int): ...
    def log_softmax(self, a, axis: int): ...
    def mean_std(self, x): ...               # per-channel mean and std over (n, h, w)

    # --- linear algebra ----------------------------------------------------------------
    def conv2d(self, x, w, b): ...           # stride 1, zero "same" padding, + bias
    def inv(self, m): ...

    # --- control flow ------------------------------------------------------------------
    def until(self, step: Callable, state: tuple, limit: int) -> tuple:
        """Run ``*state, stop = step(*state)`` at least once and until ``stop`` (a boolean
        scalar array) is true or ``limit`` steps have run; returns the final state, a
        tuple. No gradient flows through the loop."""
        ...


# the op table of each framework, by a backend's ``framework``
FRAMEWORK_OPS = {"torch": "flowbench.adapters.torch.ops", "jax": "flowbench.adapters.jax.ops",
                 "tensorflow": "flowbench.adapters.tfp.ops"}


def for_framework(framework: str) -> "Ops":
    if framework == "numpy":
        return NUMPY_OPS
    import importlib
    return importlib.import_module(FRAMEWORK_OPS[framework]).OPS


class NumpyOps(Ops):
    """The elementwise part of the table, and the reductions, in float64 numpy: the harness
    evaluates what was written once over ``Ops`` (a target's log-density) on its own
    arrays. Flows never run on it."""

    exp, sin, cos, sqrt, log, abs = np.exp, np.sin, np.cos, np.sqrt, np.log, np.abs
    tanh, where = np.tanh, np.where

    def softplus(self, a):
        return np.logaddexp(0.0, a)

    def log_sigmoid(self, a):
        return -np.logaddexp(0.0, -a)

    def sum(self, a, axes):
        return np.sum(a, axis=axes)

    def logsumexp(self, a, axis):
        from scipy.special import logsumexp
        return logsumexp(a, axis)

    def concat(self, parts, axis):
        return np.concatenate(parts, axis)

    def const(self, array):
        return np.asarray(array, np.float64)


NUMPY_OPS = NumpyOps()
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)  # a constant: no numpy call in traced code


def base_log_prob(ops: "Ops", z, base: str):
    """log p(z) per row of the factorised base: standard normal or standard logistic
    (the reference's formulas, over a framework's table)."""
    if base == "normal":
        per = -0.5 * z * z - _HALF_LOG_2PI
    else:
        per = -z - 2.0 * ops.softplus(-z)
    return ops.sum(per, 1)
