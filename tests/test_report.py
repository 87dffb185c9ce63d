"""``flowbench report`` on hand-made tidy rows: every number checked against one worked
out by hand, and every table keyed on every spec field and device that varies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from flowbench.benchmarks import metrics, report
from flowbench.benchmarks.report import quality, tables

# transform, conditioner, direction of the presets used here (adapters/spec.py)
SPECS = {"maf": ("affine", "autoregressive", "density"),
         "nsf": ("spline", "coupling", "density"),
         "iaf": ("affine", "autoregressive", "sampling")}


def row(metric, value, *, backend="torch", variant="eager", arch="maf", op="log_prob",
        statistic="value", dim=2, batch=256, layers=5, hidden="128x128", bins=8,
        device="cpu", seed=0, kind="time", dataset="", status="ok", error="",
        run_id="r1", machine="box", passes=5, repeats=10, **more):
    """One row as benchmarks/worker.py writes it (and the runner stamps it)."""
    transform, conditioner, direction = SPECS[arch]
    cell = f"{kind}-{backend}-{variant}-{arch}-{dim}-{layers}-{hidden}-{bins}-{device}-{seed}"
    return dict(run_id=run_id, timestamp="2025-01-01T00:00:00", git_commit="abc1234",
                machine=machine, device=device, backend=backend, backend_version="1.0",
                variant=variant, kind=kind, arch=arch, transform=transform,
                conditioner=conditioner, direction=direction, dim=dim, layers=layers,
                hidden=hidden, bins=bins, dataset=dataset, batch=batch, op=op,
                metric=metric, value=value, unit="s", statistic=statistic,
                passes=passes, repeats=repeats, threads=2, seed=seed, status=status,
                error=error, cell=cell,
                **more)


def timed(median, iqr, **spec):
    """The worker's time rows of one op: median, IQR and min (min set apart from both)."""
    return [row("time", median, statistic="median", **spec),
            row("time", iqr, statistic="iqr", **spec),
            row("time", median / 3, statistic="min", **spec)]


def load(tmp_path, rows, name="standard.csv") -> pd.DataFrame:
    """Through a CSV file and ``load_results``, as ``flowbench report`` reads them."""
    pd.DataFrame(rows).to_csv(tmp_path / name, index=False)
    return report.load_results(tmp_path)


def md_table(text: str, after: str) -> list[dict]:
    """The first pipe table after the line ``after``, as dicts of cell text."""
    lines = text.splitlines()
    i = lines.index(after)
    while not lines[i].startswith("|"):
        i += 1
    block = []
    while i < len(lines) and lines[i].startswith("|"):
        block.append(lines[i])
        i += 1

    def cells(line):
        return [c.strip() for c in line.strip().strip("|").split("|")]
    head = cells(block[0])
    return [dict(zip(head, cells(line))) for line in block[2:]]


def table(t: pd.DataFrame) -> dict:
    return t.fillna("").to_dict(orient="index")


# -- loading ----------------------------------------------------------------------------


def test_load_results_names_matrix_and_columns(tmp_path):
    rows = (timed(2e-3, 1e-4, variant="eager") + timed(1e-3, 1e-4, variant="compile")
            + timed(1e-3, 1e-4, backend="jax", variant="jit")
            + timed(1e-3, 1e-4, backend="tfp", variant="xla"))
    pd.DataFrame(rows).to_csv(tmp_path / "standard.shard-1-of-4.csv", index=False)
    pd.DataFrame({"backend": ["torch"], "passes": [5]}).to_csv(tmp_path / "passes.csv",
                                                               index=False)
    df = report.load_results(tmp_path)
    assert len(df) == len(rows)  # passes.csv is not tidy rows: left out
    assert set(df["matrix"]) == {"standard"}
    assert set(df["file"]) == {"standard.shard-1-of-4.csv"}
    assert set(zip(df["backend"], df["variant"], df["column"])) == {
        ("torch", "eager", "torch"), ("torch", "compile", "torch/compile"),
        ("jax", "jit", "jax"), ("tfp", "xla", "tfp/xla")}


# -- time, single-metric and passes tables -----------------------------------------------


def _time_rows():
    return (timed(2.0e-3, 1.0e-4) + timed(1.5e-3, 3.0e-4, variant="compile")
            + timed(1.0e-3, 5.0e-5, backend="jax", variant="jit")
            + timed(4.0e-3, 2.0e-4, backend="zuko")
            + timed(10e-3, 1e-3, arch="nsf") + timed(5e-3, 2e-3, arch="nsf", backend="jax")
            # other ops, dims and batches: not in the table
            + timed(9e-3, 1e-3, op="sample") + timed(7e-3, 1e-3, dim=16)
            + timed(0.1e-3, 1e-3, batch=4096)
            + [row("status", float("nan")), row("status", float("nan"), op="log_prob",
                                                status="failed", error="boom"),
               # cells that did not run are no spec or device of the table
               row("status", float("nan"), op="", device="gpu", layers=10,
                   status="skipped", error="DeviceError: no GPU")])


