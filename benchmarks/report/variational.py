"""The variational section: flows trained by reverse KL on target densities (vi cells),
and the direction trade-off, the time of a reverse-KL step (sampling direction) against a
maximum-likelihood step (density direction) as dim grows, for IAF and MAF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .figures import _figure, _panels
from .frame import _label, _ok
from .quality import _se_table

KL_TEXT = ("Reverse KL(q || p) = log Z - ELBO in nats from `metric_n` draws of "
           "`sample_and_log_prob`, ± its standard error (std of log w over draws / "
           "sqrt(n)); log Z in closed form or by quadrature (named per target). 0 means q "
           "is the target; reverse KL is mode-seeking, so a flow that drops a mode pays "
           "about log(1 / the mass it keeps), not infinity.")
DIRECTION_OPS = ("train_step", "train_step_reverse_kl")


def vi_section(df, out_dir: Path) -> list[str]:
    vi = df[df["kind"] == "vi"]
    lines = []
    if len(_ok(vi, "elbo")):
        lines += ["## Variational training: reverse KL to a target density", "",
                  "Each backend x arch trained by Adam on the reverse KL E_q[log q - log p~] "
                  "with the same steps, batch of base draws and seed (the matrix), no data. "
                  + KL_TEXT, ""]
        for target, g in vi.groupby("dataset"):
            lines += _target_lines(target, _label(g[g["status"] == "ok"]), out_dir)
            lines += _failed_lines(target, _label(g[g["status"].isin(["failed",
                                                                       "timeout"])]))
        lines += _time_lines(vi)
    lines += direction_section(df[df["kind"] == "time"], out_dir)
    return lines


def _target_lines(target: str, ok: pd.DataFrame, out_dir: Path) -> list[str]:
    from flowbench.datasets import targets

    t = targets.load(target)
    kl = _ok(ok, "reverse_kl")
    what, rows = ("reverse KL (nats)", kl) if len(kl) else ("ELBO (nats)", _ok(ok, "elbo"))
    head = f"### {target}: {what}"
    lines = [head, "", f"{t.description}; log Z = {t.log_z:.5g} ({t.log_z_method})."
             if t.knows_log_z else t.description, "", _se_table(rows).fillna("").to_markdown(),
             ""]
    ess = _ok(ok, "ess_fraction")
    if len(ess):
        table = ess.pivot_table(index="arch", columns="column", values="value", aggfunc="mean")
        lines += [f"{target}: ESS fraction of the self-normalised importance weights "
                  "(ESS / n; 1 when q is the target):", "",
                  table.to_markdown(floatfmt=".3f"), ""]
    modes = _ok(ok, "mode_share")
    if len(modes):
        lines += _mode_lines(target, t, modes)
    if t.dim == 2:
        lines += _samples_figure(target, ok, out_dir)
    return lines


def _failed_lines(target: str, bad: pd.DataFrame) -> list[str]:
    """The cells of a target that did not finish (blank above), each with its reason."""
    bad = bad[bad["metric"] == "status"]
    if bad.empty:
        return []
    return [f"{target}: not finished (blank above): " + "; ".join(
        f"{r.arch} {r.column}: {r.error}" for r in bad.itertuples()), ""]


def _mode_lines(target, t, modes: pd.DataFrame) -> list[str]:
    """Each mode's share of the draws (mode order as in the target's terms), beside the
    target's share; one cell per arch x backend, means over seeds, with the largest of
    the shares' binomial standard errors (of a mean over k seeds: sqrt(mean se^2 / k))."""
    g = modes.groupby(["arch", "column", "mode"])
    shares = pd.DataFrame({"value": g["value"].mean(),
                           "se": g["stderr"].apply(lambda e: float(np.sqrt(
                               np.mean(np.square(e)) / len(e))))})

    def cell(s):
        s = s.sort_index(level="mode")
        return " / ".join(f"{v:.2f}" for v in s["value"]) + f" (±{s['se'].max():.3f})"

    text = shares.groupby(["arch", "column"]).apply(cell)
    want = " / ".join(f"{v:.2f}" for v in t.mode_shares)
    return [f"{target}: mode coverage, each mode's share of the draws (the target's: "
            f"{want}; a mode is where that term of the target is the largest; ± the "
            f"largest standard error of the cell's shares):", "",
            text.unstack("column").fillna("").to_markdown(), ""]


