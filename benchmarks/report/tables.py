"""Timing tables of the report: medians with their IQR and the ratio to the row's fastest,
compile times, GFLOP/s, the fastest matched variant against the fastest peer, passes,
memory, the environment and the cells that did not run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from flowbench import adapters

from .figures import _figure
from .frame import _label, _md, _measured, _ok, _pivot, framework


# below this many repeats a median's IQR says little: the table prints the count
FEW_REPEATS = 10
LOADED_MARK = " †"


def time_table(df: pd.DataFrame, op: str, dim, batch) -> pd.DataFrame:
    """arch x backend(/variant): 'median ms ±IQR (x ratio to the row's fastest)', with
    'n=3' where the median is of fewer than FEW_REPEATS repeats and † where the cell was
    measured under load."""
    sel = (df["op"] == op) & (df["dim"] == dim) & (df["batch"] == batch)
    times = _label(_ok(df[sel], "time"), ("dim",), context=_measured(df))
    medians = times[times["statistic"] == "median"]
    med = _pivot(medians)
    if med.empty:
        return med
    iqr = _pivot(times[times["statistic"] == "iqr"]).reindex(index=med.index,
                                                            columns=med.columns)
    reps = _pivot(medians.assign(value=medians["repeats"])).reindex(
        index=med.index, columns=med.columns) if "repeats" in medians else None
    loaded = _pivot(medians.assign(value=medians["loaded"].eq(True).astype(float)),
                    aggfunc="max").reindex(index=med.index, columns=med.columns) \
        if "loaded" in medians else None
    ratio = med.div(med.min(axis=1), axis=0)
    out = med.copy().astype(object)
    for a in med.index:
        for c in med.columns:
            v = med.loc[a, c]
            if pd.isna(v):
                out.loc[a, c] = ""
                continue
            text = f"{v * 1e3:.3g} ±{iqr.loc[a, c] * 1e3:.2g} (x{ratio.loc[a, c]:.2g})"
            if reps is not None and pd.notna(reps.loc[a, c]) and reps.loc[a, c] < FEW_REPEATS:
                text += f" n={int(reps.loc[a, c])}"
            if loaded is not None and loaded.loc[a, c] == 1:
                text += LOADED_MARK
            out.loc[a, c] = text
    return out


def single_table(df, metric, op, dim, batch, scale=1.0, fmt="{:.3g}", statistic=None):
    sel = (df["op"] == op) & (df["dim"] == dim) & (df["batch"] == batch)
    t = _pivot(_label(_ok(df[sel], metric, statistic), ("dim",), context=_measured(df))) * scale
    return t.map(lambda v: "" if pd.isna(v) else fmt.format(v))


def passes_table(df) -> pd.DataFrame:
    """arch x backend: 'log_prob / sample' conditioner passes per layer as the library's
    code calls the network, and beside them the passes' worth of work that executed
    (``executed_passes``) where the two differ by more than EXECUTED_TOLERANCE."""
    p = _ok(df, "passes")
    p = p[p["op"].isin(["log_prob", "sample"])]
    if p.empty:
        return pd.DataFrame()
    dim = int(p["dim"].max()) if p["dim"].nunique() == 1 else int(
        p["dim"].value_counts().idxmax())
    context = _measured(df)

    def per_layer(metric):
        rows = _ok(df, metric)
        rows = rows[rows["op"].isin(["log_prob", "sample"]) & (rows["dim"] == dim)]
        rows = _label(rows.assign(value=rows["value"] / rows["layers"]), ("dim",),
                      ("backend",), context=context)
        return rows.pivot_table(index=["arch", "backend"], columns="op", values="value",
                                aggfunc="last")

    out = passes_cells(per_layer("passes"), per_layer("executed_passes"))
    out.columns.name = f"dim {dim}"
    return out


def passes_cells(semantic: pd.DataFrame, executed: pd.DataFrame) -> pd.DataFrame:
    """arch x backend cells 'log_prob / sample' from (arch, backend) x op tables of passes
    per layer, with '(ran ...)' where the executed ones differ (also ``flowbench passes``)."""
    def cell(key):
        said = semantic.loc[key]
        text = f"{said.get('log_prob', np.nan):g} / {said.get('sample', np.nan):g}"
        if key in executed.index:
            ran = executed.loc[key]
            if any(abs(ran.get(op, np.nan) - said.get(op, np.nan)) > EXECUTED_TOLERANCE
                   for op in semantic.columns):
                text += " (ran " + " / ".join(f"{ran.get(op, np.nan):.3g}"
                                              for op in ("log_prob", "sample")) + ")"
        return text
    out = pd.Series({key: cell(key) for key in semantic.index}, dtype=object)
    out.index = pd.MultiIndex.from_tuples(out.index, names=["arch", "backend"])
    return out.unstack("backend").fillna("-")


# executed and semantic passes per layer closer than this are the same count (the
# executed one also holds small matmuls outside the conditioners: permutations, 1x1 maps)
EXECUTED_TOLERANCE = 0.15
PASSES_NOTE = (
    "Passes are counted as the library's code calls the conditioner network; \"ran\" is "
    "the work that executed, in passes' worth of conditioner FLOPs, by each framework's "
    "counter (torch's FlopCounterMode, XLA's optimized HLO, TF graphs after grappler). "
    "They differ where a compiler removed a repeated evaluation (TFP evaluates a layer's "
    "network again for the log-det; XLA and grappler drop the copy), where a library's "
    "networks are larger than the canonical one or run matmuls of their own (a monotone "
    "MLP transformer, a bisection), or where a loop's trip count was not proved (then the "
    "loop counted once: the counter's note says so in the results).")


def environment_section(df) -> list[str]:
    cal = df[df["kind"] == "calibration"]
    lines = ["## Environment", ""]
    env_cols = [c for c in ["matrix", "machine", "platform", "python", "cpu", "cpu_count",
                            "git_commit", "threads", "malloc"] if c in df]
    runs = df.groupby("run_id")[env_cols].last() if "run_id" in df else pd.DataFrame()
    peaks = _ok(cal, "gemm_peak").groupby("run_id")["value"].max()
    over = _ok(cal, "timer_overhead").groupby("run_id")["value"].last()
    if len(runs):
        runs = runs.assign(**{"GEMM peak (GFLOP/s)": peaks.reindex(runs.index).round(1),
                              "timer overhead (us)": (over.reindex(runs.index) * 1e6).round(3)})
        lines += [runs.reset_index().to_markdown(index=False), ""]
    roof = roofline_table(cal)
    if len(roof):
        lines += ["Float32 matmul rate of each framework's own matmul (numpy's BLAS, torch, "
                  "jitted jax, TF the better of XLA and its own kernel; 2048 x 2048, best of 1 s) "
                  "and the memory "
                  "bandwidth of a 256 MB copy, at the run's thread count. Efficiencies in "
                  "the report are against the best of these.", "",
                  roof.to_markdown(floatfmt=".1f"), ""]
    versions = cal[cal["metric"] == "backend"]
    if len(versions):
        v = versions.groupby("backend")[["backend_version", "variant", "error"]].last()
        v.columns = ["version", "execution variants", "unavailable because"]
        v = v.astype(object).fillna("").reset_index()
        lines += ["Backends:", "", v.to_markdown(index=False), ""]
    return lines


def roofline_table(cal: pd.DataFrame) -> pd.DataFrame:
    """run x source: every measured peak (GFLOP/s) and the memory bandwidth (GB/s)."""
    rows = cal[cal["metric"].isin(["gemm_peak", "mem_bandwidth"]) & (cal["status"] == "ok")]
    if rows.empty or "source" not in rows:
        return pd.DataFrame()
    source = rows["source"].astype(object).where(rows["source"].notna(), "numpy")
    rows = rows.assign(what=np.where(rows["metric"] == "gemm_peak",
                                     source.astype(str) + " GFLOP/s", "memory GB/s"))
    return rows.pivot_table(index="run_id", columns="what", values="value", aggfunc="max")


def best_peak(df: pd.DataFrame) -> tuple[float, str] | None:
    """The best float32 matmul rate measured in these results, and whose it is."""
    peaks = _ok(df, "gemm_peak")
    if peaks.empty:
        return None
    best = peaks.loc[peaks["value"].idxmax()]
    source = best.get("source", "numpy")
    return float(best["value"]), "numpy" if pd.isna(source) else str(source)


def efficiency_table(df, op, dim, batch, peak: float) -> pd.DataFrame:
    """'GFLOP/s (x% of peak)'; above 100% it says so: the work was miscounted."""
    sel = (df["op"] == op) & (df["dim"] == dim) & (df["batch"] == batch)
    gf = _pivot(_label(_ok(df[sel], "gflops", "median"), ("dim",), context=_measured(df)))

    def cell(v):
        if pd.isna(v):
            return ""
        text = f"{v:.3g} ({v / peak:.0%})"
        return text + " ABOVE PEAK: accounting error" if v > peak else text
    return gf.map(cell)


def counters_text(df, op: str) -> str:
    """Which counter measured each backend's work of ``op``: 'torch-flop-counter: torch,
    zuko; ...'."""
    rows = _ok(df, "gflops", "median")
    rows = rows[rows["op"] == op]
    if "counter" not in rows or rows.empty:
        return "analytic: all"
    by = rows.groupby(rows["counter"].fillna("analytic"))["backend"].unique()
    return "; ".join(f"{c}: {', '.join(sorted(map(str, b)))}" for c, b in by.items())


