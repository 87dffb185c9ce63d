"""The roofline: each framework's own float32 matmul rate and the memory bandwidth are
measured beside numpy's, efficiency is against the best of them, and a share above 100%
is printed as the accounting error it is."""

from __future__ import annotations

import pandas as pd
import pytest

from flowbench.benchmarks import flops, report

from .conftest import load_or_skip


@pytest.mark.parametrize("name", ["torch", "jax", "tfp"])
def test_each_framework_measures_its_own_matmul_rate(name):
    backend = load_or_skip(name)
    rate = backend.matmul_gflops(n=256, min_time=0.05)
    # 2 * 256^3 flops in well under a second on any CPU, and not faster than light
    assert 0.05 < rate < 1e5


def test_memory_bandwidth_is_a_plausible_copy_rate():
    assert 0.1 < flops.memory_bandwidth(mbytes=16, min_time=0.05) < 1e4


def _rows():
    cal = dict(kind="calibration", run_id="r", status="ok", cell="cal", statistic="max")
    rows = [{**cal, "metric": "gemm_peak", "source": s, "value": v}
            for s, v in (("numpy", 80.0), ("torch", 100.0), ("jax", 95.0))]
    rows.append({**cal, "metric": "mem_bandwidth", "source": "numpy copy", "value": 12.0})
    for backend, gf in (("jax", 40.0), ("tfp-jax", 150.0)):
        rows.append(dict(kind="time", run_id="r", status="ok", cell=backend, backend=backend,
                         variant="", arch="maf", dim=2, batch=1024, op="log_prob",
                         metric="gflops", statistic="median", value=gf))
        rows.append({**rows[-1], "metric": "time", "value": 1e-3})
    df = pd.DataFrame(rows)
    return df.assign(column=df["backend"])


def test_efficiency_is_against_the_best_peak_and_above_it_is_an_error():
    df = _rows()
    assert report.best_peak(df) == (100.0, "torch")
    t = report.efficiency_table(df, "log_prob", 2, 1024, 100.0)
    assert t.loc["maf", "jax"] == "40 (40%)"
    assert t.loc["maf", "tfp-jax"] == "150 (150%) ABOVE PEAK: accounting error"
    roof = report.roofline_table(df[df.kind == "calibration"])
    assert roof.loc["r"].to_dict() == {"jax GFLOP/s": 95.0, "memory GB/s": 12.0,
                                       "numpy GFLOP/s": 80.0, "torch GFLOP/s": 100.0}
    text = "\n".join(report.timing_section(df[df.kind == "time"], "m", (100.0, "torch")))
    assert "100 GFLOP/s (torch's" in text and "Those numbers are wrong" in text


def test_tensorflows_peak_is_the_better_of_xla_and_its_own_kernel(monkeypatch):
    """tfp's function and eager variants run TF's own matmul, faster than XLA's on some
    chips: a peak from XLA alone put those cells at 100% and could put them above."""
    load_or_skip("tfp")
    import tensorflow as tf

    from flowbench.adapters.native import tf as native_tf

    seen = []

    def fake_rate(fn, flop, min_time):
        fn()
        seen.append(flop)
        return (120.0, 150.0)[len(seen) - 1]  # XLA's first, then TF's own kernel
    monkeypatch.setattr(native_tf, "best_rate", fake_rate)
    jit_flags = []
    real = tf.function

    def spy(f, **kw):
        jit_flags.append(bool(kw.get("jit_compile")))
        return real(f, **kw)
    monkeypatch.setattr(native_tf.tf, "function", spy)
    backend = load_or_skip("tfp")
    assert backend.matmul_gflops(n=64, min_time=0.01) == 150.0
    assert sorted(jit_flags) == [False, True] and seen == [2 * 64 ** 3] * 2
