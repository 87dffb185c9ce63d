from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import adapters
from benchmarks import cli
from benchmarks.quick import QuickConfig, run_quick
from benchmarks.timing import measure


def test_list(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ["torch", "jax", "tfp", "maf", "glow", "eq39", "quick"]:
        assert word in out
    for name, why in adapters.available().items():
        if why is not None:
            assert why.split(":")[0][:20] in out


def test_quick_run_writes_results(tmp_path, capsys):
    rc = cli.main(["run", "--preset", "quick", "--steps", "30", "--archs", "maf", "nsf",
                   "--backends", "torch", "--out", str(tmp_path)])
    assert rc == 0
    df = pd.read_csv(tmp_path / "quick.csv")
    assert set(df["status"]) == {"ok"}
    nll = df[(df.metric == "test_nll")].set_index("arch")["value"]
    assert set(nll.index) == {"maf", "nsf"} and np.isfinite(nll).all()
    assert np.allclose(df["target_entropy"].dropna(), 3.531024, atol=1e-5)
    times = df[df.metric.str.startswith("time_")]
    assert len(times) == 4 and (times["value"] > 0).all()
    assert {"git_commit", "python", "threads"} <= set(df.columns)
    md = (tmp_path / "quick.md").read_text()
    assert "test NLL" in md and "Reproduce" in md
    assert "maf" in capsys.readouterr().out


def test_failing_cell_is_recorded_and_the_run_goes_on():
    cfg = QuickConfig(steps=5, archs=("maf",), backends=("torch", "nosuch"), n_train=500,
                      n_test=200)
    rows = run_quick(cfg, log=lambda *_: None)
    df = pd.DataFrame(rows)
    bad = df[df.backend == "nosuch"]
    assert list(bad.status) == ["skipped"] and "unknown backend" in bad.error.iloc[0]
    assert (df[df.backend == "torch"].status == "ok").all()


def test_diverging_training_is_a_failed_row(monkeypatch):
    flow_cls = type(adapters.load("torch").build(adapters.FlowSpec(arch="maf")))
    monkeypatch.setattr(flow_cls, "_train_step", lambda self, x: float("nan"))
    rows = run_quick(QuickConfig(steps=3, archs=("maf",), backends=("torch",), n_train=100,
                                 n_test=50), log=lambda *_: None)
    assert rows[-1]["status"] == "failed" and "diverged" in rows[-1]["error"]


def test_bad_arch_is_a_clear_error(capsys):
    assert cli.main(["run", "--archs", "planar", "--steps", "1"]) == 2
    assert "unknown arch 'planar'" in capsys.readouterr().err


def test_measure_blocks_every_call_and_counts():
    calls, blocked = [], []
    stats = measure(lambda: calls.append(1) or len(calls), blocked.append, min_repeats=7,
                    min_time=0.0)
    assert stats["repeats"] == 7 and len(calls) == len(blocked) == 9  # first + warm-up + 7
    assert stats["min"] <= stats["median"] and stats["first"] >= 0


def test_compile_time_table(tmp_path, capsys):
    assert cli.main(["compile-time", "--backends", "torch", "--archs", "maf", "--dims", "2",
                     "3", "--layers", "2", "--batch", "16", "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "compile_time.csv")
    assert len(df) == 2 * 5 and set(df.dim) == {2, 3}
    sample = df[df.op == "sample"].set_index("dim")["passes"]
    assert list(sample.loc[[2, 3]]) == [4, 6]  # layers x dim sequential passes
    assert (df.compile_s >= 0).all() and (df.median_s > 0).all()
    assert "compile_s (dim 2)" in (tmp_path / "compile_time.md").read_text()


def test_passes_and_conventions_tables(tmp_path, capsys):
    assert cli.main(["passes", "--backends", "torch", "nflows", "--archs", "maf", "naf",
                     "--dim", "5", "--layers", "2", "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "passes.csv")
    ok = df[df.status == "ok"].set_index(["backend", "arch", "op"])["passes"]
    assert ok[("torch", "maf", "log_prob")] == 2 and ok[("torch", "maf", "sample")] == 10
    assert ok[("nflows", "maf", "log_prob")] == 2 and ok[("nflows", "maf", "sample")] == 10
    skipped = df[df.status == "skipped"]
    assert list(skipped.backend) == ["nflows"] and "does not offer 'naf'" in skipped.error.iloc[0]
    md = (tmp_path / "passes.md").read_text()
    assert "1 / 5" in md and "Not built" in md
    assert cli.main(["conventions", "--backends", "nflows", "--out", str(tmp_path)]) == 0
    conv = (tmp_path / "conventions.md").read_text()
    assert "## maf" in conv and "softplus(s) + 1e-3" in conv and "nflows: nflows has no" in conv


def test_quick_skips_what_a_peer_does_not_offer():
    rows = run_quick(QuickConfig(steps=3, archs=("naf",), backends=("nflows",), n_train=100,
                                 n_test=50), log=lambda *_: None)
    assert [r["status"] for r in rows] == ["skipped"]
    assert "does not offer 'naf'" in rows[0]["error"]