def test_time_table_median_iqr_and_ratio_to_the_rows_fastest(tmp_path):
    df = load(tmp_path, _time_rows())
    t = report.time_table(df, "log_prob", 2, 256)
    # ms = median * 1e3, ±IQR in ms, xratio = median / the smallest median of the row
    assert table(t) == {
        "maf": {"jax": "1 ±0.05 (x1)", "torch": "2 ±0.1 (x2)",
                "torch/compile": "1.5 ±0.3 (x1.5)", "zuko": "4 ±0.2 (x4)"},
        "nsf": {"jax": "5 ±2 (x1)", "torch": "10 ±1 (x2)", "torch/compile": "",
                "zuko": ""}}
    assert report.time_table(df, "log_prob", 2, 999).empty


def test_single_table_scales_formats_and_picks_the_statistic(tmp_path):
    rows = _time_rows() + [
        row("compile", 0.25), row("compile", 1.5, backend="jax", variant="jit"),
        row("compile", 3.0, op="sample"),
        row("gflops", 12.345, statistic="median"),
        row("gflops", 2.0, statistic="median", arch="nsf", backend="jax", variant="jit")]
    df = load(tmp_path, rows)
    assert table(report.single_table(df, "compile", "log_prob", 2, 256)) == {
        "maf": {"jax": "1.5", "torch": "0.25"}}
    assert table(report.single_table(df, "gflops", "log_prob", 2, 256, 1.0, "{:.3g}",
                                     "median")) == {
        "maf": {"jax": "", "torch": "12.3"}, "nsf": {"jax": "2", "torch": ""}}
    # scale: ms of the median time (its min and IQR rows come after it in the file)
    t = report.single_table(df, "time", "log_prob", 2, 256, 1e3, "{:.2f}", "median")
    assert table(t)["maf"] == {"jax": "1.00", "torch": "2.00", "torch/compile": "1.50",
                               "zuko": "4.00"}


def test_passes_table_per_layer_log_prob_over_sample(tmp_path):
    def passes(n, **spec):
        return row("passes", n, **spec)
    rows = [passes(5, op="log_prob"), passes(10, op="sample"),  # MAF: 1 / dim per layer
            passes(5, op="log_prob", backend="jax", variant="jit"),
            passes(10, op="sample", backend="jax", variant="jit"),
            passes(5, op="log_prob", arch="nsf"), passes(5, op="sample", arch="nsf"),
            passes(10, op="log_prob", arch="iaf"), passes(5, op="sample", arch="iaf"),
            passes(5, op="inverse"),  # not a column of this table
            # one backend at dim 8 as well: the table shows the dim most rows have
            passes(5, op="log_prob", dim=8), passes(40, op="sample", dim=8)]
    t = report.passes_table(load(tmp_path, rows))
    assert t.columns.name == "dim 2"
    assert table(t) == {"iaf": {"jax": "-", "torch": "2 / 1"},
                        "maf": {"jax": "1 / 2", "torch": "1 / 2"},
                        "nsf": {"jax": "-", "torch": "1 / 1"}}


# -- fastest matched variant against the fastest peer -------------------------------------


def test_fastest_by_framework_matched_against_peer(tmp_path):
    def med(backend, ms, variant="eager", **spec):  # IQR: a tenth of the median
        return timed(ms * 1e-3, ms * 1e-4, backend=backend, variant=variant, **spec)
    rows = (med("torch", 2.0) + med("torch", 1.5, "compile") + med("zuko", 3.0)
            + med("normflows", 1.2) + med("nflows", 5.0)
            + med("jax", 1.0, "jit") + med("flowjax", 2.0) + med("tfp-jax", 1.6)
            + med("tfp", 4.0, "function") + med("tfp", 3.0, "xla") + med("tfp-keras", 6.0)
            + med("torch", 9.0, op="sample"))  # no peer timed sample: no row
    fast = report.fastest_by_framework(load(tmp_path, rows))
    got = {r["framework"]: (r["arch"], r["op"], r["dim"], r["batch"], r["matched"],
                            r["peer"], round(r["matched ms"], 9), round(r["peer ms"], 9),
                            round(r["matched / peer"], 9))
           for r in fast.to_dict("records")}
    assert len(fast) == 3
    assert got == {
        "torch": ("maf", "log_prob", 2, 256, "torch/compile", "normflows", 1.5, 1.2, 1.25),
        "jax": ("maf", "log_prob", 2, 256, "jax", "tfp-jax", 1.0, 1.6, 0.625),
        "tensorflow": ("maf", "log_prob", 2, 256, "tfp/xla", "tfp-keras", 3.0, 6.0, 0.5)}
    # each median beside its own IQR, not another cell's or op's
    for r in fast.to_dict("records"):
        assert (round(r["matched IQR"], 9), round(r["peer IQR"], 9)) == \
            (round(r["matched ms"] / 10, 9), round(r["peer ms"] / 10, 9))


