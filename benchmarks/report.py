"""``flowbench report``: results/*.csv -> results/REPORT.md and figures beside it.

Tables are pivots of the tidy rows: medians with their IQR, the ratio to the fastest
backend in the same row, the sequential passes beside the time, the environment they were
measured in, and the command that reproduces them.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

import adapters

from .results import read, write_atomic

TIDY = {"metric", "status", "cell", "value"}


def framework(backend: str) -> str:
    """The framework a backend runs on (the first module its registry entry needs)."""
    entry = adapters.REGISTRY.get(backend)
    return entry[1][0] if entry else "?"


def load_results(results_dir: Path) -> pd.DataFrame:
    frames = []
    for path in sorted(Path(results_dir).glob("*.csv")):
        df = read(path)
        if df.empty or not TIDY <= set(df.columns):
            continue  # passes.csv, compile_time.csv: tables of their own commands
        if "matrix" not in df:
            df["matrix"] = re.sub(r"\.shard-.*$", "", path.stem)
        df["source"] = path.name
        frames.append(df)
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    df["column"] = np.where(df["variant"].fillna("").astype(str).isin(["", "eager", "jit"]),
                            df["backend"].astype(str),
                            df["backend"].astype(str) + "/" + df["variant"].astype(str))
    return df


def _md(df: pd.DataFrame, floatfmt=".3g") -> str:
    return df.to_markdown(floatfmt=floatfmt) if len(df) else "(no rows)"


def _ok(df, metric, statistic=None):
    sel = (df["metric"] == metric) & (df["status"] == "ok")
    if statistic:
        sel &= df["statistic"] == statistic
    return df[sel]


def _pivot(rows: pd.DataFrame, aggfunc="last") -> pd.DataFrame:
    return rows.pivot_table(index="arch", columns="column", values="value", aggfunc=aggfunc)


def time_table(df: pd.DataFrame, op: str, dim, batch) -> pd.DataFrame:
    """arch x backend(/variant): 'median ms ±IQR (x ratio to the row's fastest)'."""
    sel = (df["op"] == op) & (df["dim"] == dim) & (df["batch"] == batch)
    times = _label(_ok(df[sel], "time"), ("dim",), context=_measured(df))
    med = _pivot(times[times["statistic"] == "median"])
    if med.empty:
        return med
    iqr = _pivot(times[times["statistic"] == "iqr"]).reindex(index=med.index,
                                                            columns=med.columns)
    ratio = med.div(med.min(axis=1), axis=0)
    out = med.copy().astype(object)
    for a in med.index:
        for c in med.columns:
            v = med.loc[a, c]
            out.loc[a, c] = "" if pd.isna(v) else (
                f"{v * 1e3:.3g} ±{iqr.loc[a, c] * 1e3:.2g} (x{ratio.loc[a, c]:.2g})")
    return out


def single_table(df, metric, op, dim, batch, scale=1.0, fmt="{:.3g}", statistic=None):
    sel = (df["op"] == op) & (df["dim"] == dim) & (df["batch"] == batch)
    t = _pivot(_label(_ok(df[sel], metric, statistic), ("dim",), context=_measured(df))) * scale
    return t.map(lambda v: "" if pd.isna(v) else fmt.format(v))


def passes_table(df) -> pd.DataFrame:
    """arch x backend: 'log_prob / sample' conditioner passes per layer, as measured."""
    p = _ok(df, "passes")
    p = p[p["op"].isin(["log_prob", "sample"])]
    if p.empty:
        return pd.DataFrame()
    p = p.assign(per_layer=p["value"] / p["layers"])
    dim = int(p["dim"].max()) if p["dim"].nunique() == 1 else int(
        p["dim"].value_counts().idxmax())
    p = _label(p[p["dim"] == dim], ("dim",), ("backend",), context=_measured(df))
    t = p.pivot_table(index=["arch", "backend"], columns="op", values="per_layer",
                      aggfunc="last")
    cell = t.apply(lambda r: f"{r.get('log_prob', np.nan):g} / {r.get('sample', np.nan):g}",
                   axis=1)
    out = cell.unstack("backend").fillna("-")
    out.columns.name = f"dim {dim}"
    return out


