"""One pass-counter type: ``adapters.passes.PassCounter`` on its own (loops, skipped
traces, a predicate, counting only inside ``counting()``), and as the counter every
backend's and peer's flow exposes, matched and image flows alike."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from flowbench.adapters.image import ImageSpec
from flowbench.adapters.passes import PassCounter

from .conftest import IMPLEMENTED, PEERS, load_or_skip, make_spec


def test_hits_loops_and_skipped_traces():
    c = PassCounter()
    c.hit()
    with c.loop(5):          # a loop body traced once, run 5 times
        c.hit()
        with c.loop(3, skip=1):  # nested; its first call is traced but never runs
            c.hit()
            c.hit()
    c.hit()
    assert c.n == 1 + 5 + 15 + 1
    c.reset()
    assert c.n == 0


def test_a_predicate_and_counting_only_inside():
    now = [False]
    c = PassCounter(counts=lambda: now[0])
    c.hit()
    now[0] = True
    c.hit()
    assert c.n == 1
    off = PassCounter(enabled=False)
    off.hit()
    with off.counting() as same:
        off.hit()
        off.hit()
    off.hit()
    assert same is off and off.n == 2


def test_counted_records_passes_and_traces():
    c, passes, traces = PassCounter(), {}, collections.Counter()

    def op(k):
        for _ in range(k):
            c.hit()
        return k

    run = c.counted("log_prob", op, passes, traces)
    assert run(3) == 3 and passes == {"log_prob": 3} and traces["log_prob"] == 1
    run(2)
    assert passes["log_prob"] == 2 and traces["log_prob"] == 2


@pytest.mark.parametrize("name", IMPLEMENTED + PEERS)
def test_every_flow_counts_with_the_one_type(name):
    backend = load_or_skip(name)
    flow = backend.build(make_spec("maf", 2), seed=0)  # every peer offers MAF
    x = np.random.default_rng(0).standard_normal((4, 2)).astype(np.float32)
    flow.log_prob(x)
    assert type(flow.counter) is PassCounter
    assert flow.passes > 0


@pytest.mark.parametrize("name", IMPLEMENTED)
def test_image_flows_count_with_the_one_type(name):
    backend = load_or_skip(name)
    spec = ImageSpec(arch="realnvp", shape=(4, 4, 2), levels=2, steps=2, hidden=8)
    flow = backend.build(spec, seed=0)
    flow.log_prob(np.zeros((2, spec.dim), np.float32))
    assert type(flow.counter) is PassCounter
    assert flow.passes > 0