def test_the_ratio_carries_its_standard_error_from_each_cells_own_iqr_and_repeats(tmp_path):
    rows = (timed(1e-3, 1e-4, backend="torch", repeats=25)
            + timed(2e-3, 4e-4, backend="zuko", repeats=16))
    r = report.fastest_by_framework(load(tmp_path, rows)).iloc[0]
    rel_matched = np.sqrt(np.pi / 2) * 0.1 / 1.349 / 5 / 1.0  # SE / median
    rel_peer = np.sqrt(np.pi / 2) * 0.4 / 1.349 / 4 / 2.0
    assert r["matched / peer"] == pytest.approx(0.5)
    assert r["± SE"] == pytest.approx(0.5 * np.hypot(rel_matched, rel_peer), rel=1e-6)


def test_the_standard_error_of_a_median_from_its_iqr_matches_repeated_draws():
    rng = np.random.default_rng(0)
    n, sigma = 25, 0.3
    draws = rng.normal(5.0, sigma, size=(20000, n))
    spread = np.std(np.median(draws, axis=1))
    iqr = np.mean(np.subtract(*np.percentile(draws, [75, 25], axis=1)))
    assert tables.median_se(5.0, iqr, n) == pytest.approx(spread, rel=0.06)


# -- environment, quality, problems -------------------------------------------------------


ZEN4 = "AMD EPYC (cpu family 25, model 17; avx512f)"


def _calibration(run_id, peak, overhead, machine, cpu=ZEN4):
    base = dict(run_id=run_id, kind="calibration", cell=f"calibration-{run_id}",
                machine=machine, cpu=cpu, git_commit="abc1234", threads=2, op="",
                status="ok", error="", matrix="standard")
    return [{**base, "metric": "timer_overhead", "value": overhead, "unit": "s",
             "statistic": "median"},
            {**base, "metric": "gemm_peak", "value": peak, "unit": "GFLOP/s",
             "statistic": "max"},
            {**base, "metric": "backend", "backend": "torch", "value": float("nan"),
             "backend_version": "2.5.1", "variant": "eager,compile", "statistic": "value"},
            {**base, "metric": "backend", "backend": "jax", "value": float("nan"),
             "backend_version": "", "variant": "", "statistic": "value",
             "status": "unavailable", "error": "jax is not installed"}]


def test_environment_section_peak_overhead_per_run_and_versions(tmp_path):
    rows = (_calibration("r1", 123.456, 1.4e-7, "box1")
            + _calibration("r2", 50.04, 2.5e-7, "box2", cpu="AMD EPYC (cpu family 26)")
            + timed(1e-3, 1e-4, run_id="r1", machine="box1"))
    text = "\n".join(report.environment_section(load(tmp_path, rows)))
    runs = {r["run_id"]: r for r in md_table(text, "## Environment")}
    assert runs["r1"]["machine"] == "box1" and runs["r2"]["machine"] == "box2"
    # one host name can carry two chips with matmul peaks 2x apart: each run says its own
    assert runs["r1"]["cpu"] == ZEN4
    assert runs["r2"]["cpu"] == "AMD EPYC (cpu family 26)"
    assert runs["r1"]["GEMM peak (GFLOP/s)"] == "123.5"
    assert runs["r2"]["GEMM peak (GFLOP/s)"] == "50"
    assert runs["r1"]["timer overhead (us)"] == "0.14"  # 1.4e-7 s
    assert runs["r2"]["timer overhead (us)"] == "0.25"
    backends = {r["backend"]: r for r in md_table(text, "Backends:")}
    assert backends["torch"] == {"backend": "torch", "version": "2.5.1",
                                 "execution variants": "eager,compile",
                                 "unavailable because": ""}
    assert backends["jax"]["unavailable because"] == "jax is not installed"


def _nll(backend, arch, values, layers=5, variant="eager", **more):
    return [row("test_nll", v, backend=backend, variant=variant, arch=arch, seed=s,
                kind="train", dataset="eq39", layers=layers, op="", **more)
            for s, v in enumerate(values)]