def environment_section(df) -> list[str]:
    cal = df[df["kind"] == "calibration"]
    lines = ["## Environment", ""]
    env_cols = [c for c in ["matrix", "machine", "platform", "python", "cpu_count",
                            "git_commit", "threads"] if c in df]
    runs = df.groupby("run_id")[env_cols].last() if "run_id" in df else pd.DataFrame()
    peaks = _ok(cal, "gemm_peak").groupby("run_id")["value"].last()
    over = _ok(cal, "timer_overhead").groupby("run_id")["value"].last()
    if len(runs):
        runs = runs.assign(**{"GEMM peak (GFLOP/s)": peaks.reindex(runs.index).round(1),
                              "timer overhead (us)": (over.reindex(runs.index) * 1e6).round(3)})
        lines += [runs.reset_index().to_markdown(index=False), ""]
    versions = cal[cal["metric"] == "backend"]
    if len(versions):
        v = versions.groupby("backend")[["backend_version", "variant", "error"]].last()
        v.columns = ["version", "execution variants", "unavailable because"]
        v = v.astype(object).fillna("").reset_index()
        lines += ["Backends:", "", v.to_markdown(index=False), ""]
    return lines


def _with_reference(g, metrics: list[str], ref_col: str) -> pd.DataFrame:
    """(arch, backend) x metric: 'value (reference)', means over seeds."""
    sel = g[g["metric"].isin(metrics) & (g["status"] == "ok")]
    if sel.empty or ref_col not in sel:
        return pd.DataFrame()
    agg = sel.groupby(["arch", "column", "metric"])[["value", ref_col]].mean()
    txt = agg.apply(lambda r: f"{r['value']:.3g} ({r[ref_col]:.3g})", axis=1)
    out = txt.unstack("metric")
    out.columns = [c.removeprefix("normality_").removeprefix("two_sample_")
                   for c in out.columns]
    return out


