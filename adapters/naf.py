"""NAF's monotone transformer (the canonical ``mlp`` transform: a deep sigmoidal flow) and
its inverse by bisection, written once for every framework over an ops table
(``adapters/ops.py``; each backend's in ``adapters/{torch,jax,tfp}/ops.py``).

Only the loop that stops on data differs per framework, and the table supplies it
(``ops.until``: a Python loop in torch, ``lax.while_loop`` in jax, ``tf.while_loop`` in
TF). The numpy reference (``reference.py``) keeps a copy of its own on purpose: it is the
oracle the backends are held to.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from . import canonical as C


def dsf(ops, u, a, b, w):
    """Deep sigmoidal flow v = logit(sum softmax(w) sigmoid(alpha u + b)), in log space.

    Args:
        ops: the framework's ops table.
        u: inputs (...).
        a, b, w: pre-activation slopes (alpha = MIN_DSF_SLOPE + softplus(a)), offsets and
            mixture logits, each (..., M).

    Returns:
        (v, log dv/du), each (...).
    """
    alpha = C.MIN_DSF_SLOPE + ops.softplus(a)
    pre = alpha * u[..., None] + b
    logw = ops.log_softmax(w, -1)
    ls_pos, ls_neg = ops.log_sigmoid(pre), ops.log_sigmoid(-pre)
    log_y = ops.logsumexp(logw + ls_pos, -1)
    log_1my = ops.logsumexp(logw + ls_neg, -1)
    logd = ops.logsumexp(logw + ls_pos + ls_neg + ops.log(alpha), -1) - log_y - log_1my
    return log_y - log_1my, logd


def bracket_step(ops, fn, target, lo, hi):
    """One bracket doubling: (lo, hi, whether no element needed to move)."""
    low, high = fn(lo) > target, fn(hi) < target
    return ops.where(low, 2 * lo, lo), ops.where(high, 2 * hi, hi), ~ops.any(low | high)


def halve_step(ops, fn, target, lo, hi):
    """One halving: (lo, hi, whether every bracket is now below tolerance)."""
    mid = 0.5 * (lo + hi)
    below = fn(mid) < target
    lo, hi = ops.where(below, mid, lo), ops.where(below, hi, mid)
    return lo, hi, ops.all(hi - lo <= C.BISECTION_TOL * (1 + ops.abs(mid)))


class Bisection(NamedTuple):
    """The loop bodies of ``bisect``, each (ops, fn, target, lo, hi) -> (lo, hi, stop).
    The torch backend's ``compile`` variant passes compiled ones: the loops themselves stop
    on data, which one torch graph cannot hold (see adapters/torch/__init__.py)."""
    bracket: Callable = bracket_step
    halve: Callable = halve_step


EAGER = Bisection()


def bisect(ops, fn, target, steps: Bisection = EAGER):
    """Solve fn(u) = target for increasing fn, elementwise: bracket doubling from [-1, 1],
    then halving to BISECTION_TOL * (1 + |u|), each at most BISECTION_MAX_ITERS steps."""
    one = ops.ones_like(target)
    lo, hi = ops.until(lambda lo, hi: steps.bracket(ops, fn, target, lo, hi), (-one, one),
                       C.BISECTION_MAX_ITERS)
    lo, hi = ops.until(lambda lo, hi: steps.halve(ops, fn, target, lo, hi), (lo, hi),
                       C.BISECTION_MAX_ITERS)
    return 0.5 * (lo + hi)


def dsf_root(ops, v, a, b, w, steps: Bisection = EAGER):
    """u with dsf(u) = v. The root search sees no autograd history (its inputs stopped:
    compiled loop bodies then meet the same tensors in training and in sampling); the
    gradients are the implicit function's, without changing the value: du/dv = 1/g' and
    du/dtheta = -(dg/dtheta)/g' at the root."""
    sg = ops.stop_gradient
    ad, bd, wd = sg(a), sg(b), sg(w)
    u = bisect(ops, lambda t: dsf(ops, t, ad, bd, wd)[0], sg(v), steps)
    val, logd = dsf(ops, u, a, b, w)
    slope = ops.clamp_min(sg(ops.exp(logd)), 1e-30)
    return u + ((v - sg(v)) - (val - sg(val))) / slope


def dsf_inverse(ops, v, a, b, w, steps: Bisection = EAGER):
    """(u, log|du/dv|) for dsf(u) = v."""
    u = dsf_root(ops, v, a, b, w, steps)
    return u, -dsf(ops, u, a, b, w)[1]
