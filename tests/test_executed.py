"""Executed work: the FLOPs an op runs by the framework's own counter, beside the semantic
pass count. XLA's optimized HLO is summed with loops multiplied by the trip count XLA
proved; torch's FlopCounterMode is checked against the analytic count; the jitted TFP MAF
runs one conditioner evaluation per layer where its eager code calls two; rows and the
report carry both counts, and GFLOP/s uses the executed one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flowbench import adapters
from flowbench.adapters.work import Work, hlo_flops
from flowbench.benchmarks import report
from flowbench.benchmarks.flops import op_flops
from flowbench.benchmarks.timing import op_calls

from .conftest import load_or_skip

DIM, LAYERS, BATCH = 8, 4, 16
MAF = adapters.FlowSpec(arch="maf", dim=DIM, layers=LAYERS, hidden=(64, 64))


def _jax():
    return pytest.importorskip("jax")


# -- the HLO counter on programs whose work is known by hand ------------------------------

def test_a_loop_body_counts_once_per_proved_trip():
    jax = _jax()
    jnp = jax.numpy
    w, x = jnp.ones((64, 32)), jnp.ones((16, 64))

    def f(w, x):  # 7 trips of a (16,64)@(64,32) matmul and back
        return jax.lax.fori_loop(0, 7, lambda i, h: jnp.tanh(h @ w) @ w.T, x)

    work = hlo_flops(jax.jit(f).lower(w, x).compile().as_text())
    assert work == Work(7 * 2 * (2 * 16 * 64 * 32), "xla-hlo", "")


def test_batched_dot_and_convolution_are_counted():
    jax = _jax()
    jnp = jax.numpy
    a, b = jnp.ones((3, 5, 7)), jnp.ones((3, 7, 11))
    img, kernel = jnp.ones((2, 4, 9, 9)), jnp.ones((6, 4, 3, 3))  # NCHW, OIHW

    def f(a, b, img, kernel):
        conv = jax.lax.conv(img, kernel, (1, 1), "SAME")  # (2, 6, 9, 9)
        return jnp.einsum("bij,bjk->bik", a, b).sum() + conv.sum()

    work = hlo_flops(jax.jit(f).lower(a, b, img, kernel).compile().as_text())
    assert work.flops == 2 * 3 * 5 * 11 * 7 + 2 * (2 * 6 * 9 * 9) * (4 * 3 * 3)


def test_an_unproved_trip_count_is_counted_once_and_said():
    jax = _jax()
    jnp = jax.numpy
    w, x = jnp.ones((8, 8)), jnp.ones((4, 8))

    def f(w, x):  # runs until the data says stop: XLA cannot prove a trip count
        return jax.lax.while_loop(lambda h: h.sum() < 1e6, lambda h: h @ w + 1.0, x)

    work = hlo_flops(jax.jit(f).lower(w, x).compile().as_text())
    assert work.flops == 2 * 4 * 8 * 8
    assert "without a trip count" in work.note


def test_a_conditional_counts_its_costliest_branch():
    jax = _jax()
    jnp = jax.numpy
    w, x = jnp.ones((32, 32)), jnp.ones((4, 32))

    def f(p, w, x):
        return jax.lax.cond(p, lambda h: (h @ w) @ w, lambda h: h + 1.0, x)

    work = hlo_flops(jax.jit(f).lower(True, w, x).compile().as_text())
    assert work.flops == 2 * (2 * 4 * 32 * 32)


def test_text_without_an_entry_computation_is_an_error():
    with pytest.raises(ValueError, match="ENTRY"):
        hlo_flops("HloModule m\n")


# -- each framework's counter on a MAF ----------------------------------------------------

def _counts(name: str, variant: str | None = None):
    """{op: (semantic passes, executed passes' worth, Work)} for the MAF's timed calls."""
    backend = load_or_skip(name)
    flow = backend.build(MAF, seed=0, variant=variant)
    x = np.random.default_rng(0).standard_normal((BATCH, DIM)).astype(np.float32)
    calls = op_calls(flow, backend.to_native(x, flow.device), seed=1)
    out = {}
    for op in ("log_prob", "sample"):
        calls[op]()
        passes = flow.passes
        work = flow.executed(calls[op], op_flops(MAF, op, passes, BATCH))
        out[op] = (passes, work.flops / op_flops(MAF, op, 1, BATCH), work)
    return out


@pytest.mark.parametrize("name,variant", [("tfp-jax", None), ("tfp", "xla"),
                                          ("tfp", "function")])
def test_jitted_tfp_maf_runs_one_evaluation_per_layer_where_eager_calls_two(name, variant):
    counts = _counts(name, variant)
    passes, executed, work = counts["log_prob"]
    assert passes == 2 * LAYERS  # the library's code: inverse, then the log-det again
    assert executed == pytest.approx(LAYERS)  # the compiled program: the copy is gone
    assert work.counter in ("xla-hlo", "tf-grappler")
    # sampling is dim sequential evaluations per layer, and every one of them runs
    passes, executed, _ = counts["sample"]
    assert passes == executed == DIM * LAYERS


def test_eager_tfp_executes_what_it_calls():
    counts = _counts("tfp", "eager")
    assert counts["log_prob"][:2] == (2 * LAYERS, 2 * LAYERS)
    assert counts["log_prob"][2].counter == "eager-count"


@pytest.mark.parametrize("name,variant", [("torch", "eager"), ("jax", None),
                                          ("torch", "compile")])
def test_counter_equals_the_analytic_count_on_a_maf(name, variant):
    counts = _counts(name, variant)
    for op, passes in (("log_prob", LAYERS), ("sample", DIM * LAYERS)):
        semantic, _, work = counts[op]
        assert semantic == passes
        assert work.flops == op_flops(MAF, op, passes, BATCH)  # exactly: same matmuls
    if variant == "compile":
        assert "eager module" in counts["log_prob"][2].note


# -- rows and report ----------------------------------------------------------------------

class _FakeFlow:
    spec, passes = MAF, 2 * LAYERS

    def __init__(self, executed):
        self._executed = executed

    def executed(self, run, analytic):
        return self._executed(run, analytic)


def test_a_failing_or_missing_counter_falls_back_and_says_why():
    from flowbench.benchmarks.worker import executed_work

    def boom(run, analytic):
        raise RuntimeError("no HLO today")

    failed = executed_work(_FakeFlow(boom), None, 1.0)
    assert failed.counter == "none" and "no HLO today" in failed.note
    missing = executed_work(_FakeFlow(lambda run, analytic: None), None, 1.0)
    assert missing.counter == "none" and "no framework counter" in missing.note


def test_worker_rows_rate_the_executed_work(tmp_path):
    from flowbench.benchmarks.cell import Cell
    from flowbench.benchmarks.worker import Rows, time_ops

    backend = load_or_skip("tfp-jax")
    flow = backend.build(MAF, seed=0)
    cell = Cell(kind="time", backend="tfp-jax", variant="jit", arch="maf", device="cpu",
                seed=0, ops=("log_prob",), batches=(BATCH,), threads=1, layers=LAYERS,
                hidden=(64, 64), bins=8, tail_bound=3.0, min_time=0.01, min_repeats=3,
                max_time=1.0, dim=DIM)
    path = tmp_path / "rows.jsonl"
    time_ops(flow, backend, Rows(str(path), {}), cell)
    rows = pd.read_json(path, lines=True).set_index("metric")
    median = rows[rows["statistic"] == "median"].loc["time", "value"]
    executed = rows.loc["executed_flops"]
    assert rows.loc["passes", "value"] == 2 * LAYERS
    assert executed["value"] == op_flops(MAF, "log_prob", LAYERS, BATCH)
    assert rows.loc["analytic_flops", "value"] == op_flops(MAF, "log_prob", 2 * LAYERS, BATCH)
    assert rows.loc["executed_passes", "value"] == pytest.approx(LAYERS)
    assert rows.loc["gflops", "value"] == pytest.approx(executed["value"] / median / 1e9)
    assert rows.loc["gflops", "counter"] == executed["counter"] == "xla-hlo"


def test_the_passes_table_shows_what_ran_where_it_differs(tmp_path):
    base = dict(kind="time", run_id="r", status="ok", arch="maf", dim=DIM, layers=LAYERS,
                statistic="value", batch=BATCH, variant="", device="cpu")
    rows = []
    for backend, lp, ran in (("tfp-jax", 8, 4), ("torch", 4, 4.02)):
        for op, semantic, executed in (("log_prob", lp, ran), ("sample", 32, 32)):
            rows += [{**base, "backend": backend, "cell": backend, "op": op,
                      "metric": "passes", "value": semantic},
                     {**base, "backend": backend, "cell": backend, "op": op,
                      "metric": "executed_passes", "value": executed}]
    pd.DataFrame(rows).to_csv(tmp_path / "standard.csv", index=False)
    t = report.passes_table(report.load_results(tmp_path))
    assert t.loc["maf", "tfp-jax"] == "2 / 8 (ran 1 / 8)"
    assert t.loc["maf", "torch"] == "1 / 8"  # within the tolerance: one count