def quality_section(df, out_dir: Path) -> list[str]:
    tr = df[df["kind"] == "train"]
    nll = _ok(tr, "test_nll")
    if nll.empty:
        return []
    lines = ["## Quality after matched training", "",
             "Same splits, batch order, Adam settings and steps for every backend (see the "
             "matrix); NLL in nats in the data's units, mean over seeds ± std where there "
             "are several.", ""]
    for ds, g in tr.groupby("dataset"):
        ok = _label(g[g["status"] == "ok"])
        seeds = _ok(ok, "test_nll").groupby(["arch", "column"])["value"]
        t = (seeds.mean().map("{:.4f}".format) + seeds.apply(
            lambda v: f" ±{v.std(ddof=1):.4f}" if len(v) > 1 else "")).unstack("column")
        steps = _ok(ok, "steps_run")["value"]
        lines += [f"### {ds}: test NLL (nats)", ""]
        ent = _ok(ok, "target_entropy")["value"]
        if len(ent):
            lines += [f"Target entropy {ent.iloc[0]:.4f} nats: a perfect model's NLL; "
                      "NLL - entropy estimates KL(p || q)."]
        if len(steps):
            lines += [f"Adam steps run: {int(steps.min())} to {int(steps.max())} "
                      "(early stopping on validation NLL where the matrix sets patience)."]
        lines += ["", t.fillna("").to_markdown(), ""]
        spread = _spread_table(_ok(ok, "test_nll"))
        if len(spread):
            lines += ["Spread of test NLL between backends (std over backends of their "
                      "mean over seeds) against the spread between seeds (std over seeds, "
                      "averaged over backends); matched training should keep the first "
                      "within the second:", "", spread.to_markdown(floatfmt=".4f"), ""]
        bpd = _ok(ok, "test_bpd").groupby(["arch", "column"])["value"]
        if len(bpd.size()):
            b = (bpd.mean().map("{:.4f}".format) + bpd.apply(
                lambda v: f" ±{v.std(ddof=1):.4f}" if len(v) > 1 else "")).unstack("column")
            lines += [f"{ds}: test bits/dim (uniform dequantisation; the logit transform's "
                      "Jacobian included; NLL above is the same number in nats for the "
                      "dequantised image):", "", b.fillna("").to_markdown(), ""]
        gap = _ok(ok, "entropy_gap")
        if len(gap):
            lines += ["Gap NLL - entropy (nats):", "",
                      gap.pivot_table(index="arch", columns="column", values="value",
                                      aggfunc="mean").to_markdown(floatfmt=".4f"), ""]
        norm = _with_reference(ok, ["normality_ks_mean", "normality_henze_zirkler",
                                    "normality_mardia_skewness",
                                    "normality_mardia_kurtosis_abs_z"], "null_q95")
        if len(norm):
            n_used = _ok(ok, "normality_henze_zirkler")["n_used"]
            multi = (f"Henze-Zirkler and Mardia on {int(n_used.max())} rows; KS on all. HZ "
                     "and Mardia are affine invariant: only KS sees a shifted or scaled "
                     "latent." if len(n_used) else "One dimension: KS and Anderson-Darling "
                     "only.")
            lines += ["Normality of z = f^-1(x_test): statistic (95th percentile of the "
                      "same statistic on true N(0, I) draws of the same size; above it, "
                      f"the latent is detectably not normal). {multi}", "",
                      norm.to_markdown(), ""]
        two = _with_reference(ok, ["two_sample_sliced_wasserstein", "two_sample_ks_mean",
                                   "two_sample_corr_frobenius", "two_sample_mmd_rbf"],
                              "reference")
        if len(two):
            lines += ["Two-sample distances, flow samples against held-out data (the same "
                      "distance between two independent draws of the target: the level of "
                      "a perfect model). Sliced Wasserstein over 128 random directions; "
                      "MMD^2 unbiased, RBF kernel, median-heuristic bandwidth.", "",
                      two.to_markdown(), ""]
        lines += _quality_figures(ok, out_dir, ds)
    return lines


SPEC_FIELDS = ["transform", "conditioner", "direction", "dim", "layers", "hidden", "bins"]


def _text(values: pd.Series) -> pd.Series:
    """Spec values as label text: 5.0 -> "5", missing -> "?"."""
    def one(v):
        if pd.isna(v):
            return "?"
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v)
    return values.map(one).astype(object)


