"""The quality section: test NLL with its standard error, over seeds with their spread,
paired differences between backends on the same test rows, the spread between backends
and seeds, bits per dimension, the entropy gap, normality of the latent and two-sample
distances."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from flowbench import adapters

from .. import metrics
from ..training import LOG_DENSITY_SUFFIX
from .figures import _quality_figures
from .frame import _label, _ok

SE_TEXT = ("± is the standard error from the test rows (std over rows / sqrt(n)); over "
           "several seeds, the mean over seeds ± the standard error of that mean, "
           "sqrt(sum SE_i^2) / k, and after it `sd`, the standard deviation over seeds "
           "(the spread training seeds and splits add, which the rows' SE does not hold).")


def combine_seeds(values, stderrs) -> dict:
    """One estimate per seed (its value and standard error, seeds independent) as one:
    {"mean": mean over the k seeds, "stderr": sqrt(sum se_i^2) / k (the standard error of
    that mean; NaN when a seed's is unknown), "sd": std over seeds (ddof=1; NaN for one
    seed), "k"}."""
    v = np.asarray(values, np.float64)
    se = np.asarray(stderrs, np.float64)
    k = len(v)
    return {"mean": float(v.mean()), "stderr": float(np.sqrt(np.sum(se ** 2)) / k),
            "sd": float(v.std(ddof=1)) if k > 1 else float("nan"), "k": k}


def _estimate_text(c: dict, signed: bool = False) -> str:
    """'3.5312 ±0.0141' (SE), then ' sd 0.0252' over several seeds."""
    txt = f"{c['mean']:+.4f}" if signed else f"{c['mean']:.4f}"
    if np.isfinite(c["stderr"]):
        txt += f" ±{c['stderr']:.4f}"
    if c["k"] > 1:
        txt += f" sd {c['sd']:.4f}"
    return txt


def _se_table(rows: pd.DataFrame) -> pd.DataFrame:
    """arch x column of 'mean ±SE (sd over seeds)' (``combine_seeds``) of one metric's rows."""
    se = rows["stderr"] if "stderr" in rows else pd.Series(np.nan, index=rows.index)
    cells = {}
    for (arch, col), g in rows.assign(stderr=se).groupby(["arch", "column"]):
        cells.setdefault(col, {})[arch] = _estimate_text(
            combine_seeds(g["value"], g["stderr"]))
    return pd.DataFrame(cells).sort_index().sort_index(axis=1).rename_axis(
        index="arch", columns="column")


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


def overflow_lines(ok) -> list[str]:
    """Cells whose flow overflowed on test rows (log q = -inf): their NLL is +inf, and
    how many rows did it is said, never averaged away."""
    over = _ok(ok, "overflowed_log_prob")
    over = over[over["value"] > 0]
    if over.empty:
        return []
    return ["Overflow (log q = -inf on test rows, so the NLL above is inf): " + "; ".join(
        f"{r.column} {r.arch} seed {int(r.seed) if r.seed == r.seed else '?'}: "
        f"{int(r.value)} of {int(r.n_used)} rows" for r in over.itertuples()), ""]


def quality_section(df, out_dir: Path) -> list[str]:
    tr = df[df["kind"] == "train"]
    nll = _ok(tr, "test_nll")
    if nll.empty:
        return []
    lines = ["## Quality after matched training", "",
             "Same splits, batch order, Adam settings and steps for every backend (see the "
             f"matrix); NLL in nats in the data's units. {SE_TEXT}", ""]
    for ds, g in tr.groupby("dataset"):
        ok = _label(g[g["status"] == "ok"])
        t = _se_table(_ok(ok, "test_nll"))
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
        lines += overflow_lines(ok)
        lines += paired_section(ok, out_dir / "artifacts", ds)
        spread = _spread_table(_ok(ok, "test_nll"))
        if len(spread):
            lines += ["Spread of test NLL between backends (std over backends of their "
                      "mean over seeds) against the spread between seeds (std over seeds, "
                      "averaged over backends); matched training should keep the first "
                      "within the second:", "", spread.to_markdown(floatfmt=".4f"), ""]
        bpd = _ok(ok, "test_bpd")
        if len(bpd):
            b = _se_table(bpd)
            lines += [f"{ds}: test bits/dim (uniform dequantisation; the logit transform's "
                      "Jacobian included; NLL above is the same number in nats for the "
                      "dequantised image):", "", b.fillna("").to_markdown(), ""]
        gap = _ok(ok, "entropy_gap")
        if len(gap):
            lines += ["Gap NLL - entropy (nats; ± its standard error, the NLL's and the "
                      "entropy estimate's combined; sd over seeds as above):", "",
                      _se_table(gap).fillna("").to_markdown(), ""]
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


