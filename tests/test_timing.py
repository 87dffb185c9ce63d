"""The timer, against a fake clock: what is inside the timed region, that the first call
stays out of the steady-state statistics, and the stopping rule, all as exact numbers.

A clock that moves only when the fake op or the fake ``block`` runs makes every figure of
``measure`` computable by hand, so a timer that leaves the call out of the timed region,
folds the compile call into the median, or stops early shows as a wrong number, not as
noise. One test on the real clock checks that the real clock is the one used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from flowbench.benchmarks import timing
from flowbench.benchmarks.timing import measure, op_calls, timer_overhead


class FakeClock:
    """perf_counter that advances only by the durations the fake op and block declare."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def op(self, durations, first: float | None = None):
        """A zero-argument op taking ``first`` on its first call, then cycling through
        ``durations``; it returns its call number so block can tell calls apart."""
        calls = []

        def fn():
            k = len(calls)
            calls.append(k)
            if k == 0 and first is not None:
                self.now += first
            else:
                i = k - (first is not None)
                self.now += durations[i % len(durations)]
            return k
        fn.calls = calls
        return fn

    def block(self, cost: float):
        blocked = []

        def fn(result):
            blocked.append(result)
            self.now += cost
        fn.blocked = blocked
        return fn


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", c)
    return c


def test_the_call_and_its_block_are_both_inside_the_timed_region(clock):
    """10 ms of op and 2 ms of waiting for it: every repeat is 12 ms. Timing only the
    block would give 2 ms, timing only the call 10 ms."""
    fn, block = clock.op([0.010]), clock.block(0.002)
    t = measure(fn, block, warmup=1, min_repeats=5, min_time=0.0)
    assert t["median"] == pytest.approx(0.012, abs=1e-12)
    assert t["min"] == pytest.approx(0.012, abs=1e-12)
    assert t["iqr"] == pytest.approx(0.0, abs=1e-12)


def test_the_first_call_is_reported_apart_and_never_in_the_statistics(clock):
    """A 1 s first call (compile) then 10 ms calls: first = 1 s + its block; median, IQR
    and min see only the 10 ms calls, with 3 repeats or with 50."""
    for repeats in (3, 4, 50):
        fn, block = clock.op([0.010], first=1.0), clock.block(0.001)
        t = measure(fn, block, warmup=0, min_repeats=repeats, min_time=0.0)
        assert t["first"] == pytest.approx(1.001, abs=1e-12)
        assert t["median"] == pytest.approx(0.011, abs=1e-12)
        assert t["iqr"] == pytest.approx(0.0, abs=1e-12)
        assert t["min"] == pytest.approx(0.011, abs=1e-12)
        assert t["repeats"] == repeats and len(fn.calls) == repeats + 1


def test_warmup_calls_are_neither_first_nor_repeats(clock):
    """The warm-up call is slow (the second call of some libraries still builds caches):
    it belongs to no statistic."""
    fn, block = clock.op([0.5, 0.010, 0.010, 0.010, 0.010, 0.010], first=2.0), clock.block(0)
    t = measure(fn, block, warmup=1, min_repeats=5, min_time=0.0)
    assert t["first"] == pytest.approx(2.0)
    assert t["median"] == pytest.approx(0.010) and t["iqr"] == pytest.approx(0.0, abs=1e-12)
    assert len(fn.calls) == len(block.blocked) == 1 + 1 + 5
    assert block.blocked == list(range(7))  # every call's own result is blocked


def test_median_iqr_min_of_known_durations(clock):
    durations = [0.004, 0.001, 0.003, 0.002, 0.010, 0.005, 0.007, 0.006]
    fn, block = clock.op(durations), clock.block(0.0)
    t = measure(fn, block, warmup=0, min_repeats=8, min_time=0.0)
    # the first call takes durations[0] and is not a repeat; repeats cycle from index 1
    reps = [durations[(k + 1) % 8] for k in range(8)]
    q1, med, q3 = np.percentile(reps, [25, 50, 75])
    assert t["first"] == pytest.approx(0.004)
    assert t["median"] == pytest.approx(med, abs=1e-12)
    assert t["iqr"] == pytest.approx(q3 - q1, abs=1e-12)
    assert t["min"] == pytest.approx(0.001, abs=1e-12) and t["repeats"] == 8


def test_repeats_run_until_both_the_count_and_the_time_are_reached(clock):
    fn, block = clock.op([0.012]), clock.block(0.0)
    t = measure(fn, block, warmup=0, min_repeats=3, min_time=0.1)
    assert t["repeats"] == 9  # 8 x 12 ms = 96 ms < 100 ms, 9 x 12 ms = 108 ms
    fn = clock.op([0.050])
    t = measure(fn, block, warmup=0, min_repeats=7, min_time=0.1)
    assert t["repeats"] == 7  # the time was reached after 2, the count rules


def test_slow_ops_stop_at_max_time_after_three_repeats(clock):
    fn, block = clock.op([0.020]), clock.block(0.0)
    t = measure(fn, block, warmup=0, min_repeats=50, min_time=0.0, max_time=0.05)
    assert t["repeats"] == 3
    fn = clock.op([0.020])
    t = measure(fn, block, warmup=0, min_repeats=50, min_time=0.0, max_time=0.099)
    assert t["repeats"] == 5  # 4 x 20 ms < 99 ms <= 5 x 20 ms
    fn = clock.op([0.020])
    assert measure(fn, block, warmup=0, min_repeats=50, min_time=0.0,
                   max_repeats=4)["repeats"] == 4


