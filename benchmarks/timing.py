"""Timing of one op: first call apart, then repeats until a minimum time, each blocked."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np


def measure(fn: Callable[[], Any], block: Callable[[Any], Any], *, warmup: int = 1,
            min_repeats: int = 5, min_time: float = 0.2, max_repeats: int = 10_000,
            max_time: float = float("inf")) -> dict:
    """Seconds per call of ``fn``: first call (compile/caches), median, IQR, min, repeats.

    Every call ends with ``block`` on its result, so asynchronous frameworks are timed to
    completion, not to dispatch. Repeats run until both ``min_repeats`` and ``min_time``
    are reached, or, for slow ops, until ``max_time`` has passed with at least 3 repeats.
    The timed region is two perf_counter reads around the call: the loop's own cost per
    call is what ``timer_overhead`` measures.
    """
    t0 = time.perf_counter()
    block(fn())
    first = time.perf_counter() - t0
    for _ in range(warmup):
        block(fn())
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_repeats:
        elapsed = time.perf_counter() - start
        if (len(times) >= min_repeats and elapsed >= min_time) or (
                len(times) >= 3 and elapsed >= max_time):
            break
        t0 = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - t0)
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return {"first": first, "median": float(med), "iqr": float(q3 - q1),
            "min": float(np.min(times)), "repeats": len(times)}


def timer_overhead(calls: int = 20_000) -> float:
    """Median seconds per call that ``measure`` adds around a no-op (its loop, timer reads
    and a no-op block): the floor under every time it reports."""
    return measure(lambda: None, lambda _: None, min_repeats=calls, min_time=0.0)["median"]


def op_calls(flow, x, seed: int = 0, target=None) -> dict:
    """op -> a zero-argument call of the flow's unchecked native op on x, a native array
    already on the flow's device (sample draws len(x) rows), so that the timed region holds
    no input check and no host transfer. Backends whose library caches results keyed on
    the input tensor get a fresh device copy of x on every call (one small copy inside the
    timed region) instead of timing a cache lookup. The reverse-KL step takes x as its
    base draws and ``target`` (a ``datasets.targets.Target``; the standard normal of the
    flow's dimension by default) as its density."""
    from flowbench.adapters.base import check_target
    from flowbench.datasets import targets

    n = int(x.shape[0])
    fresh = flow.backend.fresh if flow.backend.caches_inputs else (lambda a: a)
    prepared = []

    def reverse_kl():
        if not prepared:  # on the first (untimed) call: the target, checked once
            t = target or targets.load(f"normal{flow.spec.dim}")
            check_target(t, flow.spec)
            prepared.append(t)
        return flow._train_step_reverse_kl(prepared[0], fresh(x))
    return {"log_prob": lambda: flow._log_prob(fresh(x)),
            "inverse": lambda: flow._inverse(fresh(x)),
            "forward": lambda: flow._forward(fresh(x)),
            "sample": lambda: flow._sample(n, seed),
            "sample_and_log_prob": lambda: flow._sample_and_log_prob(n, seed),
            "train_step": lambda: flow._train_step(fresh(x)),
            "train_step_reverse_kl": reverse_kl}