def _measured(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of what ran: what a table's labels have to tell apart (a skipped GPU
    cell or depth is in the problems table, not a label)."""
    return df[df["status"] == "ok"] if "status" in df else df


def _label(rows: pd.DataFrame, keyed=(), columns=("column",), context=None) -> pd.DataFrame:
    """The rows with table labels that keep every measured spec and device apart.

    ``arch`` gets a suffix for each spec field (``SPEC_FIELDS``, less those in ``keyed``,
    which the table keys on itself) that takes several values among that arch's rows in
    ``context`` (default: ``rows``; tables pass every measured row of their results, so
    a label means the same in each of them): layers and hidden as "maf 5x(128,128)", then
    "bins 8", "dim 16", and transform, conditioner or direction by value; an arch
    measured at one spec keeps its plain name. Each of ``columns`` (backend labels) gets
    "@device" when the context spans several devices."""
    if rows.empty:
        return rows
    ctx = rows if context is None else context
    out = {}
    if "arch" in rows and "arch" in ctx:
        fields = [f for f in SPEC_FIELDS if f in rows and f in ctx and f not in keyed]
        arch = rows["arch"].astype(object)
        many = (ctx[fields].groupby(ctx["arch"].astype(object)).nunique() > 1
                if fields else pd.DataFrame())

        def varies(*names):
            hit = pd.Series(False, index=rows.index)
            for f in names:
                if f in many:
                    hit |= arch.map(many[f]).eq(True)
            return hit

        label = arch.astype(str)
        for f in ("transform", "conditioner", "direction"):
            if f in fields:
                label = label.where(~varies(f), label + " " + _text(rows[f]))
        if "layers" in fields or "hidden" in fields:
            depth = (_text(rows["layers"]) if "layers" in rows else "?") + "x"
            if "hidden" in rows:
                depth = depth + "(" + _text(rows["hidden"]).str.replace("x", ",") + ")"
            label = label.where(~varies("layers", "hidden"), label + " " + depth)
        for f in ("bins", "dim"):
            if f in fields:
                label = label.where(~varies(f), label + f" {f} " + _text(rows[f]))
        out["arch"] = label.where(arch.notna(), arch)
    if "device" in rows and "device" in ctx and ctx["device"].nunique() > 1:
        where = "@" + _text(rows["device"])
        out.update({c: rows[c].astype(str) + where for c in columns if c in rows})
    return rows.assign(**out)


def _spread_table(nll: pd.DataFrame) -> pd.DataFrame:
    by = nll.groupby(["arch", "column"])["value"]
    means, stds, counts = by.mean(), by.std(ddof=1), by.size()
    rows = {}
    for arch in means.index.get_level_values("arch").unique():
        m, sd, n = means[arch], stds[arch], counts[arch]
        if len(m) < 2 or (n < 2).any():
            continue
        between, within = float(m.std(ddof=1)), float(sd.mean())
        rows[arch] = {"backends": len(m), "seeds": int(n.min()), "between backends": between,
                      "between seeds": within, "within": "yes" if between <= within else "NO"}
    return pd.DataFrame.from_dict(rows, orient="index")


def _quality_figures(g, out_dir: Path, ds: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    lines = []
    curve = _ok(g, "curve_val_nll")
    if len(curve):
        fig = out_dir / f"curves_{ds}.png"
        grid = sns.relplot(data=curve.assign(backend=curve["column"]), x="step", y="value",
                           hue="backend", col="arch", kind="line", height=2.8,
                           col_wrap=min(4, curve["arch"].nunique()),
                           facet_kws={"sharey": False})
        grid.set_axis_labels("Adam step", "validation NLL (nats)")
        grid.savefig(fig, dpi=100, bbox_inches="tight")
        plt.close(grid.figure)
        lines += [f"![training curves, {ds}]({fig.name})", ""]
    art = out_dir / "artifacts"
    cells = (g[["cell", "arch", "column", "seed"]].drop_duplicates()
             .sort_values(["arch", "column", "seed"]))
    cells = cells.drop_duplicates(["arch", "column"])
    found = [(r.arch, r.column, art / f"{r.cell}.npz") for r in cells.itertuples()
             if (art / f"{r.cell}.npz").exists()]
    if not found:
        return lines
    archs = sorted({a for a, _, _ in found})
    cols = sorted({c for _, c, _ in found})
    where = {(a, c): p for a, c, p in found}
    if "samples" in np.load(found[0][2]).files:
        return lines + _sample_grids(archs, cols, where, out_dir, ds)
    for what, name in (("density", f"densities_{ds}.png"), ("latent", f"latents_{ds}.png")):
        fig, panels = _panels(archs, cols, "truth", where, 2.1)
        for ax, c, path in panels:
            d = np.load(path)
            if what == "density":
                img = d["true"] if c == "truth" else d["learned"]
                ax.imshow(np.exp(img), origin="lower", aspect="auto", cmap="viridis",
                          extent=(d["x"][0], d["x"][-1], d["y"][0], d["y"][-1]))
            elif c == "truth":
                z = np.random.default_rng(0).standard_normal((1000, 2))
                ax.scatter(z[:, 0], z[:, 1], s=1, alpha=0.4, color="grey")
                ax.set_xlim(-4, 4)
                ax.set_ylim(-4, 4)
            else:
                ax.scatter(d["z"][:, 0], d["z"][:, 1], s=1, alpha=0.4)
                ax.set_xlim(-4, 4)
                ax.set_ylim(-4, 4)
        title = ("learned densities (arch x backend)" if what == "density" else
                 "test data mapped to the latent (arch x backend); truth: N(0, I) draws")
        fig.suptitle(f"{ds}: {title}", fontsize=9)
        fig.savefig(out_dir / name, dpi=100, bbox_inches="tight")
        plt.close(fig)
        lines += [f"![{what}, {ds}]({name})", ""]
    return lines


def _panels(archs, cols, first: str, where: dict, size: float):
    """A figure of arch rows x (``first``, *backend) columns; returns it and
    (axis, column, artifact path) for every panel that has an artifact (the ``first``
    column shows the first artifact found: the truth or the data is the same in all)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(archs), len(cols) + 1, squeeze=False,
                             figsize=(size * (len(cols) + 1), size * len(archs)))
    panels = []
    for i, a in enumerate(archs):
        for j, c in enumerate([first] + cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(c, fontsize=8)
            if j == 0:
                ax.set_ylabel(a, fontsize=8)
            path = where.get((a, c)) or (next(iter(where.values())) if c == first else None)
            if path is None:
                ax.axis("off")
            else:
                panels.append((ax, c, path))
    return fig, panels


def _sample_grids(archs, cols, where, out_dir: Path, ds: str) -> list[str]:
    """Image datasets: an 8x8 grid of flow samples per arch x backend beside test images."""
    import matplotlib.pyplot as plt

    def tile(images, levels):
        n = int(np.sqrt(len(images)))
        h, w, c = images.shape[1:]
        grid = images[:n * n].reshape(n, n, h, w, c).transpose(0, 2, 1, 3, 4)
        grid = grid.reshape(n * h, n * w, c).astype(np.float64) / (levels - 1)
        return grid[..., 0] if c == 1 else grid

    fig, panels = _panels(archs, cols, "data", where, 2.4)
    for ax, c, path in panels:
        d = np.load(path)
        ax.imshow(tile(d["data" if c == "data" else "samples"], int(d["levels"])),
                  cmap="gray_r", vmin=0, vmax=1)
    name = f"samples_{ds}.png"
    fig.suptitle(f"{ds}: flow samples (arch x backend, first seed) and test images", fontsize=9)
    fig.savefig(out_dir / name, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [f"![samples, {ds}]({name})", ""]


def _figure(data, x, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import seaborn as sns

    g = sns.relplot(data=data, x=x, y="ms", hue="backend", style="op", col="arch",
                    kind="line", marker="o", col_wrap=min(4, data["arch"].nunique()),
                    height=3.2, facet_kws={"sharey": False})
    g.set(xscale="log", yscale="log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    for ax in g.axes.flat:  # label the measured points, not log-scale minor ticks
        ax.set_xticks(sorted(data[x].unique()))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    g.set_axis_labels(x, "median time (ms)")
    g.figure.suptitle(title, y=1.03)
    g.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(g.figure)


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


def timing_section(df, name: str, peak: float | None) -> list[str]:
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
                      "Median ms ±IQR (x ratio to the fastest in the row).", "", _md(t), ""]
        comp = single_table(df, "compile", "log_prob", dim, batch, 1.0)
        comp_s = single_table(df, "compile", "sample", dim, batch, 1.0)
        if not comp.empty:
            lines += [f"First call minus steady median (s), trace + compile, dim {int(dim)} "
                      f"batch {int(batch)}: `log_prob`", "", _md(comp), "", "`sample`", "",
                      _md(comp_s), ""]
        gf = single_table(df, "gflops", "log_prob", dim, batch, 1.0, "{:.3g}", "median")
        if not gf.empty and peak:
            lines += [f"Conditioner GFLOP/s of `log_prob` (dim {int(dim)}, batch "
                      f"{int(batch)}) against the measured float32 GEMM peak of "
                      f"{peak:.0f} GFLOP/s (benchmarks/flops.py says what is counted):",
                      "", _md(gf), ""]
    return lines


def fastest_by_framework(df) -> pd.DataFrame:
    """Per framework, spec, op, shape and device: the fastest matched backend variant
    against the fastest peer."""
    med = _ok(df, "time", "median")
    if med.empty:
        return pd.DataFrame()
    med = _label(med.assign(
        framework=med["backend"].map(framework),
        side=np.where(med["backend"].isin(list(adapters.MATCHED)), "matched", "peer")),
        ("dim",), context=_measured(df))
    keys = ["framework", "arch", "op", "dim", "batch"] + (["device"] if "device" in med
                                                         else [])
    rows = []
    for key, g in med.groupby(keys, dropna=False):
        fw, arch, op, dim, batch = key[:5]
        best = {s: g[g.side == s].nsmallest(1, "value") for s in ("matched", "peer")}
        if any(b.empty for b in best.values()):
            continue
        m, p = best["matched"].iloc[0], best["peer"].iloc[0]
        rows.append({"framework": fw, "arch": arch, "op": op, "dim": int(dim),
                     "batch": int(batch), "matched": m["column"],
                     "matched ms": m["value"] * 1e3, "peer": p["column"],
                     "peer ms": p["value"] * 1e3, "matched / peer": m["value"] / p["value"]})
    return pd.DataFrame(rows)


def memory_table(df) -> pd.DataFrame:
    """arch x backend: the cell process's peak host memory, MB."""
    mem = _pivot(_label(_ok(df, "peak_host_mem"), context=_measured(df)), aggfunc="max")
    return mem / 2 ** 20


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


def build(results_dir="results", out: str | None = None) -> Path:
    results_dir = Path(results_dir)
    out_path = Path(out) if out else results_dir / "REPORT.md"
    df = load_results(results_dir)
    lines = ["# flowbench report", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M')} from "
             f"{', '.join(sorted(df['source'].unique())) if len(df) else 'no results'} in "
             f"`{results_dir}` by `flowbench report`. Times are medians over repeats, each "
             "call blocked until done, first call (trace + compile) apart; inputs on the "
             "device before timing.", ""]
    if df.empty:
        write_atomic(out_path, "\n".join(lines + ["No results yet: run `flowbench run "
                                                  "quick` first.", ""]))
        return out_path
    lines += environment_section(df)
    peak = _ok(df, "gemm_peak")["value"].max() if len(_ok(df, "gemm_peak")) else None
    lines += quality_section(df, out_path.parent)
    timing = df[df["kind"].isin(["time", "train"])]
    for name, g in timing.groupby("matrix", sort=False):
        lines += [f"## Matrix `{name}`", "",
                  f"Reproduce: `flowbench run {name}` then `flowbench report`.", ""]
        dims, batches = g["dim"].nunique(), g["batch"].nunique()
        if dims > 2 or batches > 2:
            lines += scaling_section(g, out_path.parent, name)
        else:
            lines += timing_section(g, name, peak)
        fast = fastest_by_framework(g)
        if len(fast):
            lines += ["### Fastest matched variant against the fastest peer, per framework",
                      "", fast.to_markdown(index=False, floatfmt=".3g"), ""]
        pt = passes_table(g)
        if len(pt):
            lines += ["### Conditioner passes per layer (`log_prob / sample`), measured", "",
                      pt.to_markdown(), ""]
        mem = memory_table(g)
        if len(mem):
            lines += ["### Peak host memory of the cell's process (MB, frameworks included)",
                      "", mem.to_markdown(floatfmt=".0f"), ""]
    conv = results_dir / "conventions.md"
    if conv.exists():
        text = re.sub(r"^(#+) ", r"#\1 ", conv.read_text(), flags=re.M)  # one level down
        lines += [text, ""]
    lines += problems_section(df)
    write_atomic(out_path, "\n".join(lines))
    return out_path