def test_real_clock_times_a_real_sleep():
    """The same rules on the real perf_counter: a 20 ms op is never timed at ~0."""
    t = measure(lambda: time.sleep(0.02), lambda _: None, warmup=0, min_repeats=3,
                min_time=0.0)
    assert 0.019 <= t["min"] <= t["median"] < 0.5


def test_timer_overhead_is_the_loop_cost_of_a_no_op():
    over = timer_overhead(calls=2000)
    assert 0 < over < 5e-5  # two clock reads and two no-op calls, microseconds at most


class _FakeBackend:
    def __init__(self, caches_inputs):
        self.caches_inputs = caches_inputs
        self.copies = 0

    def fresh(self, a):
        self.copies += 1
        return a.copy()


class _FakeFlow:
    def __init__(self, caches_inputs):
        self.backend = _FakeBackend(caches_inputs)
        self.seen = []

    def _log_prob(self, x):
        self.seen.append(("log_prob", x))

    def _inverse(self, x):
        self.seen.append(("inverse", x))

    def _forward(self, z):
        self.seen.append(("forward", z))

    def _sample(self, n, seed):
        self.seen.append(("sample", n, seed))

    def _train_step(self, x):
        self.seen.append(("train_step", x))


@pytest.mark.parametrize("caches", [False, True])
def test_op_calls_hand_the_unchecked_ops_the_prepared_input(caches):
    """Each op gets the native input itself (or a fresh copy per call where the library
    caches on the input), and sample draws as many rows as the batch, with the seed."""
    flow, x = _FakeFlow(caches), np.zeros((7, 2), np.float32)
    calls = op_calls(flow, x, seed=3)
    for op in ("log_prob", "inverse", "forward", "train_step"):
        calls[op]()
        name, arg = flow.seen[-1]
        assert name == op and arg.shape == x.shape and ((arg is x) != caches)
    calls["sample"]()
    assert flow.seen[-1] == ("sample", 7, 3)
    op_calls(flow, x)["sample"]()
    assert flow.seen[-1] == ("sample", 7, 0)  # the default seed
    assert flow.backend.copies == (4 if caches else 0)


def test_the_defaults_are_one_warmup_five_repeats_and_a_fifth_of_a_second(clock):
    """What the README promises when a caller sets nothing."""
    fn, block = clock.op([0.1]), clock.block(0.0)
    t = measure(fn, block)
    assert t["repeats"] == 5 and len(fn.calls) == 1 + 1 + 5  # first, warm-up, repeats
    fn = clock.op([0.01])
    assert measure(fn, block)["repeats"] == 20  # 0.2 s of 10 ms calls


def test_reaching_min_time_exactly_is_enough(clock):
    """0.25 s calls and 0.5 s asked for: two calls reach it (the clock's sums are exact in
    binary), a third would be one too many; the same for max_time with three repeats."""
    block = clock.block(0.0)
    assert measure(clock.op([0.25]), block, warmup=0, min_repeats=1,
                   min_time=0.5)["repeats"] == 2
    assert measure(clock.op([0.25]), block, warmup=0, min_repeats=50, min_time=0.0,
                   max_time=0.75)["repeats"] == 3


def test_max_repeats_bounds_an_op_that_takes_no_time(clock):
    """Nothing ever moves this clock: only the repeat cap ends the loop, at 10,000."""
    assert measure(clock.op([0.0]), clock.block(0.0), min_time=0.2)["repeats"] == 10_000


def test_timer_overhead_asks_measure_for_exactly_its_calls(monkeypatch):
    seen = {}

    def spy(fn, block, **kw):
        seen.update(kw, fn=fn(), block=block(None))
        return {"median": 1.5e-7}
    monkeypatch.setattr(timing, "measure", spy)
    assert timer_overhead(calls=123) == 1.5e-7
    assert seen == {"min_repeats": 123, "min_time": 0.0, "fn": None, "block": None}
    timer_overhead()
    assert seen["min_repeats"] == 20_000


_SCRATCH = """
import ctypes, ctypes.util, json, resource, sys
from flowbench.benchmarks import environment
environment.set_threads(1)
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
n = 40 * 2**20  # above glibc's largest mmap threshold (32 MiB)
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(ctypes.c_size_t(n))
    ctypes.memset(p, 1, n)
    libc.free(ctypes.c_void_p(p))
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"malloc": environment.describe()["malloc"], "faults": faults}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator and fault counts")
@pytest.mark.parametrize("policy", ["heap", "default"])
def test_a_cells_scratch_above_32_mib_is_not_page_faulted_back_in_on_every_call(policy):
    """glibc maps allocations above 32 MiB afresh each time; a measuring process keeps them
    on the heap, so a repeated call finds its scratch already paged in (the opt-out keeps
    glibc's policy, records it, and pays the faults, which shows this test can see them)."""
    env = dict(os.environ, FLOWBENCH_MALLOC=policy)
    out = subprocess.run([sys.executable, "-c", _SCRATCH], capture_output=True, text=True,
                         env=env, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["malloc"] == policy
    pages = 40 * 2**20 // 4096
    if policy == "heap":
        assert max(got["faults"][1:]) < pages // 100
    else:
        assert min(got["faults"][1:]) > pages // 2
