"""The quality section: test NLL over seeds, its spread between backends and seeds, bits
per dimension, the entropy gap, normality of the latent and two-sample distances."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .figures import _quality_figures
from .frame import _label, _ok


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
