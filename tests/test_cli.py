from __future__ import annotations

import numpy as np
import pandas as pd

from flowbench import adapters
from flowbench.benchmarks import cli, results


def test_list(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ["torch", "jax", "tfp", "maf", "glow", "eq39", "quick"]:
        assert word in out
    for why in adapters.available().values():
        if why is not None:
            assert why.split(":")[0][:20] in out


def test_quick_run_writes_results_and_report(tmp_path, capsys):
    """The main job through the matrix runner: trained cells, a peer's declared skip, and
    the report written beside the rows."""
    rc = cli.main(["run", "quick", "--steps", "30", "--archs", "maf", "naf", "--batches",
                   "128", "--backends", "torch", "nflows", "--out", str(tmp_path)])
    assert rc == 0
    df = results.read(tmp_path / "quick")
    cells = df[(df.metric == "status") & df.op.isna()].set_index(["backend", "arch"])
    assert cells.loc[("torch", "maf"), "status"] == "ok"
    assert cells.loc[("torch", "naf"), "status"] == "ok"
    assert cells.loc[("nflows", "maf"), "status"] == "ok"
    assert cells.loc[("nflows", "naf"), "status"] == "skipped"
    assert "does not offer 'naf'" in cells.loc[("nflows", "naf"), "error"]
    nll = df[df.metric == "test_nll"].set_index(["backend", "arch"])["value"]
    assert len(nll) == 3 and np.isfinite(nll).all()
    ent = df[df.metric == "target_entropy"]["value"]
    assert np.allclose(ent, 3.531024, atol=1e-5)
    med = df[(df.metric == "time") & (df.statistic == "median")]
    assert set(med.op) == {"log_prob", "sample"} and (med.value > 0).all()
    passes = df[(df.metric == "passes") & (df.backend == "torch") & (df.arch == "maf")]
    assert dict(zip(passes.op, passes.value)) == {"log_prob": 4, "sample": 8}  # 4 layers
    assert {"git_commit", "run_id", "threads", "backend_version", "timestamp",
            "cpu"} <= set(df)
    report = (tmp_path / "REPORT.md").read_text()
    assert "test NLL" in report and "Reproduce: `flowbench run quick`" in report
    assert "## Conventions" in report and "did not run" in report
    assert "maf" in capsys.readouterr().out


def test_diverging_training_is_a_failed_row(tmp_path, monkeypatch):
    from flowbench.benchmarks import matrix, worker

    flow_cls = type(adapters.load("torch").build(adapters.FlowSpec(arch="maf")))
    monkeypatch.setattr(flow_cls, "_train_step", lambda self, x: float("nan"))
    m = matrix.load("quick", {"backends": ["torch"], "archs": ["maf"], "steps": 3})
    cell = matrix.expand(m, {"torch": {"variants": ["eager"], "reason": None,
                                       "missing": {}}})[0]
    worker.run_cell(cell, str(tmp_path / "rows.jsonl"))
    rows = pd.read_json(tmp_path / "rows.jsonl", lines=True)
    last = rows.iloc[-1]
    assert last.metric == "status" and last.status == "failed"
    assert "diverged at step 1" in last.error
    assert rows.set_index("metric").loc["diverged_step", "value"] == 1


def test_compile_time_table(tmp_path, capsys):
    """jax compiles each op on its first call: that call, not the steady median, holds
    the compile (tens of milliseconds against microseconds of a 2-layer MAF at batch 16)."""
    assert cli.main(["compile-time", "--backends", "jax", "--archs", "maf", "--dims", "2",
                     "3", "--layers", "2", "--batch", "16", "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "compile_time.csv")
    assert len(df) == 2 * 5 and set(df.dim) == {2, 3}
    sample = df[df.op == "sample"].set_index("dim")["passes"]
    assert list(sample.loc[[2, 3]]) == [4, 6]  # layers x dim sequential passes
    assert (df.compile_s > 10 * df.median_s).all(), df[["op", "compile_s", "median_s"]]
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


def test_cpu_name_gives_model_family_and_widest_vector_unit():
    from flowbench.benchmarks.environment import cpu_name

    info = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n"
            "model name\t: AMD EPYC 9B45\nflags\t\t: fpu sse2 avx avx2 avx512f avx512bw\n\n"
            "processor\t: 1\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: other\n")
    assert cpu_name(info) == "AMD EPYC 9B45 (cpu family 26, model 2; avx512f)"
    assert cpu_name(info.replace(" avx512f avx512bw", "")) == (
        "AMD EPYC 9B45 (cpu family 26, model 2; avx2)")