def timing_section(df, name: str, peak: tuple[float, str] | None) -> list[str]:
    """Per (dim, batch): a time table per op, compile times, GFLOP/s against ``peak``
    (the best measured matmul rate and whose it is)."""
    lines = []
    points = (_ok(df, "time", "median")[["dim", "batch"]].drop_duplicates()
              .sort_values(["dim", "batch"]).itertuples(index=False))
    for dim, batch in points:
        for op in [o for o in ["log_prob", "inverse", "forward", "sample", "train_step"]
                   if o in set(df["op"])]:
            t = time_table(df, op, dim, batch)
            if t.empty:
                continue
            lines += [f"### `{op}`, dim {int(dim)}, batch {int(batch)}", "",
                      "Median ms ±IQR (x ratio to the fastest in the row; n=: repeats, "
                      f"where fewer than {FEW_REPEATS};{LOADED_MARK}: measured under load).",
                      "", _md(t), ""]
        comp = single_table(df, "compile", "log_prob", dim, batch, 1.0)
        comp_s = single_table(df, "compile", "sample", dim, batch, 1.0)
        if not comp.empty:
            lines += [f"First call minus steady median (s), trace + compile, dim {int(dim)} "
                      f"batch {int(batch)}: `log_prob`", "", _md(comp), "", "`sample`", "",
                      _md(comp_s), ""]
        best = peak
        gf = efficiency_table(df, "log_prob", dim, batch, best[0]) if best else pd.DataFrame()
        if not gf.empty:
            above = gf.map(lambda s: "ABOVE PEAK" in s).to_numpy().any()
            lines += [f"GFLOP/s of `log_prob` (dim {int(dim)}, batch {int(batch)}): the "
                      "matmul and convolution work that executed, by each framework's "
                      f"counter ({counters_text(df, 'log_prob')}), and its share of the best "
                      f"measured float32 matmul rate, {best[0]:.0f} GFLOP/s ({best[1]}'s):",
                      "",
                      _md(gf), ""]
            if above:
                lines += ["A share above 100% is not a fast op: the counted work exceeds what "
                          "ran (a conditioner pass counted that the compiler removed, "
                          "for example). Those numbers are wrong, not good.", ""]
    return lines


