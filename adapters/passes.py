"""The count of conditioner evaluations ("passes") an op issues, one type for every backend
and peer, matched and image flows alike.

Whatever evaluates a conditioner network calls ``hit()`` once per evaluation: the matched
backends' networks (``conditioner.mlp``, torch's ``Conditioned``, the image flows' coupling
nets), and in the peers a forward hook or a wrapper around the library's network. A flow
zeroes its counter before an op (``reset()``) and reads ``n`` after it.

Counting happens in Python. Eagerly every call is an execution and counts itself. Under a
tracer it runs once per trace, not per execution: a loop body traced once must count as
many times as the loop runs (``loop``), and a call that the framework traces but never runs
counts zero (``skip``). Where a trace must not count at all (torch.compile, TF's traced
peers), the counter is made with ``counts``, a predicate that says whether a hit counts
now; a counter made with ``enabled=False`` counts only inside ``counting()``.
"""

from __future__ import annotations

import collections
import contextlib
from typing import Callable


class PassCounter:
    """Conditioner evaluations since the last ``reset()``, in ``n``.

    Args:
        counts: optional predicate, asked at every hit: the hit counts only when it returns
            True (torch: not while torch.compile traces; TF: only when executing eagerly).
        enabled: False for a counter that counts only inside ``counting()``.
    """

    def __init__(self, counts: Callable[[], bool] | None = None, enabled: bool = True):
        self.n = 0
        self.scale = 1
        self.skip = 0
        self.counts = counts
        self.enabled = enabled

    def hit(self) -> None:
        """One conditioner evaluation."""
        if not self.enabled or (self.counts is not None and not self.counts()):
            return
        if self.skip:
            self.skip -= 1
            return
        self.n += self.scale

    def reset(self) -> None:
        self.n = 0

    @contextlib.contextmanager
    def counting(self):
        """Zero the count and count inside, also for a counter made with enabled=False;
        yields the counter."""
        enabled, self.enabled = self.enabled, True
        self.reset()
        try:
            yield self
        finally:
            self.enabled = enabled

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
            self.reset()
            traces[op] += 1
            out = fn(*args)
            passes[op] = self.n
            return out
        return run