def _with_se(rows, stderrs):
    return [{**r, "stderr": se} for r, se in zip(rows, stderrs)]


def test_quality_section_mean_std_over_seeds_and_spread(tmp_path):
    rows = (_with_se(_nll("torch", "maf", [3.60, 3.62, 3.65]), [0.01, 0.02, 0.02])
            + _with_se(_nll("jax", "maf", [3.70, 3.70, 3.73], variant="jit"),
                       [0.03, 0.03, 0.03])
            + _with_se(_nll("torch", "nsf", [3.55]), [0.0141])
            + [row("target_entropy", 3.531024, kind="train", dataset="eq39", op=""),
               row("steps_run", 100, kind="train", dataset="eq39", op=""),
               row("steps_run", 250, kind="train", dataset="eq39", op="", seed=1)]
            + [row("entropy_gap", v, kind="train", dataset="eq39", op="", seed=s,
                   stderr=se)
               for s, v, se in zip(range(3), [0.07, 0.09, 0.12], [0.02, 0.02, 0.01])]
            + [row("status", float("nan"), kind="train", dataset="eq39", op="",
                   arch="nsf", backend="jax", status="failed", error="diverged")])
    text = "\n".join(report.quality_section(load(tmp_path, rows), tmp_path))
    assert "Target entropy 3.5310 nats" in text
    assert "Adam steps run: 100 to 250" in text
    nll = {r["arch"]: r for r in md_table(text, "### eq39: test NLL (nats)")}
    # mean over seeds ± sqrt(sum SE_i^2) / k, then sd over seeds:
    # torch maf: mean 10.87 / 3; SE sqrt(.0001 + .0004 + .0004) / 3 = .01; deviations
    # -.02333, -.00333, .02667 -> sd 0.02517
    # jax maf: mean 3.71; SE sqrt(3 * .0009) / 3 = .01732; deviations -.01, -.01, .02 -> sd
    # sqrt(.0006 / 2) = 0.01732
    assert nll["maf"] == {"arch": "maf", "jax": "3.7100 ±0.0173 sd 0.0173",
                          "torch": "3.6233 ±0.0100 sd 0.0252"}
    assert nll["nsf"] == {"arch": "nsf", "jax": "", "torch": "3.5500 ±0.0141"}  # one seed
    assert "standard error" in text and "sqrt(sum SE_i^2) / k" in text
    spread = {r[""]: r for r in md_table(text, next(
        line for line in text.splitlines() if line.startswith("Spread of test NLL")))}
    # between: std of (3.62333, 3.71) = 0.08667 / sqrt 2; within: mean of the two stds
    assert spread["maf"] == {"": "maf", "backends": "2", "seeds": "3",
                             "between backends": "0.0613", "between seeds": "0.0212",
                             "within": "NO"}
    assert "nsf" not in spread  # one backend, one seed
    gap = {r["arch"]: r for r in md_table(text, next(
        line for line in text.splitlines() if line.startswith("Gap NLL - entropy")))}
    # mean of 0.07, 0.09, 0.12; SE sqrt(.0004 + .0004 + .0001) / 3 = .01; sd .02517
    assert gap["maf"]["torch"] == "0.0933 ±0.0100 sd 0.0252"
    # no artifacts in tmp_path: one line, no table
    assert "no per-row test log-densities saved for eq39" in text


def test_problems_section_lists_what_did_not_run(tmp_path):
    long = "RuntimeError: " + "x" * 300
    rows = [row("status", float("nan"), op="", backend="nflows", arch="nsf",
                status="skipped", error="UnsupportedSpec: no nsf here"),
            row("status", float("nan"), op="sample", status="failed", error=long),
            row("status", float("nan"), op="", status="ok"),
            row("time", 1.0, statistic="median", status="ok")]
    df = load(tmp_path, rows)
    text = "\n".join(report.problems_section(df))
    got = md_table(text, "## Cells and ops that did not run")
    assert [(r["backend"], r["arch"], r["op"], r["status"], r["error"]) for r in got] == [
        ("nflows", "nsf", "", "skipped", "UnsupportedSpec: no nsf here"),
        ("torch", "maf", "sample", "failed", long[:160])]
    assert report.problems_section(df[df["status"] == "ok"]) == []


# -- every spec field and device that varies is a key of its own ---------------------------