def median_se(median: float, iqr: float, repeats: float) -> float:
    """Standard error of a median of ``repeats`` timings, from their IQR: sqrt(pi / 2)
    sigma / sqrt(n), sigma = IQR / 1.349 (both exact for normal noise). It holds the
    noise within the cell's repeats; drift between two cells timed minutes apart is not
    in it, which is why the cells a table compares run one after another."""
    if not (repeats and repeats > 0) or np.isnan(iqr):
        return np.nan
    return np.sqrt(np.pi / 2) * iqr / 1.349 / np.sqrt(repeats)


def ratio_se(a: float, se_a: float, b: float, se_b: float) -> float:
    """Standard error of a / b for independent a and b (first-order delta method)."""
    return abs(a / b) * np.hypot(se_a / a, se_b / b)


FASTEST_KEYS = ["framework", "arch", "op", "dim", "batch"]


def fastest_by_framework(df) -> pd.DataFrame:
    """Per framework, spec, op, shape and device: the fastest matched backend variant
    against the fastest peer, each median with its IQR, and the ratio with its standard
    error (a ratio near 1 means nothing without it). Where a paired cell timed the
    framework's backends in interleaved rounds (``benchmarks/paired.py``), the row is
    that measurement; else it compares the separate cells' medians. ``timed`` says
    which."""
    separate, paired = separate_cells_rows(df), paired_rows(df)
    if paired.empty:
        return separate
    keys = FASTEST_KEYS + (["device"] if "device" in paired else [])
    if not separate.empty:
        covered = separate.set_index(keys).index.isin(paired.set_index(keys).index)
        paired = pd.concat([paired, separate[~covered]], ignore_index=True)
    return paired.sort_values(keys, kind="stable", ignore_index=True)


