"""Quality metrics for trained flows, on plain numpy arrays (no framework imported here).

Everything is computed in float64 whatever the input dtype: flows often run in float32,
and sums of thousands of log-densities or n x n kernel sums lose digits there.

Three families:

- likelihood: `nll`, `bits_per_dim`, `entropy_gap`, and `paired_difference` of two
  models' NLL on the same rows;
- normality of latents z = f^-1(x_test) against N(0, I): `henze_zirkler`, `mardia`,
  per-dimension KS / Anderson-Darling, gathered with a null calibrated at the same n by
  `normality`;
- two-sample distances between flow samples and held-out data: `sliced_wasserstein`,
  `ks_mean`, `corr_frobenius`, `mmd_rbf`, gathered with a reference level by `two_sample`;

plus `invertibility_error` for round trips.

Why a calibrated null and a reference level: with thousands of test points every
normality test rejects every imperfect flow, and a distance of 0.03 means nothing on its
own. Each statistic is therefore reported next to the same statistic computed where the
answer is "perfect" (true N(0, I) draws of the same shape; a second independent sample
of the target), so a reader compares like with like.

Bad input raises ValueError naming the problem; no function returns NaN.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from flowbench.datasets.images import logit_log_jacobian  # noqa: F401  (bits_per_dim's partner)
from scipy import stats
from scipy.spatial.distance import pdist

__all__ = [
    "nll", "bits_per_dim", "logit_log_jacobian", "entropy_gap", "paired_difference",
    "henze_zirkler", "mardia", "ks_normal", "anderson_normal", "normality",
    "sliced_wasserstein", "ks_mean", "corr_frobenius", "median_bandwidth", "mmd_rbf",
    "two_sample",
    "invertibility_error",
]

LN2 = float(np.log(2.0))


# ----------------------------------------------------------------------------- input checks

def _array(name: str, a, ndim: int | None, min_rows: int) -> np.ndarray:
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array: {exc}") from None
    if ndim is None:
        if arr.ndim < 1:
            raise ValueError(f"{name} must have a leading row axis, got a scalar")
    elif arr.ndim != ndim:
        want = "(n,)" if ndim == 1 else "(n, d)"
        raise ValueError(f"{name} must have shape {want}, got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} has too few rows: {arr.shape[0]} (need at least {min_rows})")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        kinds = [k for k, m in (("NaN", np.isnan(arr)), ("inf", np.isinf(arr))) if m.any()]
        raise ValueError(f"{name} contains {' and '.join(kinds)} ({int(bad.sum())} entries, "
                         f"first at index {first if len(first) > 1 else first[0]})")
    return arr


def _rows(name: str, a, min_rows: int = 2) -> np.ndarray:
    return _array(name, a, 1, min_rows)


def _matrix(name: str, a, min_rows: int = 2) -> np.ndarray:
    return _array(name, a, 2, min_rows)


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _same_dim(a_name: str, a: np.ndarray, b_name: str, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"dimension mismatch: {a_name} has {a.shape[1]} columns, "
                         f"{b_name} has {b.shape[1]}")


def _subsample(a: np.ndarray, max_n: int | None, rng: np.random.Generator) -> np.ndarray:
    if max_n is None or a.shape[0] <= max_n:
        return a
    return a[np.sort(rng.choice(a.shape[0], size=max_n, replace=False))]


def _check_full_rank(name: str, z: np.ndarray) -> None:
    # Both HZ and Mardia whiten with the sample covariance; pingouin silently returns
    # hz = 4n for a singular one, which would read as a measured (terrible) fit.
    n, d = z.shape
    if n <= d:
        raise ValueError(f"{name} has {n} rows for {d} dimensions: the sample covariance "
                         f"is singular (need more than {d} rows)")
    sd = z.std(axis=0)
    const = np.flatnonzero(sd <= 1e-12 * max(1.0, float(np.abs(z).max())))
    if const.size:
        raise ValueError(f"{name} has constant column(s) {const.tolist()[:10]}: the sample "
                         f"covariance is singular")
    corr = np.corrcoef(z, rowvar=False) if d > 1 else np.ones((1, 1))
    if np.linalg.cond(corr) > 1e12:
        raise ValueError(f"{name} is (numerically) rank-deficient: its columns are "
                         f"linearly dependent, the sample covariance is singular")


# ----------------------------------------------------------------------------- likelihood

def nll(log_prob, dim: int) -> dict:
    """Mean negative log-likelihood in nats of the rows behind `log_prob` (shape (n,)).

    Returns {"nll", "stderr", "nll_per_dim", "stderr_per_dim", "n"}; stderr is the
    standard error of the mean over rows (sample std with ddof=1 / sqrt(n)).

    To estimate KL(p || q) on draws from a known p with less noise than
    `entropy_gap`, pass the per-row difference: nll(log_q - log_p, dim)["nll"].
    """
    lp = _rows("log_prob", log_prob)
    dim = _positive_int("dim", dim)
    n = lp.shape[0]
    value = float(-lp.mean())
    se = float(lp.std(ddof=1) / np.sqrt(n))
    return {"nll": value, "stderr": se, "nll_per_dim": value / dim,
            "stderr_per_dim": se / dim, "n": n}


def reverse_kl(log_q, log_target, log_z: float | None = None) -> dict:
    """How well draws x_i ~ q fit an unnormalised target p~ = Z p, from log q(x_i) and
    log p~(x_i) (shape (n,) each), with log w = log p~ - log q:

    - ``elbo``: mean(log w), a lower bound on log Z, and its standard error;
    - ``kl``: KL(q || p) = log Z - ELBO where log Z is known (else NaN), same error;
    - ``ess_fraction``: the effective sample size of the self-normalised importance
      weights, (sum w)^2 / sum w^2, as a fraction of n (1: q is p; it falls as q misses
      mass p has);
    - ``log_z_is``: the importance-sampling estimate log mean(w) of log Z.

    Rows whose log q or log p~ is not finite (overflow in the flow, a draw where the
    target's density underflows) are left out of the means and counted in ``dropped``.
    """
    from scipy.special import logsumexp

    lq, lp = np.asarray(log_q, np.float64), np.asarray(log_target, np.float64)
    if lq.ndim != 1 or lq.shape != lp.shape:
        raise ValueError(f"log_q and log_target must have the same shape (n,), got "
                         f"{lq.shape} and {lp.shape}")
    keep = np.isfinite(lq) & np.isfinite(lp)
    if keep.sum() < 2:
        raise ValueError("fewer than 2 draws with finite log q and log p~")
    lw = (lp - lq)[keep]
    n = int(lw.shape[0])
    elbo, se = float(lw.mean()), float(lw.std(ddof=1) / np.sqrt(n))
    ess = float(np.exp(2 * logsumexp(lw) - logsumexp(2 * lw)) / n)
    return {"elbo": elbo, "kl": (float(log_z) - elbo) if log_z is not None else float("nan"),
            "stderr": se, "ess_fraction": ess, "log_z_is": float(logsumexp(lw) - np.log(n)),
            "n": n, "dropped": int((~keep).sum())}


def mode_shares(regions, modes: int) -> list[dict]:
    """The share of draws in each of ``modes`` regions (region index per draw) and its
    binomial standard error."""
    r = np.asarray(regions)
    n = len(r)
    out = []
    for k in range(modes):
        p = float((r == k).mean())
        out.append({"mode": k, "share": p, "stderr": float(np.sqrt(p * (1 - p) / n))})
    return out


def bits_per_dim(log_prob_of_continuous_x, dim: int, *, levels: int = 256,
                 logit_alpha: float | None = None, log_jacobian=None) -> dict:
    """Bits per dimension of discrete images from the flow's continuous log-density.

    Convention (the usual one of RealNVP / Glow papers). Pixels x in {0, ..., levels-1}^D
    are uniformly dequantised and scaled: u = (x + U) / levels, U ~ U[0, 1)^D, so
    u in [0, 1]^D. `log_prob_of_continuous_x` is log p(u), one per row (shape (n,)).
    Undoing the 1/levels scaling gives the density of x + U on [0, levels]^D,
    log p(u) - D log(levels), whose negative is an upper bound on -log P(x) in nats
    (Theis et al. 2016). In bits per dimension:

        bpd = (-log p(u) + D log(levels)) / (D log 2)

    averaged over rows. Sanity value: the uniform density on [0, 1]^D (log p = 0) gives
    exactly log2(levels), i.e. 8 bits/dim for 8-bit images.

    Logit preprocessing. If the flow models y = g(u) instead of u, e.g. RealNVP's
    y = logit(alpha + (1 - 2 alpha) u), pass the flow's log p(y) and, per row,
    `log_jacobian` = log|det dy/du| (for the logit: `logit_log_jacobian(u, alpha)`); then
    log p(u) = log p(y) + log_jacobian. `logit_alpha` records that a logit was used and
    makes the Jacobian mandatory, because the bpd without it is meaningless.

    Returns {"bpd", "stderr", "n", "levels"}.
    """
    lp = _rows("log_prob_of_continuous_x", log_prob_of_continuous_x)
    dim = _positive_int("dim", dim)
    levels = _positive_int("levels", levels, 2)
    if logit_alpha is not None:
        if not 0.0 <= float(logit_alpha) < 0.5:
            raise ValueError(f"logit_alpha must be in [0, 0.5), got {logit_alpha}")
        if log_jacobian is None:
            raise ValueError("logit_alpha given without log_jacobian: pass the per-row "
                             "log|det dy/du| of the logit transform "
                             "(logit_log_jacobian(u, alpha)), else the bpd is wrong")
    if log_jacobian is not None:
        jac = _rows("log_jacobian", log_jacobian, min_rows=1)
        if jac.shape != lp.shape:
            raise ValueError(f"shape mismatch: log_jacobian has shape {jac.shape}, "
                             f"log_prob_of_continuous_x has shape {lp.shape}")
        lp = lp + jac
    per_row = (-lp + dim * np.log(levels)) / (dim * LN2)
    return {"bpd": float(per_row.mean()),
            "stderr": float(per_row.std(ddof=1) / np.sqrt(per_row.shape[0])),
            "n": int(per_row.shape[0]), "levels": levels}


def entropy_gap(test_nll, entropy: float, entropy_se: float = 0.0) -> dict:
    """gap = NLL - H, an estimate of KL(p || q) >= 0 when the test data are draws of p.

    `test_nll` is the dict returned by `nll` (its "nll" and "stderr" are used) or a
    (nll, stderr) pair, in nats over the whole vector (not per dim); `entropy` and
    `entropy_se` are H(p) and its standard error (0 when exact), e.g. from
    `datasets.Dataset.entropy()`. The errors are combined as independent,
    sqrt(se_nll^2 + se_H^2), which holds when H comes from draws separate from the test
    set (as `Dataset.entropy` does). A small negative gap is noise, not a bug.

    Returns {"gap", "stderr", "nll", "entropy"}.
    """
    if isinstance(test_nll, dict):
        missing = {"nll", "stderr"} - set(test_nll)
        if missing:
            raise ValueError(f"test_nll dict lacks {sorted(missing)}: pass the result of nll()")
        value, se = test_nll["nll"], test_nll["stderr"]
    else:
        try:
            value, se = test_nll
        except (TypeError, ValueError):
            raise ValueError("test_nll must be the dict from nll() or a (nll, stderr) pair, "
                             f"got {test_nll!r}") from None
    nums = {"nll": value, "nll stderr": se, "entropy": entropy, "entropy_se": entropy_se}
    for key, v in nums.items():
        try:
            nums[key] = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a number, got {v!r}") from None
        if not np.isfinite(nums[key]):
            raise ValueError(f"{key} is not finite: {v!r}")
    if nums["nll stderr"] < 0 or nums["entropy_se"] < 0:
        raise ValueError("standard errors must be >= 0")
    return {"gap": nums["nll"] - nums["entropy"],
            "stderr": float(np.hypot(nums["nll stderr"], nums["entropy_se"])),
            "nll": nums["nll"], "entropy": nums["entropy"]}


def paired_difference(log_prob_a, log_prob_b) -> dict:
    """NLL of model a minus NLL of model b on the same rows, with its standard error.

    `log_prob_a` and `log_prob_b` (shape (n,)) are the two models' log-densities of the
    same rows in the same order. Per row d = -(log_prob_a - log_prob_b); "diff" is mean(d)
    (positive: a is worse) and "stderr" is std(d, ddof=1) / sqrt(n). Pairing removes the
    noise the rows share, so this error is usually far below either NLL's own. "t" and
    "p" are the paired t statistic (= diff / stderr) and its two-sided p-value
    (`scipy.stats.ttest_rel`); identical differences on every row give t = 0, p = 1 when
    they are all zero and t = +-inf, p = 0 otherwise.

    Returns {"diff", "stderr", "n", "t", "p"}.
    """
    a = _rows("log_prob_a", log_prob_a)
    b = _rows("log_prob_b", log_prob_b)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: log_prob_a has shape {a.shape}, log_prob_b has "
                         f"shape {b.shape}; a paired difference needs the same rows")
    d = b - a
    n = d.shape[0]
    diff, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(n))
    if se > 0:
        res = stats.ttest_rel(b, a)
        t, p = float(res.statistic), float(res.pvalue)
    else:
        t, p = (0.0, 1.0) if diff == 0 else (float(np.copysign(np.inf, diff)), 0.0)
    return {"diff": diff, "stderr": se, "n": n, "t": t, "p": p}


# ----------------------------------------------------------------------------- normality

def henze_zirkler(z, max_n: int | None = 2000, seed: int = 0) -> dict:
    """Henze-Zirkler multivariate normality test (pingouin.multivariate_normality).

    pingouin builds several n x n float64 matrices (about 5 n^2 * 8 bytes at peak: 160 MB
    at n = 2000), so rows are subsampled without replacement to `max_n` (None: all).
    HZ standardises by the sample mean and covariance: it tests "Gaussian with some
    mean and covariance", not N(0, I) itself, so a shifted or rescaled but Gaussian z
    passes; the per-dimension KS test catches those. Needs d >= 2 (pingouin's limit).

    Returns {"hz", "pval", "n", "n_total"}: pval is pingouin's lognormal approximation.
    """
    z = _matrix("z", z, min_rows=3)
    if z.shape[1] < 2:
        raise ValueError(f"Henze-Zirkler needs d >= 2 columns (pingouin's implementation), "
                         f"z has {z.shape[1]}")
    if max_n is not None:
        max_n = _positive_int("max_n", max_n, 3)
    zs = _subsample(z, max_n, np.random.default_rng(seed))
    _check_full_rank("z", zs)
    try:
        import pingouin
    except ImportError:
        raise ValueError("Henze-Zirkler needs pingouin: pip install 'flowbench[stats]'") from None
    hz, pval, _ = pingouin.multivariate_normality(zs)
    return {"hz": float(hz), "pval": float(pval), "n": int(zs.shape[0]),
            "n_total": int(z.shape[0])}


def _whiten(z: np.ndarray) -> np.ndarray:
    """Rows w_i with w_i . w_j = (z_i - zbar)' S^-1 (z_j - zbar), S the biased covariance."""
    y = z - z.mean(axis=0)
    cov = y.T @ y / y.shape[0]
    chol = np.linalg.cholesky(cov)
    return np.linalg.solve(chol, y.T).T


def _sum_cubed_gram(w: np.ndarray) -> float:
    """sum_{i,j} (w_i . w_j)^3 without holding the n x n Gram matrix.

    Equal to the squared Frobenius norm of the third-moment tensor sum_i w_i (x) w_i (x) w_i,
    which costs O(n d^3) instead of O(n^2 d): the cheaper one is used."""
    n, d = w.shape
    total = 0.0
    if d * d <= n:
        tensor = np.zeros((d * d, d))
        step = max(1, 4_000_000 // (d * d))
        for s in range(0, n, step):
            b = w[s:s + step]
            outer = (b[:, :, None] * b[:, None, :]).reshape(b.shape[0], d * d)
            tensor += outer.T @ b
        return float(np.sum(tensor ** 2))
    step = max(1, 4_000_000 // n)
    for s in range(0, n, step):
        total += float(np.sum((w[s:s + step] @ w.T) ** 3))
    return total


def mardia(z) -> dict:
    """Mardia's multivariate skewness and kurtosis with their asymptotic p-values.

    Hand-written: neither pingouin (only Henze-Zirkler) nor scipy has the multivariate
    version. With S the biased sample covariance and m_ij = (z_i - zbar)' S^-1 (z_j - zbar):

        b1 = sum_ij m_ij^3 / n^2,   skewness = n b1 / 6 ~ chi2(d (d+1) (d+2) / 6)
        b2 = sum_i m_ii^2 / n,      kurtosis_z = (b2 - d (d+2)) / sqrt(8 d (d+2) / n) ~ N(0, 1)

    Under normality b1 -> 0 and b2 -> d (d+2) (its exact mean at n is d (d+2) (n-1)/(n+1)).
    Like HZ it is affine invariant (tests "some Gaussian", not N(0, I)). No small-sample
    correction: use n well above 20. All rows are used; `normality` subsamples.

    Returns {"b1", "b2", "skewness", "skewness_df", "skewness_p", "kurtosis_z",
    "kurtosis_p", "n"}; kurtosis_p is two-sided.
    """
    z = _matrix("z", z, min_rows=3)
    _check_full_rank("z", z)
    n, d = z.shape
    w = _whiten(z)
    b1 = _sum_cubed_gram(w) / n ** 2
    b2 = float(np.mean(np.sum(w * w, axis=1) ** 2))
    skew = n * b1 / 6.0
    df = d * (d + 1) * (d + 2) / 6.0
    kz = (b2 - d * (d + 2)) / np.sqrt(8.0 * d * (d + 2) / n)
    return {"b1": float(b1), "b2": b2, "skewness": float(skew), "skewness_df": df,
            "skewness_p": float(stats.chi2.sf(skew, df)), "kurtosis_z": float(kz),
            "kurtosis_p": float(2.0 * stats.norm.sf(abs(kz))), "n": int(n)}


def ks_normal(z) -> np.ndarray:
    """Per-dimension KS statistic of z[:, j] against the fully specified N(0, 1)
    (scipy.stats.kstest): sensitive to location and scale, unlike HZ, Mardia and AD."""
    z = _matrix("z", z)
    return np.atleast_1d(stats.kstest(z, "norm", axis=0).statistic).astype(np.float64)


def anderson_normal(z) -> np.ndarray:
    """Per-dimension Anderson-Darling statistic (scipy.stats.anderson, dist='norm').

    scipy estimates each column's mean and std before testing, so this measures the shape
    of the marginals (skew, tails), not their location or scale. Weighted to the tails,
    where flows most often fail."""
    z = _matrix("z", z, min_rows=8)
    out = np.empty(z.shape[1])
    for j in range(z.shape[1]):
        col = z[:, j]
        if np.ptp(col) == 0.0:
            raise ValueError(f"z column {j} is constant: Anderson-Darling is undefined")
        # method= only picks the p-value (unused) and silences scipy 1.17's FutureWarning.
        out[j] = stats.anderson(col, dist="norm", method="interpolate").statistic
    return out


def _null_row(metric: str, value: float, null: np.ndarray, n: int, detail: str) -> dict:
    # (1 + #{null >= value}) / (1 + R): the Monte Carlo p-value that is valid (never 0) for
    # a finite number R of null replicates; larger statistic = less normal for every row.
    null = np.asarray(null, dtype=np.float64)
    return {"metric": metric, "value": float(value), "null_mean": float(null.mean()),
            "null_q95": float(np.quantile(null, 0.95)),
            "null_p": float((1 + np.sum(null >= value)) / (1 + null.size)),
            "n": int(n), "detail": detail}


def _marginal_stats(z: np.ndarray) -> dict:
    ks, ad = ks_normal(z), anderson_normal(z)
    return {"ks_mean": ks.mean(), "ks_max": ks.max(), "ad_mean": ad.mean(), "ad_max": ad.max()}


def _joint_stats(z: np.ndarray) -> dict:
    m = mardia(z)
    return {"mardia_skewness": m["skewness"], "mardia_kurtosis_abs_z": abs(m["kurtosis_z"])}


def normality(z, seed: int = 0, *, null_draws: int = 20, hz_null_draws: int = 10,
              max_n: int = 2000) -> list[dict]:
    """Normality of latents z (n, d) against N(0, I), each statistic with a null at the same n.

    At large n every test rejects every imperfect flow, so p-values from asymptotic tables
    say little. Instead each statistic is recomputed on `null_draws` (HZ: `hz_null_draws`,
    it is the costly one) independent N(0, I) samples of the same shape, and the row
    reports the null mean, its 95th percentile and the empirical p-value
    (1 + #{null >= value}) / (1 + replicates). A value far above null_q95 is a real
    departure; one inside the null spread is as normal as n points can show.

    Rows (metric: what; larger is always less normal):
      ks_mean, ks_max        per-dim KS vs N(0, 1), mean / max over dims (all n rows);
      ad_mean, ad_max        per-dim Anderson-Darling shape statistic (all n rows);
      mardia_skewness        n b1 / 6 (on min(n, max_n) rows);
      mardia_kurtosis_abs_z  |kurtosis z|, two-sided (on min(n, max_n) rows);
      henze_zirkler          HZ statistic (on min(n, max_n) rows; omitted when d = 1,
                             which pingouin does not support).
    HZ and Mardia are affine invariant: a shifted or rescaled Gaussian z passes them and
    is caught by the KS rows. One subsample (from `seed`) serves HZ and Mardia, whose
    n x n (or n d^3) cost is what max_n bounds.

    Cost: (null_draws + 1) x d Anderson-Darling calls (linear in n) and
    (hz_null_draws + 1) Henze-Zirkler calls (quadratic in min(n, max_n)).

    Returns a list of {"metric", "value", "null_mean", "null_q95", "null_p", "n", "detail"}.
    """
    z = _matrix("z", z, min_rows=8)
    seed = _positive_int("seed", seed, 0)
    null_draws = _positive_int("null_draws", null_draws)
    hz_null_draws = _positive_int("hz_null_draws", hz_null_draws)
    max_n = _positive_int("max_n", max_n, 8)
    n, d = z.shape
    rng = np.random.default_rng(seed)
    zs = _subsample(z, max_n, rng)
    m = zs.shape[0]
    _check_full_rank("z" if m == n else f"z (subsampled to {m} rows)", zs)

    value = {**_marginal_stats(z), **_joint_stats(zs)}
    nulls: dict[str, list[float]] = {k: [] for k in value}
    for _ in range(null_draws):
        g = rng.standard_normal((n, d))
        # the first m rows of an iid N(0, I) sample are an iid sample of m rows
        for k, v in {**_marginal_stats(g), **_joint_stats(g[:m])}.items():
            nulls[k].append(v)

    def detail(rows: int, draws: int) -> str:
        sub = f"; subsampled from {n} rows (max_n={max_n})" if rows < n else ""
        return f"vs N(0, I); null: {draws} N(0, I) draws of shape ({rows}, {d}), seed {seed}{sub}"

    rows = [_null_row(k, value[k], nulls[k], n, detail(n, null_draws))
            for k in ("ks_mean", "ks_max", "ad_mean", "ad_max")]
    rows += [_null_row(k, value[k], nulls[k], m, detail(m, null_draws))
             for k in ("mardia_skewness", "mardia_kurtosis_abs_z")]
    if d >= 2:
        hz = henze_zirkler(zs, max_n=None)["hz"]
        hz_null = [henze_zirkler(rng.standard_normal((m, d)), max_n=None)["hz"]
                   for _ in range(hz_null_draws)]
        rows.append(_null_row("henze_zirkler", hz, hz_null, m, detail(m, hz_null_draws)))
    return rows


# ----------------------------------------------------------------------------- two-sample

def _pair(X, Y, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    X = _matrix("X", X, min_rows)
    Y = _matrix("Y", Y, min_rows)
    _same_dim("X", X, "Y", Y)
    return X, Y


def _directions(d: int, n_directions: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n_directions, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def sliced_wasserstein(X, Y, n_directions: int = 128, seed: int = 0) -> dict:
    """Sliced 1-Wasserstein distance: the mean over `n_directions` random unit directions
    (uniform on the sphere, drawn from `seed`) of scipy.stats.wasserstein_distance between
    the projected samples. In 1-D the direction is +-1, so it is exactly W1.

    Returns {"value", "n_directions", "seed"}."""
    X, Y = _pair(X, Y, 1)
    n_directions = _positive_int("n_directions", n_directions)
    dirs = _directions(X.shape[1], n_directions, seed)
    px, py = X @ dirs.T, Y @ dirs.T
    vals = [stats.wasserstein_distance(px[:, k], py[:, k]) for k in range(n_directions)]
    return {"value": float(np.mean(vals)), "n_directions": n_directions, "seed": seed}


def ks_mean(X, Y) -> dict:
    """Two-sample KS statistic (scipy.stats.ks_2samp) per dimension; mean and max over dims.

    Returns {"value" (the mean), "max"}."""
    X, Y = _pair(X, Y, 1)
    ks = np.atleast_1d(stats.ks_2samp(X, Y, axis=0).statistic).astype(np.float64)
    return {"value": float(ks.mean()), "max": float(ks.max())}


def _corr(name: str, a: np.ndarray) -> np.ndarray:
    const = np.flatnonzero(np.ptp(a, axis=0) == 0.0)
    if const.size:
        raise ValueError(f"{name} has constant column(s) {const.tolist()[:10]}: its "
                         f"correlation is undefined")
    return np.corrcoef(a, rowvar=False)


def corr_frobenius(X, Y) -> dict:
    """Frobenius norm of corr(X) - corr(Y) (Pearson, d x d); 0 for d = 1, where both are [1].

    Returns {"value"}."""
    X, Y = _pair(X, Y)
    if X.shape[1] == 1:
        return {"value": 0.0}
    return {"value": float(np.linalg.norm(_corr("X", X) - _corr("Y", Y), "fro"))}


def median_bandwidth(X, Y, max_n: int = 2000, seed: int = 0) -> float:
    """Median heuristic: the median Euclidean distance between distinct points of the
    pooled sample (each side subsampled to max_n)."""
    X, Y = _pair(X, Y)
    rng = np.random.default_rng(seed)
    pooled = np.vstack([_subsample(X, max_n, rng), _subsample(Y, max_n, rng)])
    h = float(np.median(pdist(pooled)))
    if h <= 0.0:
        raise ValueError("median pairwise distance of the pooled sample is 0 (more than "
                         "half the points coincide): pass bandwidth explicitly")
    return h


def mmd_rbf(X, Y, bandwidth: float | None = None, max_n: int | None = 2000,
            seed: int = 0) -> dict:
    """Unbiased squared MMD with k(x, y) = exp(-|x - y|^2 / (2 h^2)).

    h = `bandwidth`, or by default the median heuristic on the pooled sample
    (`median_bandwidth`). The O(n^2) kernel sums use at most `max_n` rows of each side,
    subsampled without replacement from `seed` (None: all). The estimator
    (Gretton et al. 2012, MMD^2_u) drops the diagonal terms, so it is unbiased and can be
    slightly negative when the distributions match. Kernels from sklearn's rbf_kernel.

    Returns {"value", "bandwidth", "bandwidth_rule", "n_x", "n_y"}.
    """
    from sklearn.metrics.pairwise import rbf_kernel

    X, Y = _pair(X, Y)
    if max_n is not None:
        max_n = _positive_int("max_n", max_n, 2)
    rng = np.random.default_rng(seed)
    Xs, Ys = _subsample(X, max_n, rng), _subsample(Y, max_n, rng)
    if bandwidth is None:
        h, rule = median_bandwidth(Xs, Ys, max_n=None), "median heuristic (pooled)"
    else:
        h, rule = float(bandwidth), "given"
        if not (np.isfinite(h) and h > 0):
            raise ValueError(f"bandwidth must be a positive number, got {bandwidth!r}")
    gamma = 1.0 / (2.0 * h * h)
    m, n = Xs.shape[0], Ys.shape[0]
    kxx, kyy = rbf_kernel(Xs, gamma=gamma), rbf_kernel(Ys, gamma=gamma)
    kxy = rbf_kernel(Xs, Ys, gamma=gamma)
    value = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
             + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
             - 2.0 * kxy.mean())
    return {"value": float(value), "bandwidth": h, "bandwidth_rule": rule,
            "n_x": m, "n_y": n}


def _detail(d: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in d.items() if k != "value")


def two_sample(X, Y, Y_ref: np.ndarray | Callable, seed: int = 0, *, n_directions: int = 128,
               max_n: int = 2000) -> list[dict]:
    """Distances between flow samples X and held-out data Y, each with a reference level.

    The reference is the same statistic between Y_ref, a second sample of the target
    independent of Y, and Y: what "as good as the truth" looks like at these sample
    sizes. `Y_ref` is an array, or a sampler called as Y_ref(n, rng) with
    rng = numpy Generator (the `datasets` density signature), asked for len(X) rows.
    Finite-sample bias depends on n, so X and Y_ref are cut to the same number of rows
    (subsampled from `seed`). Value and reference share the random directions and the
    MMD bandwidth (median heuristic on X and Y pooled), so they measure the same thing.

    Returns rows {"metric", "value", "reference", "detail"} for sliced_wasserstein,
    ks_mean, corr_frobenius, mmd_rbf.
    """
    X, Y = _pair(X, Y)
    seed = _positive_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    if callable(Y_ref):
        try:
            Y_ref = Y_ref(X.shape[0], np.random.default_rng([seed, 1]))
        except Exception as exc:
            raise ValueError(f"Y_ref sampler failed: {type(exc).__name__}: {exc}") from None
    R = _matrix("Y_ref", Y_ref)
    _same_dim("Y_ref", R, "Y", Y)
    k = min(X.shape[0], R.shape[0])
    cut = "".join(f"; {name} cut from {a.shape[0]} to {k} rows"
                  for name, a in (("X", X), ("Y_ref", R)) if a.shape[0] > k)
    X, R = _subsample(X, k, rng), _subsample(R, k, rng)
    sizes = f"n_X={k}, n_Y={Y.shape[0]}, n_ref={k}{cut}"

    rows = []
    sw, sw_ref = (sliced_wasserstein(A, Y, n_directions, seed) for A in (X, R))
    rows.append(("sliced_wasserstein", sw, sw_ref, _detail(sw)))
    ks, ks_ref = ks_mean(X, Y), ks_mean(R, Y)
    rows.append(("ks_mean", ks, ks_ref, f"max={ks['max']:.4g}, ref max={ks_ref['max']:.4g}"))
    cf, cf_ref = corr_frobenius(X, Y), corr_frobenius(R, Y)
    rows.append(("corr_frobenius", cf, cf_ref, "Pearson"))
    h = median_bandwidth(X, Y, max_n=max_n, seed=seed)
    mm, mm_ref = (mmd_rbf(A, Y, bandwidth=h, max_n=max_n, seed=seed) for A in (X, R))
    rows.append(("mmd_rbf", mm, mm_ref,
                 f"unbiased MMD^2, bandwidth={h:.4g} (median heuristic on X, Y pooled), "
                 f"max_n={max_n}"))
    return [{"metric": name, "value": v["value"], "reference": r["value"],
             "detail": f"{det}; {sizes}"} for name, v, r, det in rows]


# ----------------------------------------------------------------------------- round trip

def invertibility_error(x, x_roundtrip) -> dict:
    """Absolute and relative error of a round trip x -> f^-1 -> f (or the reverse).

    Any shape with a leading row axis ((n, d), images (n, C, H, W), ...); both arrays the
    same shape. rel_* divide by the largest |x| (the data's scale), not elementwise, so
    entries near 0 do not blow up; compare them with the dtype's eps (float32: 1.2e-7).
    If x is all zeros, rel_* are 0 for an exact round trip and inf otherwise. A NaN or inf
    in x_roundtrip (a failed inverse) raises, naming where.

    Returns {"max_abs", "mean_abs", "max_rel", "mean_rel", "scale"}."""
    x = _array("x", x, None, min_rows=1)
    xr = _array("x_roundtrip", x_roundtrip, None, min_rows=1)
    if x.shape != xr.shape:
        raise ValueError(f"shape mismatch: x has shape {x.shape}, x_roundtrip has "
                         f"shape {xr.shape}")
    err = np.abs(x - xr)
    scale = float(np.abs(x).max())
    max_abs, mean_abs = float(err.max()), float(err.mean())
    if scale == 0.0:
        rel = (0.0, 0.0) if max_abs == 0.0 else (float("inf"), float("inf"))
    else:
        rel = (max_abs / scale, mean_abs / scale)
    return {"max_abs": max_abs, "mean_abs": mean_abs, "max_rel": rel[0], "mean_rel": rel[1],
            "scale": scale}
