"""Timing of one op: first call apart, then repeats until a minimum time, each blocked."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np


def measure(fn: Callable[[], Any], block: Callable[[Any], Any], *, warmup: int = 1,
            min_repeats: int = 5, min_time: float = 0.2, max_repeats: int = 10_000) -> dict:
    """Seconds per call of ``fn``: first call (compile/caches), median, IQR, min, repeats.

    Every call ends with ``block`` on its result, so asynchronous frameworks are timed to
    completion, not to dispatch.
    """
    t0 = time.perf_counter()
    block(fn())
    first = time.perf_counter() - t0
    for _ in range(warmup):
        block(fn())
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_repeats and (len(times) < min_repeats
                                        or time.perf_counter() - start < min_time):
        t0 = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - t0)
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return {"first": first, "median": float(med), "iqr": float(q3 - q1),
            "min": float(np.min(times)), "repeats": len(times)}


def op_calls(flow, x, seed: int = 0) -> dict:
    """op -> a zero-argument call of the flow's unchecked native op on x, a native array
    already on the flow's device (sample draws len(x) rows), so that the timed region holds
    no input check and no host transfer. Backends whose library caches results keyed on
    the input tensor get a fresh device copy of x on every call (one small copy inside the
    timed region) instead of timing a cache lookup."""
    n = int(x.shape[0])
    fresh = flow.backend.fresh if flow.backend.caches_inputs else (lambda a: a)
    return {"log_prob": lambda: flow._log_prob(fresh(x)),
            "inverse": lambda: flow._inverse(fresh(x)),
            "forward": lambda: flow._forward(fresh(x)),
            "sample": lambda: flow._sample(n, seed),
            "train_step": lambda: flow._train_step(fresh(x))}