def test_time_table_keeps_two_depths_apart(tmp_path):
    rows = (timed(1e-3, 1e-4, layers=1) + timed(2e-3, 2e-4, layers=1, backend="jax")
            + timed(8e-3, 4e-4, layers=10) + timed(4e-3, 1e-3, layers=10, backend="jax")
            + timed(3e-3, 3e-4, arch="nsf"))
    t = report.time_table(load(tmp_path, rows), "log_prob", 2, 256)
    assert table(t) == {
        "maf 10x(128,128)": {"jax": "4 ±1 (x1)", "torch": "8 ±0.4 (x2)"},
        "maf 1x(128,128)": {"jax": "2 ±0.2 (x2)", "torch": "1 ±0.1 (x1)"},
        "nsf": {"jax": "", "torch": "3 ±0.3 (x1)"}}


def test_time_table_keeps_widths_and_bins_apart(tmp_path):
    rows = (timed(1e-3, 1e-4, hidden="64x64") + timed(3e-3, 1e-4, hidden="128x128")
            + timed(2e-3, 1e-4, arch="nsf", bins=4) + timed(5e-3, 1e-4, arch="nsf", bins=16))
    t = report.time_table(load(tmp_path, rows), "log_prob", 2, 256)
    assert {a: v["torch"] for a, v in table(t).items()} == {
        "maf 5x(128,128)": "3 ±0.1 (x1)", "maf 5x(64,64)": "1 ±0.1 (x1)",
        "nsf bins 16": "5 ±0.1 (x1)", "nsf bins 4": "2 ±0.1 (x1)"}


def test_time_table_keeps_cpu_and_gpu_apart(tmp_path):
    rows = (timed(2e-3, 1e-4) + timed(0.5e-3, 1e-5, device="gpu")
            + timed(1e-3, 1e-4, backend="jax", variant="jit"))
    df = load(tmp_path, rows)
    assert table(report.time_table(df, "log_prob", 2, 256)) == {"maf": {
        "jax@cpu": "1 ±0.1 (x2)", "torch@cpu": "2 ±0.1 (x4)", "torch@gpu": "0.5 ±0.01 (x1)"}}
    assert table(report.single_table(df, "time", "log_prob", 2, 256, 1e3, "{:g}",
                                     "median")) == {
        "maf": {"jax@cpu": "1", "torch@cpu": "2", "torch@gpu": "0.5"}}


def test_fastest_by_framework_per_device_and_depth(tmp_path):
    def med(backend, ms, **spec):
        return timed(ms * 1e-3, 1e-9, backend=backend, **spec)
    rows = (med("torch", 2.0) + med("zuko", 4.0)
            + med("torch", 0.5, device="gpu") + med("zuko", 0.25, device="gpu")
            + med("torch", 6.0, layers=10) + med("zuko", 3.0, layers=10))
    fast = report.fastest_by_framework(load(tmp_path, rows))
    got = {(r["arch"], r["matched"]): (r["peer"], round(r["matched / peer"], 9))
           for r in fast.to_dict("records")}
    assert got == {("maf 5x(128,128)", "torch@cpu"): ("zuko@cpu", 0.5),
                   ("maf 5x(128,128)", "torch@gpu"): ("zuko@gpu", 2.0),
                   ("maf 10x(128,128)", "torch@cpu"): ("zuko@cpu", 2.0)}


def test_passes_and_memory_tables_key_on_depth_dim_and_device(tmp_path):
    rows = [row("passes", 5, op="log_prob", layers=5), row("passes", 10, op="sample",
                                                           layers=5),
            row("passes", 1, op="log_prob", layers=1), row("passes", 2, op="sample",
                                                           layers=1),
            row("passes", 5, op="log_prob", device="gpu"),
            row("passes", 10, op="sample", device="gpu")]
    assert table(report.passes_table(load(tmp_path, rows))) == {
        "maf 1x(128,128)": {"torch@cpu": "1 / 2", "torch@gpu": "-"},
        "maf 5x(128,128)": {"torch@cpu": "1 / 2", "torch@gpu": "1 / 2"}}
    mem = [row("peak_host_mem", 300 * 2 ** 20, op="", statistic="max"),
           row("peak_host_mem", 500 * 2 ** 20, op="", statistic="max", dim=16),
           row("peak_host_mem", 700 * 2 ** 20, op="", statistic="max", dim=16,
               backend="jax", variant="jit"),
           row("peak_host_mem", 900 * 2 ** 20, op="", statistic="max", device="gpu")]
    got = report.memory_table(load(tmp_path, mem)).fillna(-1).to_dict(orient="index")
    assert got == {"maf dim 16": {"jax@cpu": 700.0, "torch@cpu": 500.0, "torch@gpu": -1},
                   "maf dim 2": {"jax@cpu": -1, "torch@cpu": 300.0, "torch@gpu": 900.0}}