def _sides(rows: pd.DataFrame, df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The rows labelled with their framework and side (matched or peer), and the keys a
    matched-against-peer row is one of."""
    rows = _label(rows.assign(
        framework=rows["backend"].map(framework),
        side=np.where(rows["backend"].isin(list(adapters.MATCHED)), "matched", "peer")),
        ("dim",), context=_measured(df))
    return rows, FASTEST_KEYS + (["device"] if "device" in rows else [])


def paired_rows(df) -> pd.DataFrame:
    """The matched-against-peer rows of paired cells: per member, the median and IQR of
    its round medians; the ratio is the median over rounds of matched / peer in the same
    round, its SE that of a median from the IQR of the per-round log-ratios
    (``median_se``), so drift that moves both sides together cancels out of both, and a
    round in which the machine changed speed between the two blocks moves neither."""
    rounds = _ok(df, "paired_time", "round")
    if rounds.empty:
        return pd.DataFrame()
    rounds, keys = _sides(rounds, df)
    out = []
    for key, g in rounds.groupby(keys, dropna=False):
        g = g[g["run_id"] == g["run_id"].max()]  # a cell measured again: its last run
        per = g.pivot_table(index="step", columns="column", values="value", aggfunc="last")
        side = g.groupby("column")["side"].first()
        med = per.median()
        best = {s: med[side[med.index] == s].sort_values() for s in ("matched", "peer")}
        if any(b.empty for b in best.values()):
            continue
        m, p = best["matched"].index[0], best["peer"].index[0]
        logs = np.log(per[m] / per[p]).dropna()
        ratio = float(np.exp(logs.median()))
        q1, q3 = np.percentile(logs, [25, 75]) if len(logs) > 1 else (np.nan, np.nan)
        spread = (per.quantile(0.75) - per.quantile(0.25)) * 1e3
        out.append({**dict(zip(keys, key)), "dim": int(key[3]), "batch": int(key[4]),
                    "matched": m, "matched ms": med[m] * 1e3, "matched IQR": spread[m],
                    "peer": p, "peer ms": med[p] * 1e3, "peer IQR": spread[p],
                    "matched / peer": ratio,
                    "± SE": ratio * median_se(0, q3 - q1, len(logs)),
                    "timed": f"interleaved, {len(logs)} rounds"})
    return pd.DataFrame(out)


def separate_cells_rows(df) -> pd.DataFrame:
    """The matched-against-peer rows from the medians of separate cells, each timed in
    its own process at its own time."""
    med = _ok(df, "time", "median")
    if med.empty:
        return pd.DataFrame()
    where = ["run_id", "cell", "op", "batch"]  # the IQR of the same run's same op
    iqr = _ok(df, "time", "iqr").set_index(where)["value"]
    iqr = iqr[~iqr.index.duplicated(keep="last")]
    med, keys = _sides(med, df)
    rows = []
    for key, g in med.groupby(keys, dropna=False):
        fw, arch, op, dim, batch = key[:5]
        best = {s: g[g.side == s].nsmallest(1, "value") for s in ("matched", "peer")}
        if any(b.empty for b in best.values()):
            continue
        m, p = best["matched"].iloc[0], best["peer"].iloc[0]
        spread = {s: iqr.get(tuple(r[where]), np.nan) * 1e3
                  for s, r in (("matched", m), ("peer", p))}
        se = {s: median_se(r["value"] * 1e3, spread[s], r.get("repeats", np.nan))
              for s, r in (("matched", m), ("peer", p))}
        ratio = m["value"] / p["value"]
        rows.append({**dict(zip(keys, key)), "dim": int(dim), "batch": int(batch),
                     "matched": m["column"],
                     "matched ms": m["value"] * 1e3, "matched IQR": spread["matched"],
                     "peer": p["column"], "peer ms": p["value"] * 1e3,
                     "peer IQR": spread["peer"], "matched / peer": ratio,
                     "± SE": ratio_se(m["value"] * 1e3, se["matched"], p["value"] * 1e3,
                                      se["peer"]),
                     "timed": "separate cells"})
    return pd.DataFrame(rows)


def memory_table(df) -> pd.DataFrame:
    """arch x backend: the cell process's peak host memory, MB."""
    mem = _pivot(_label(_ok(df, "peak_host_mem"), context=_measured(df)), aggfunc="max")
    return mem / 2 ** 20


def loaded_section(df) -> list[str]:
    """Cells whose GEMM check fell below the run's calibration while they were timed:
    their times are not for comparison (the runner's ``flag_load``)."""
    ratio = _ok(df, "load_ratio")
    if "loaded" not in ratio or not ratio["loaded"].eq(True).any():
        return []
    hit = _label(ratio[ratio["loaded"].eq(True)], keyed=("dim",), columns=("backend",))
    t = hit[["matrix", "backend", "variant", "arch", "dim", "dataset", "value"]]
    t = t.rename(columns={"value": "GEMM check / calibration"})
    return ["## Cells measured under load", "",
            "Their short GEMM check ran below the run's calibration of the same check "
            "(threshold in benchmarks/flops.py, LOAD_RATIO): another process shared their "
            "CPUs, so their times (marked † in the tables) are not for comparison. Rerun "
            "them on a quiet machine with --force.", "",
            t.astype(object).fillna("").to_markdown(index=False, floatfmt=".2f"), ""]


def problems_section(df) -> list[str]:
    st = df[(df["metric"] == "status") & (df["status"] != "ok")]
    if st.empty:
        return []
    st = _label(st, keyed=("dim",), columns=("backend",))
    t = st[["matrix", "backend", "variant", "arch", "dim", "dataset", "op", "status",
            "error"]].astype(object).fillna("")
    t = t.assign(error=t["error"].astype(str).str.slice(0, 160))
    return ["## Cells and ops that did not run", "",
            t.drop_duplicates().to_markdown(index=False), ""]


def scaling_section(df, out_dir: Path, name: str) -> list[str]:
    med = _label(_ok(df, "time", "median"), ("dim",), context=_measured(df))
    if med.empty:
        return []
    med = med.assign(ms=med["value"] * 1e3, backend=med["column"])
    lines = []
    batch_counts = med.groupby("batch")["dim"].nunique()
    dim_counts = med.groupby("dim")["batch"].nunique()
    if batch_counts.max() > 1:  # a dim sweep at some batch
        batch = int(batch_counts.idxmax())
        sweep = med[med["batch"] == batch]
        fig = out_dir / f"{name}_dim.png"
        _figure(sweep, "dim", fig, f"{name}: time against dim (batch {batch})")
        cell = sweep.assign(txt=sweep["ms"].map("{:.3g}".format) + " ("
                            + sweep["passes"].fillna(-1).astype(int).astype(str) + ")")
        t = cell.pivot_table(index=["arch", "op", "backend"], columns="dim", values="txt",
                             aggfunc="last")
        lines += [f"### Against dim (batch {batch})", "",
                  "Median ms per call (conditioner passes of the call).", "",
                  f"![time against dim]({fig.name})", "", t.fillna("").to_markdown(), ""]
        growth = sweep.pivot_table(index=["arch", "op", "backend"], columns="dim",
                                   values="value", aggfunc="last")
        if growth.shape[1] > 1:
            ratio = growth[growth.columns.max()] / growth[growth.columns.min()]
            lines += [f"Growth, time at dim {growth.columns.max()} / time at dim "
                      f"{growth.columns.min()}:", "",
                      ratio.unstack("backend").to_markdown(floatfmt=".3g"), ""]
    if dim_counts.max() > 1:  # a batch sweep at some dim
        dim = int(dim_counts.idxmax())
        sweep = med[med["dim"] == dim]
        swept = sweep.groupby("arch")["batch"].nunique()
        sweep = sweep[sweep["arch"].isin(swept[swept > 1].index)]
        fig = out_dir / f"{name}_batch.png"
        _figure(sweep, "batch", fig, f"{name}: time against batch (dim {dim})")
        thr = _label(_ok(df[df["dim"] == dim], "throughput", "median"), ("dim",),
                     context=_measured(df))
        t = thr.pivot_table(index=["arch", "op", "column"], columns="batch", values="value",
                            aggfunc="last")
        lines += [f"### Against batch (dim {dim})", "", f"![time against batch]({fig.name})",
                  "", "Throughput (samples/s):", "", t.to_markdown(floatfmt=".3g"), ""]
    return lines