def _reference_order(rows: pd.DataFrame):
    """Sort key of a paired table's reference: the first matched backend in registry order
    (torch, jax, tfp), its plain variant first; then peers, by name."""
    order = list(adapters.MATCHED)

    def key(r):
        b = str(r["backend"])
        return (order.index(b) if b in order else len(order), "/" in str(r["column"]),
                str(r["column"]))
    return key


def _log_density(art: Path, cell: str):
    """A cell's saved per-row test log-densities (benchmarks/training.py), or None."""
    for path in (art / f"{cell}.npz", art / f"{cell}{LOG_DENSITY_SUFFIX}.npz"):
        if path.exists():
            with np.load(path) as d:
                if "test_log_density" in d.files:
                    return np.asarray(d["test_log_density"], np.float64)
    return None


def paired_section(ok: pd.DataFrame, art: Path, ds: str) -> list[str]:
    """Paired NLL differences between backends on the same test rows, per arch label.

    Every backend of a train cell evaluates on the same deterministic test split (same
    dataset, seed and sizes), so per seed d = -(log p_col - log p_ref) row by row
    (``metrics.paired_difference``); seeds combine as in ``combine_seeds``. The reference
    of each arch is its first matched backend in registry order (torch, then jax, then
    tfp; the plain variant first), else the first peer by name: a fixed choice, not the
    best, so that a table is read the same way in every run. A difference within 2 SE is
    marked "(n.s.)", a larger one "(sig.)". Reads ``art/{cell}.npz`` (or
    ``{cell}.log_density.npz``); results without them get one line saying so."""
    nll = _ok(ok, "test_nll")
    if nll.empty:
        return []
    cells = nll.drop_duplicates(["arch", "column", "seed"], keep="last")
    lps = {r.Index: _log_density(art, str(r.cell)) for r in cells.itertuples()}
    have = cells[[lps[i] is not None for i in cells.index]]
    if have.empty:
        return [f"Paired differences: no per-row test log-densities saved for {ds} (results "
                "from before `test_log_density` was written to the cells' artifacts): rerun "
                "the cells to compare backends on the same rows.", ""]
    table, refs, mismatched = {}, set(), 0
    key = _reference_order(have)
    for arch, g in have.groupby("arch", sort=True):
        ref_row = min((r for _, r in g.iterrows()), key=key)
        ref = ref_row["column"]
        refs.add(ref)
        table.setdefault(ref, {})[arch] = "reference"
        base = {r["seed"]: lps[i] for i, r in g[g["column"] == ref].iterrows()}
        for col, h in g[g["column"] != ref].groupby("column"):
            per_seed = []
            for i, r in h.iterrows():
                b = base.get(r["seed"])
                if b is None:
                    continue
                if b.shape != lps[i].shape:
                    mismatched += 1
                    continue
                per_seed.append(metrics.paired_difference(lps[i], b))
            if not per_seed:
                continue
            c = combine_seeds([p["diff"] for p in per_seed], [p["stderr"] for p in per_seed])
            mark = "(n.s.)" if abs(c["mean"]) <= 2 * c["stderr"] else "(sig.)"
            table.setdefault(col, {})[arch] = f"{_estimate_text(c, signed=True)} {mark}"
    vs = f"`{next(iter(refs))}`" if len(refs) == 1 else "the row's `reference`"
    t = pd.DataFrame(table).sort_index().rename_axis(index="arch")
    t = t[sorted(t.columns, key=lambda c: (c not in refs, c))].fillna("")
    lines = [f"{ds}: paired NLL difference vs {vs} (nats, ± SE)", "",
             "NLL of the column minus that of the reference on the same test rows, "
             "mean of -(log p_column - log p_reference) per row, ± std(d, ddof=1) / sqrt(n) "
             "(pairing removes the noise the two share); several seeds combine as above "
             "(± of the mean over seeds, `sd` over seeds). Reference: the first matched "
             "backend (torch, jax, tfp order). (n.s.): within 2 SE of zero, not "
             "significant; (sig.): beyond 2 SE, significant.", "", t.to_markdown(), ""]
    missing = len(cells) - len(have)
    if missing:
        lines += [f"{missing} of {len(cells)} cells have no saved test log-densities (older "
                  "results): left out of the paired table.", ""]
    if mismatched:
        lines += [f"{mismatched} pair(s) left out: different numbers of test rows.", ""]
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