def test_report_quality_spread_and_depth_labels(tmp_path):
    rows = []
    for backend, offset in (("torch", 0.0), ("jax", 0.001), ("tfp", 0.3)):
        for layers, arch_shift in ((5, 0.0), (1, 1.0)):
            rows += _nll(backend, "maf", [3.53 + offset + arch_shift + n
                                          for n in (0.0, 0.02, -0.02)], layers=layers)
    df = report._label(load(tmp_path, rows))
    assert set(df.arch) == {"maf 5x(128,128)", "maf 1x(128,128)"}
    spread = report._spread_table(df)
    assert spread.loc["maf 5x(128,128)", "within"] == "NO"  # tfp 0.3 nats off
    assert spread.loc["maf 5x(128,128)", "between seeds"] == pytest.approx(0.02)
    assert spread.loc["maf 1x(128,128)", "between backends"] == pytest.approx(
        pd.Series([3.53 + 1, 3.531 + 1, 3.83 + 1]).std())
    close = report._spread_table(df[df.column != "tfp"])
    assert close.loc["maf 5x(128,128)", "within"] == "yes"
    text = "\n".join(report.quality_section(load(tmp_path, rows), tmp_path))
    nll = {r["arch"]: r for r in md_table(text, "### eq39: test NLL (nats)")}
    # no stderr in these rows: the mean and the sd over seeds only
    assert nll["maf 1x(128,128)"]["torch"] == "4.5300 sd 0.0200"
    assert nll["maf 5x(128,128)"]["tfp"] == "3.8300 sd 0.0200"


def test_build_writes_every_section_with_labels(tmp_path):
    rows = (_calibration("r1", 123.456, 1.4e-7, "box1")
            + timed(1e-3, 1e-4, layers=1) + timed(8e-3, 4e-4, layers=10)
            + timed(4e-3, 1e-3, layers=10, backend="zuko")
            + [row("passes", 1, layers=1), row("passes", 10, layers=10),
               row("peak_host_mem", 300 * 2 ** 20, op="", statistic="max"),
               row("status", float("nan"), op="", backend="nflows", status="skipped",
                   error="UnsupportedSpec: nope")])
    for r in rows:
        r["matrix"] = "standard"
    pd.DataFrame(rows).to_csv(tmp_path / "standard.csv", index=False)
    text = report.build(tmp_path).read_text()
    assert "## Matrix `standard`" in text and "Reproduce: `flowbench run standard`" in text
    t = {r["arch"]: r for r in md_table(text, "### `log_prob`, dim 2, batch 256")}
    assert t["maf 1x(128,128)"]["torch"] == "1 ±0.1 (x1)"
    assert t["maf 10x(128,128)"] == {"arch": "maf 10x(128,128)", "torch": "8 ±0.4 (x2)",
                                     "zuko": "4 ±1 (x1)"}
    fast = md_table(text, "### Fastest matched variant against the fastest peer, per "
                          "framework")
    assert [(r["arch"], r["matched"], r["peer"], r["matched / peer"]) for r in fast] == [
        ("maf 10x(128,128)", "torch", "zuko", "2")]
    # one label per spec in every table of the matrix, memory included
    assert md_table(text, "### Peak host memory of the cell's process (MB, frameworks "
                          "included)") == [{"arch": "maf 5x(128,128)", "torch": "300"}]
    assert md_table(text, "## Environment")[0]["GEMM peak (GFLOP/s)"] == "123.5"
    problems = md_table(text, "## Cells and ops that did not run")
    assert [(r["backend"], r["arch"], r["error"]) for r in problems] == [
        ("nflows", "maf", "UnsupportedSpec: nope")]


def test_scaling_tables_keep_two_depths_and_devices_apart(tmp_path):
    rows = []
    for layers, device, per_pass in ((1, "cpu", 1e-4), (5, "cpu", 1e-4), (5, "gpu", 1e-5)):
        for dim in (2, 8, 32):
            for op, passes in (("log_prob", layers), ("sample", layers * dim)):
                rows.append(row("time", per_pass * passes, statistic="median", op=op,
                                dim=dim, layers=layers, device=device, passes=passes))
    text = "\n".join(report.scaling_section(load(tmp_path, rows), tmp_path, "scaling"))
    # rows are (arch, op, backend); ms (passes): MAF sample takes layers x dim passes
    t = {r[""]: r for r in md_table(text, "### Against dim (batch 256)")}
    assert len(t) == 6
    assert t["('maf 1x(128,128)', 'sample', 'torch@cpu')"]["32"] == "3.2 (32)"
    assert t["('maf 5x(128,128)', 'sample', 'torch@cpu')"]["32"] == "16 (160)"
    assert t["('maf 5x(128,128)', 'sample', 'torch@gpu')"]["32"] == "1.6 (160)"
    growth = {r[""]: r for r in md_table(text, next(
        line for line in text.splitlines() if line.startswith("Growth")))}
    assert growth["('maf 5x(128,128)', 'sample')"]["torch@gpu"] == "16"  # dim 32 / dim 2
    assert growth["('maf 1x(128,128)', 'log_prob')"]["torch@cpu"] == "1"
    assert growth["('maf 1x(128,128)', 'log_prob')"]["torch@gpu"] == "nan"