def _samples_figure(target: str, ok: pd.DataFrame, out_dir: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    art = out_dir / "artifacts"
    cells = (ok[["cell", "arch", "column", "seed"]].drop_duplicates()
             .sort_values(["arch", "column", "seed"]).drop_duplicates(["arch", "column"]))
    where = {(r.arch, r.column): art / f"{r.cell}.vi.npz" for r in cells.itertuples()
             if (art / f"{r.cell}.vi.npz").exists()}
    if not where:
        return []
    archs = sorted({a for a, _ in where})
    cols = sorted({c for _, c in where})
    fig, panels = _panels(archs, cols, "target", where, 2.1)
    for ax, c, path in panels:
        d = np.load(path)
        extent = (d["x"][0], d["x"][-1], d["y"][0], d["y"][-1])
        if c == "target":
            ax.imshow(np.exp(d["true"] - d["true"].max()), origin="lower", aspect="auto",
                      cmap="viridis", extent=extent)
        else:
            s = d["samples"]
            ax.scatter(s[:, 0], s[:, 1], s=1, alpha=0.3)
            ax.set_xlim(extent[:2])
            ax.set_ylim(extent[2:])
    name = f"vi_samples_{target}.png"
    fig.suptitle(f"{target}: flow samples (arch x backend, first seed) beside the target "
                 "density", fontsize=9)
    fig.savefig(out_dir / name, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [f"![samples against the target, {target}]({name})", ""]


def _time_lines(vi: pd.DataFrame) -> list[str]:
    med = _label(_ok(vi, "time", "median"))
    if med.empty:
        return []
    med = med.assign(ms=med["value"] * 1e3)
    batch = ", ".join(str(int(b)) for b in sorted(med["batch"].dropna().unique()))
    lines = []
    for op, g in med.groupby("op"):
        t = g.pivot_table(index=["dataset", "arch"], columns="column", values="ms",
                          aggfunc="median").reset_index()
        lines += [f"### `{op}`: median ms per call (batch {batch})", "",
                  t.to_markdown(index=False, floatfmt=".3g"), ""]
    return lines


def direction_section(time_rows: pd.DataFrame, out_dir: Path) -> list[str]:
    """IAF and MAF: the reverse-KL step (x = forward(z): one pass per layer for IAF, dim
    for MAF) against the maximum-likelihood step (z = inverse(x): one for MAF, dim for
    IAF), measured in the same cells, against dim."""
    med = _ok(time_rows, "time", "median")
    med = med[med["op"].isin(DIRECTION_OPS) & med["arch"].isin(["iaf", "maf"])]
    both = med.groupby(["arch", "column"])["op"].nunique()
    if med.empty or med["dim"].nunique() < 2 or both.max() < 2:
        return []
    med = med.assign(ms=med["value"] * 1e3, backend=med["column"],
                     dim=med["dim"].astype(int))
    t = med.pivot_table(index=["arch", "column", "op"], columns="dim", values="ms",
                        aggfunc="median")
    ratio = (t.xs("train_step_reverse_kl", level="op") / t.xs("train_step", level="op"))
    t, ratio = t.reset_index(), ratio.reset_index()
    batch = ", ".join(str(int(b)) for b in sorted(med["batch"].dropna().unique()))
    fig = out_dir / "vi_direction_dim.png"
    _figure(med, "dim", fig, f"reverse-KL step against maximum-likelihood step (batch {batch})")
    return ["## The direction trade-off: reverse-KL step against maximum-likelihood step",
            "", "Median ms per Adam step, measured side by side in the same cell at each "
            f"dim (batch {batch}). The reverse-KL step samples (x = forward(z)): IAF's one "
            "pass per layer, MAF's `dim`; the maximum-likelihood step evaluates the density "
            "(z = inverse(x)): MAF's one pass, IAF's `dim`.", "",
            f"![reverse-KL against maximum-likelihood step]({fig.name})", "",
            t.to_markdown(index=False, floatfmt=".3g"), "",
            "Reverse-KL step / maximum-likelihood step (above 1: sampling is the slow "
            "direction):", "", ratio.to_markdown(index=False, floatfmt=".3g"), ""]