# -- paired differences on the same test rows ----------------------------------------------


def _paired(k_se: float, n: int = 400, seed: int = 0):
    """(reference log-densities, column log-densities, d): d = -(lp_col - lp_ref) per row
    with mean exactly k_se standard errors of d."""
    rng = np.random.default_rng(seed)
    ref = rng.normal(-3.5, 1.0, n)
    e = rng.normal(0.0, 0.05, n)
    e -= e.mean()
    d = e + k_se * e.std(ddof=1) / np.sqrt(n)
    return ref, ref - d, d


def _train_cell(tmp_path, backend, variant, seed, lp, *, suffix=".log_density", arch="maf",
                **more):
    """A test_nll row of a train cell and its saved per-row log-densities."""
    r = row("test_nll", -lp.mean(), backend=backend, variant=variant, arch=arch, seed=seed,
            kind="train", dataset="eq39", op="", stderr=lp.std(ddof=1) / np.sqrt(len(lp)),
            **more)
    (tmp_path / "artifacts").mkdir(exist_ok=True)
    # a pictures file (suffix "") holds what the report draws beside the log-densities
    pictures = {} if suffix else dict(x=np.arange(3.0), y=np.arange(3.0), z=np.zeros((5, 2)),
                                      learned=np.zeros((3, 3)), true=np.zeros((3, 3)))
    np.savez(tmp_path / "artifacts" / f"{r['cell']}{suffix}.npz", test_log_density=lp,
             **pictures)
    return r


PAIRED = "eq39: paired NLL difference vs `torch` (nats, ± SE)"


def test_paired_difference_standard_error_against_numpy():
    rng = np.random.default_rng(3)
    a = rng.normal(-3.0, 1.0, 257)
    b = a + rng.normal(0.01, 0.1, 257)
    got = metrics.paired_difference(a, b)
    d = -(a - b)
    assert got["n"] == 257
    assert got["diff"] == pytest.approx(d.mean(), abs=1e-15)
    assert got["stderr"] == pytest.approx(np.std(d, ddof=1) / np.sqrt(257), rel=1e-12)
    ref = stats.ttest_rel(b, a)  # the same t as diff / stderr
    assert got["t"] == pytest.approx(got["diff"] / got["stderr"], rel=1e-12)
    assert got["t"] == pytest.approx(ref.statistic, rel=1e-12)
    assert got["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    with pytest.raises(ValueError, match="same rows"):
        metrics.paired_difference(a, b[:-1])
    same = metrics.paired_difference(a, a)
    assert (same["diff"], same["stderr"], same["t"], same["p"]) == (0.0, 0.0, 0.0, 1.0)


def test_report_pairs_backends_on_the_same_rows(tmp_path):
    """Through ``report.build``: hand-made artifacts, the SE from numpy, 3 SE significant,
    1 SE not, either file the training writes."""
    ref, col3, d3 = _paired(3.0)
    _, col1, d1 = _paired(1.0, seed=0)  # same reference rows, another column
    rows = [_train_cell(tmp_path, "torch", "eager", 0, ref),
            _train_cell(tmp_path, "jax", "jit", 0, col3, suffix=""),  # pictures file
            _train_cell(tmp_path, "tfp", "xla", 0, col1)]
    for r in rows:
        r["matrix"] = "quick"
    pd.DataFrame(rows).to_csv(tmp_path / "quick.csv", index=False)
    text = report.build(tmp_path).read_text()
    t = md_table(text, PAIRED)
    assert len(t) == 1 and t[0]["torch"] == "reference"
    for cell, d in ((t[0]["jax"], d3), (t[0]["tfp/xla"], d1)):
        se = np.std(d, ddof=1) / np.sqrt(len(d))
        assert cell.startswith(f"{d.mean():+.4f} ±{se:.4f} ")
    assert t[0]["jax"].endswith("(sig.)")     # 3 SE
    assert t[0]["tfp/xla"].endswith("(n.s.)")  # 1 SE
    assert "within 2 SE of zero, not significant" in text


def test_paired_section_combines_seeds(tmp_path):
    rows, diffs, ses = [], [], []
    for seed, k in ((0, 3.0), (1, 0.5), (2, 2.0)):
        ref, col, d = _paired(k, n=300 + 50 * seed, seed=seed)
        rows += [_train_cell(tmp_path, "torch", "eager", seed, ref),
                 _train_cell(tmp_path, "jax", "jit", seed, col)]
        diffs.append(d.mean())
        ses.append(np.std(d, ddof=1) / np.sqrt(len(d)))
    # a jax cell whose rows do not match its reference's: left out, and said so
    rows.append(_train_cell(tmp_path, "torch", "eager", 3, np.zeros(10)))
    rows.append(_train_cell(tmp_path, "jax", "jit", 3, np.ones(11)))
    # a cell from before the log-densities were saved
    rows.append(row("test_nll", 3.6, backend="tfp", variant="xla", seed=0, kind="train",
                    dataset="eq39", op="", stderr=0.01))
    ok = report._label(load(tmp_path, rows))
    text = "\n".join(quality.paired_section(ok, tmp_path / "artifacts", "eq39"))
    t = md_table(text, PAIRED)[0]
    mean, se, sd = np.mean(diffs), np.sqrt(np.sum(np.square(ses))) / 3, np.std(diffs, ddof=1)
    assert t["jax"] == f"{mean:+.4f} ±{se:.4f} sd {sd:.4f} " + (
        "(sig.)" if abs(mean) > 2 * se else "(n.s.)")
    assert "tfp/xla" not in t
    assert "1 of 9 cells have no saved test log-densities" in text
    assert "1 pair(s) left out: different numbers of test rows" in text
    c = quality.combine_seeds([1.0, 2.0, 4.0], [0.1, 0.2, 0.2])
    assert c == {"mean": pytest.approx(7 / 3), "stderr": pytest.approx(0.1),
                 "sd": pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1)), "k": 3}


def test_paired_section_reference_is_the_first_matched_backend(tmp_path):
    ref, col, _ = _paired(3.0)
    rows = [_train_cell(tmp_path, "zuko", "eager", 0, col),
            _train_cell(tmp_path, "tfp", "xla", 0, col),
            _train_cell(tmp_path, "jax", "jit", 0, ref)]
    text = "\n".join(quality.paired_section(report._label(load(tmp_path, rows)),
                                             tmp_path / "artifacts", "eq39"))
    t = md_table(text, "eq39: paired NLL difference vs `jax` (nats, ± SE)")[0]
    assert t["jax"] == "reference" and t["zuko"].endswith("(sig.)")
    assert list(t) == ["arch", "jax", "tfp/xla", "zuko"]
    # torch before jax; its plain variant before torch/compile
    rows += [_train_cell(tmp_path, "torch", "compile", 0, col),
             _train_cell(tmp_path, "torch", "eager", 0, col)]
    text = "\n".join(quality.paired_section(report._label(load(tmp_path, rows)),
                                             tmp_path / "artifacts", "eq39"))
    t = md_table(text, PAIRED)[0]
    assert t["torch"] == "reference" and t["torch/compile"] == "+0.0000 ±0.0000 (n.s.)"


def test_a_matrix_measured_on_two_machines_gets_a_section_per_machine(tmp_path):
    """torch is faster on box1, zuko on box2: every ratio and the fastest-peer table
    compare times of one machine only."""
    rows = (_calibration("r1", 100.0, 1.4e-7, "box1") + _calibration("r2", 50.0, 1.4e-7, "box2")
            + timed(1e-3, 1e-4, machine="box1") + timed(3e-3, 1e-4, backend="zuko",
                                                        machine="box1")
            + timed(8e-3, 1e-4, machine="box2", run_id="r2")
            + timed(2e-3, 1e-4, backend="zuko", machine="box2", run_id="r2"))
    for r in rows:
        r["matrix"] = "standard"
    pd.DataFrame(rows).to_csv(tmp_path / "standard.csv", index=False)
    text = report.build(tmp_path).read_text()
    one, two = text.split("## Matrix `standard` on `box1`")[1].split(
        "## Matrix `standard` on `box2`")
    t1 = {r["arch"]: r for r in md_table(one, "### `log_prob`, dim 2, batch 256")}
    t2 = {r["arch"]: r for r in md_table(two, "### `log_prob`, dim 2, batch 256")}
    assert t1["maf"] == {"arch": "maf", "torch": "1 ±0.1 (x1)", "zuko": "3 ±0.1 (x3)"}
    assert t2["maf"] == {"arch": "maf", "torch": "8 ±0.1 (x4)", "zuko": "2 ±0.1 (x1)"}
    fast2 = md_table(two, "### Fastest matched variant against the fastest peer, per "
                          "framework")
    assert [(r["matched"], r["peer"], r["matched / peer"]) for r in fast2] == [
        ("torch", "zuko", "4")]
