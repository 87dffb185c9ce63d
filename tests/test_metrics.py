"""Quality metrics on cases whose answer is known in closed form, and their refusal of bad
input. Seeds are fixed, so every stochastic assertion is deterministic; tolerances are
still set from the estimators' standard errors so a seed change would not break them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import pdist

from flowbench.benchmarks import metrics as M

LOG_2PI_E = np.log(2 * np.pi * np.e)
NORMALITY_KEYS = {"metric", "value", "null_mean", "null_q95", "null_p", "n", "detail"}
TWO_SAMPLE_KEYS = {"metric", "value", "reference", "detail"}


def normal_logpdf(x, mu=0.0):
    return stats.norm.logpdf(x, loc=mu).sum(axis=1)


# ----------------------------------------------------------------------------- likelihood

def test_nll_of_true_density_is_the_entropy():
    d, n = 3, 20_000
    x = np.random.default_rng(0).standard_normal((n, d))
    r = M.nll(normal_logpdf(x), d)
    assert r["n"] == n
    assert abs(r["nll"] - d * 0.5 * LOG_2PI_E) < 3 * r["stderr"]
    assert r["nll_per_dim"] == pytest.approx(r["nll"] / d)
    assert abs(r["nll_per_dim"] - 0.5 * LOG_2PI_E) < 3 * r["stderr_per_dim"]


def test_nll_is_float64_even_for_float32_input():
    lp = np.full(10, -1.1, dtype=np.float32)
    r = M.nll(lp, 1)
    assert isinstance(r["nll"], float)
    assert r["nll"] == pytest.approx(1.1, rel=1e-7)


@pytest.mark.parametrize("levels, expected", [(256, 8.0), (16, 4.0), (2, 1.0)])
def test_bpd_of_uniform_density_is_log2_levels(levels, expected):
    r = M.bits_per_dim(np.zeros(50), dim=3 * 8 * 8, levels=levels)
    assert r["bpd"] == pytest.approx(expected, abs=1e-12)
    assert r["stderr"] == 0.0


def test_bpd_of_density_twice_as_concentrated_saves_one_bit():
    # p = 2^D on [0, 1/2]^D: log p(u) = D log 2, one bit per dim better than uniform
    dim = 12
    r = M.bits_per_dim(np.full(7, dim * np.log(2.0)), dim)
    assert r["bpd"] == pytest.approx(7.0, abs=1e-12)


def test_logit_log_jacobian_matches_finite_differences():
    alpha, eps = 0.05, 1e-6
    u = np.random.default_rng(1).uniform(0.01, 0.99, size=(5, 4))
    g = lambda v: np.log(alpha + (1 - 2 * alpha) * v) - np.log1p(-(alpha + (1 - 2 * alpha) * v))
    numeric = np.log((g(u + eps) - g(u - eps)) / (2 * eps)).sum(axis=1)
    np.testing.assert_allclose(M.logit_log_jacobian(u, alpha), numeric, rtol=1e-6)


def test_bpd_with_logit_recovers_uniform():
    # The flow models y = logit(...) and is exactly the pushforward of the uniform u:
    # log p(y) = log p(u) - log|dy/du| = -log|dy/du|. With the Jacobian added back: 8 bits.
    alpha, dim = 0.05, 16
    u = np.random.default_rng(2).uniform(size=(100, dim))
    jac = M.logit_log_jacobian(u, alpha)
    r = M.bits_per_dim(-jac, dim, logit_alpha=alpha, log_jacobian=jac)
    assert r["bpd"] == pytest.approx(8.0, abs=1e-12)
    # forgetting the Jacobian would give a wrong number: it is refused instead
    with pytest.raises(ValueError, match="log_jacobian"):
        M.bits_per_dim(-jac, dim, logit_alpha=alpha)
    with pytest.raises(ValueError, match="shape mismatch"):
        M.bits_per_dim(-jac, dim, log_jacobian=jac[:-1])


def test_entropy_gap_arithmetic():
    r = M.entropy_gap({"nll": 3.0, "stderr": 0.03}, 2.5, 0.04)
    assert r["gap"] == pytest.approx(0.5)
    assert r["stderr"] == pytest.approx(0.05)
    assert M.entropy_gap((3.0, 0.03), 2.5)["stderr"] == pytest.approx(0.03)


def test_entropy_gap_estimates_kl():
    # p = N(0, 1), q = N(mu, 1): KL(p || q) = mu^2 / 2
    mu, n = 0.5, 20_000
    x = np.random.default_rng(3).standard_normal((n, 1))
    r = M.entropy_gap(M.nll(normal_logpdf(x, mu), 1), 0.5 * LOG_2PI_E, 0.0)
    assert abs(r["gap"] - mu ** 2 / 2) < 3 * r["stderr"]


# ----------------------------------------------------------------------------- normality

@pytest.fixture(scope="module")
def latents():
    rng = np.random.default_rng(4)
    return {"normal": rng.standard_normal((2000, 3)),
            "exponential": rng.exponential(size=(2000, 3)) - 1.0}


def run_normality(z):
    return {r["metric"]: r for r in M.normality(z, seed=5, null_draws=20, hz_null_draws=5,
                                                   max_n=500)}


@pytest.fixture(scope="module")
def normality_rows(latents):
    return {name: run_normality(z) for name, z in latents.items()}


def test_mardia_of_normal_data():
    n, d = 5000, 3
    m = M.mardia(np.random.default_rng(6).standard_normal((n, d)))
    assert m["n"] == n and m["skewness_df"] == d * (d + 1) * (d + 2) / 6
    # E[b1] ~ d(d+1)(d+2)/n, sd(b2) ~ sqrt(8 d (d+2) / n)
    assert m["b1"] < 3 * d * (d + 1) * (d + 2) / n
    assert abs(m["b2"] - d * (d + 2)) < 3 * np.sqrt(8 * d * (d + 2) / n)
    assert m["skewness_p"] > 0.01 and m["kurtosis_p"] > 0.01


def test_mardia_in_one_dimension_is_univariate_skew_and_kurtosis():
    x = np.random.default_rng(7).gamma(3.0, size=(400, 1))
    m = M.mardia(x)
    assert m["b1"] == pytest.approx(stats.skew(x[:, 0]) ** 2, rel=1e-10)
    assert m["b2"] == pytest.approx(stats.kurtosis(x[:, 0], fisher=False), rel=1e-10)


def test_mardia_is_affine_invariant_and_both_paths_agree():
    rng = np.random.default_rng(8)
    z = rng.standard_t(5, size=(30, 7))   # d^2 > n: the n x n path
    a = rng.standard_normal((7, 7)) + 3 * np.eye(7)
    m1, m2 = M.mardia(z), M.mardia(z @ a + 2.0)
    assert m1["b1"] == pytest.approx(m2["b1"], rel=1e-8)
    assert m1["b2"] == pytest.approx(m2["b2"], rel=1e-8)
    w = rng.standard_normal((300, 4))     # d^2 <= n: the moment-tensor path
    assert M._sum_cubed_gram(w) == pytest.approx(np.sum((w @ w.T) ** 3), rel=1e-10)
    assert M._sum_cubed_gram(z) == pytest.approx(np.sum((z @ z.T) ** 3), rel=1e-10)


def test_henze_zirkler_subsamples_and_matches_pingouin():
    pingouin = pytest.importorskip("pingouin")
    z = np.random.default_rng(9).standard_normal((300, 2))
    r = M.henze_zirkler(z, max_n=100, seed=0)
    assert (r["n"], r["n_total"]) == (100, 300)
    full = M.henze_zirkler(z, max_n=None)
    assert full["n"] == 300
    assert full["hz"] == pytest.approx(pingouin.multivariate_normality(z).hz)
    assert full["pval"] > 0.01


def test_normal_latents_are_not_rejected(normality_rows):
    rows = normality_rows["normal"]
    assert set(rows) == {"ks_mean", "ks_max", "ad_mean", "ad_max", "mardia_skewness",
                         "mardia_kurtosis_abs_z", "henze_zirkler"}
    # Each row alone lands beyond all 20 null replicates 1 time in 21 (this sample does
    # for two rows), so the checks are: no value far outside the null, and most rows
    # inside its range; a departure looks like the exponential case below, 3x and more.
    for r in rows.values():
        assert set(r) == NORMALITY_KEYS
        assert r["value"] < 1.5 * r["null_q95"], r
    assert sum(r["null_p"] > 0.05 for r in rows.values()) >= 4
    assert rows["ks_mean"]["n"] == 2000
    assert rows["henze_zirkler"]["n"] == rows["mardia_skewness"]["n"] == 500
    assert "5 N(0, I) draws of shape (500, 3)" in rows["henze_zirkler"]["detail"]


def test_skewed_latents_are_separated_from_the_null(normality_rows):
    for r in normality_rows["exponential"].values():
        assert r["value"] > 3 * r["null_q95"], r
        assert r["null_p"] == pytest.approx(1 / 21 if r["metric"] != "henze_zirkler" else 1 / 6)


def test_shifted_latents_caught_by_ks_not_by_affine_invariant_tests(latents, normality_rows):
    shifted = run_normality(latents["normal"] + 0.3)
    base = normality_rows["normal"]
    for k in ("ks_mean", "ks_max"):
        assert shifted[k]["value"] > 3 * shifted[k]["null_q95"]
        assert shifted[k]["null_p"] == pytest.approx(1 / 21)
    # same seed -> same subsample and null draws: the affine-invariant rows do not move
    for k in ("ad_mean", "mardia_skewness", "mardia_kurtosis_abs_z", "henze_zirkler"):
        assert shifted[k]["value"] == pytest.approx(base[k]["value"], rel=1e-8)


def test_normality_in_one_dimension_has_no_hz_row():
    z = np.random.default_rng(10).standard_normal((200, 1))
    rows = M.normality(z, seed=0, null_draws=5, hz_null_draws=2)
    assert "henze_zirkler" not in {r["metric"] for r in rows}
    with pytest.raises(ValueError, match="d >= 2"):
        M.henze_zirkler(z)


# ----------------------------------------------------------------------------- two-sample

@pytest.fixture(scope="module")
def gauss():
    rng = np.random.default_rng(11)
    return [rng.standard_normal((1500, 2)) for _ in range(3)]


def test_two_sample_same_distribution_sits_at_the_reference(gauss):
    x, y, y2 = gauss
    rows = M.two_sample(x, y, y2, seed=0)
    assert [r["metric"] for r in rows] == ["sliced_wasserstein", "ks_mean",
                                           "corr_frobenius", "mmd_rbf"]
    for r in rows:
        assert set(r) == TWO_SAMPLE_KEYS
        assert abs(r["value"]) < 2.5 * abs(r["reference"]) + 1e-3, r
    assert "n_directions=128" in rows[0]["detail"]
    assert "median heuristic" in rows[3]["detail"]


def test_two_sample_shift_is_clearly_above_the_reference(gauss):
    x, y, _ = gauss
    sampler = lambda n, rng: rng.standard_normal((n, 2))
    rows = {r["metric"]: r for r in M.two_sample(x + 0.5, y, sampler, seed=0)}
    for k in ("sliced_wasserstein", "ks_mean", "mmd_rbf"):
        assert rows[k]["value"] > 5 * abs(rows[k]["reference"]), rows[k]
    # a shift leaves correlations alone
    assert rows["corr_frobenius"]["value"] < 0.2


def test_two_sample_cuts_to_equal_sizes_and_says_so(gauss):
    x, y, y2 = gauss
    rows = M.two_sample(x[:700], y, y2, seed=0)
    assert "Y_ref cut from 1500 to 700 rows" in rows[0]["detail"]


def test_sliced_wasserstein_of_a_shift():
    delta = 0.7
    y = np.random.default_rng(12).standard_normal((1000, 1))
    # 1-D: the only directions are +-1 and W1 between a sample and its shift is |delta|
    r = M.sliced_wasserstein(y + delta, y, n_directions=16)
    assert r["value"] == pytest.approx(delta, rel=1e-12)
    assert r["n_directions"] == 16
    y2 = np.random.default_rng(13).standard_normal((4000, 1))
    assert M.sliced_wasserstein(y2 - delta, y)["value"] == pytest.approx(delta, abs=0.06)
    # 2-D shift along an axis: the mean of |cos| over the circle is 2 / pi
    y3 = np.random.default_rng(14).standard_normal((1000, 2))
    r = M.sliced_wasserstein(y3 + [delta, 0.0], y3, n_directions=512)
    assert r["value"] == pytest.approx(delta * 2 / np.pi, rel=0.05)


def test_ks_and_corr_of_identical_samples_are_zero(gauss):
    x = gauss[0]
    assert M.ks_mean(x, x)["value"] == 0.0
    assert M.corr_frobenius(x, x)["value"] == 0.0
    assert M.corr_frobenius(x[:, :1], gauss[1][:, :1])["value"] == 0.0


def test_corr_frobenius_known_correlation():
    # corr(X) has rho off the diagonal, corr(Y) ~ I: the norm is sqrt(2) rho
    rho, n = 0.6, 20_000
    rng = np.random.default_rng(15)
    x = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=n)
    y = rng.standard_normal((n, 2))
    assert M.corr_frobenius(x, y)["value"] == pytest.approx(np.sqrt(2) * rho, abs=0.03)


def test_mmd_closed_form_for_gaussians():
    # P = N(0, I), Q = N(m, I), kernel bandwidth h: with c = (h^2 / (h^2 + 2))^(d/2),
    # MMD^2 = 2 c (1 - exp(-|m|^2 / (2 (h^2 + 2)))).
    d, h, m = 2, 1.0, 1.0
    c = (h ** 2 / (h ** 2 + 2)) ** (d / 2)
    exact = 2 * c * (1 - np.exp(-m ** 2 / (2 * (h ** 2 + 2))))
    rng = np.random.default_rng(16)
    x, y = rng.standard_normal((2000, d)), rng.standard_normal((2000, d))
    r = M.mmd_rbf(x + [m, 0.0], y, bandwidth=h)
    assert r["value"] == pytest.approx(exact, abs=0.01)
    assert r["bandwidth_rule"] == "given"
    same = M.mmd_rbf(x, y)
    assert abs(same["value"]) < 2e-3
    assert same["bandwidth"] == pytest.approx(np.median(pdist(np.vstack([x, y]))))


def test_mmd_subsamples_to_max_n(gauss):
    r = M.mmd_rbf(gauss[0], gauss[1], max_n=300)
    assert (r["n_x"], r["n_y"]) == (300, 300)


# ----------------------------------------------------------------------------- round trip

def test_invertibility_error():
    x = np.random.default_rng(17).standard_normal((50, 3, 4, 4))  # images are fine too
    r = M.invertibility_error(x, x.copy())
    assert r["max_abs"] == r["mean_abs"] == r["max_rel"] == 0.0
    r = M.invertibility_error(x, x + 1e-3)
    assert r["max_abs"] == pytest.approx(1e-3) and r["mean_abs"] == pytest.approx(1e-3)
    assert r["max_rel"] == pytest.approx(1e-3 / np.abs(x).max())


# ----------------------------------------------------------------------------- bad input

Z = np.random.default_rng(18).standard_normal((100, 3))
Z_NAN = Z.copy()
Z_NAN[7, 1] = np.nan
Z_RANKDEF = np.column_stack([Z, Z[:, 0] + Z[:, 1]])
BAD = [
    ("nll 2-D", lambda: M.nll(np.zeros((5, 2)), 2), r"shape \(n,\)"),
    ("nll NaN", lambda: M.nll(np.array([0.0, np.nan, 1.0]), 1), "log_prob contains NaN"),
    ("nll -inf", lambda: M.nll(np.array([0.0, -np.inf]), 1), "contains inf"),
    ("nll one row", lambda: M.nll(np.zeros(1), 1), "too few rows"),
    ("nll dim", lambda: M.nll(np.zeros(4), 0), "dim must be"),
    ("bpd levels", lambda: M.bits_per_dim(np.zeros(4), 3, levels=1), "levels"),
    ("gap dict", lambda: M.entropy_gap({"nll": 1.0}, 0.5), "stderr"),
    ("gap nan", lambda: M.entropy_gap((np.nan, 0.1), 0.5), "not finite"),
    ("normality NaN", lambda: M.normality(Z_NAN), r"z contains NaN .*first at index \(7, 1\)"),
    ("normality rank", lambda: M.normality(Z_RANKDEF), "rank-deficient"),
    ("normality const", lambda: M.normality(np.column_stack([Z, np.ones(100)])), "constant"),
    ("normality 1-D", lambda: M.normality(Z[:, 0]), r"shape \(n, d\)"),
    ("normality rows", lambda: M.normality(Z[:5]), "too few rows"),
    ("mardia n<=d", lambda: M.mardia(Z[:3]), "singular"),
    ("hz NaN", lambda: M.henze_zirkler(Z_NAN), "NaN"),
    ("hz rank", lambda: M.henze_zirkler(Z_RANKDEF), "rank-deficient"),
    ("sw dims", lambda: M.sliced_wasserstein(Z, Z[:, :2]), "dimension mismatch"),
    ("ks NaN", lambda: M.ks_mean(Z_NAN, Z), "X contains NaN"),
    ("corr const", lambda: M.corr_frobenius(Z, np.column_stack([Z[:, :2], np.ones(100)])),
     "Y has constant column"),
    ("mmd bandwidth", lambda: M.mmd_rbf(Z, Z, bandwidth=-1.0), "bandwidth"),
    ("two-sample ref dims", lambda: M.two_sample(Z, Z, Z[:, :2]), "dimension mismatch"),
    ("two-sample sampler", lambda: M.two_sample(Z, Z, lambda n, rng: 1 / 0), "sampler failed"),
    ("roundtrip shape", lambda: M.invertibility_error(Z, Z[:50]), "shape mismatch"),
    ("roundtrip NaN", lambda: M.invertibility_error(Z, Z_NAN), "x_roundtrip contains NaN"),
    ("strings", lambda: M.ks_mean([["a"]], Z), "numeric array"),
]


@pytest.mark.parametrize("call, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_raises_a_named_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_mmd_is_the_unbiased_estimate_computed_by_hand():
    """X = {0, 1}, Y = {0, 2, 3} in 1-D, h = 1, k(a, b) = exp(-(a - b)^2 / 2):
    MMD^2_u = mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean k(x_i, y_j).
    The biased estimate (diagonal kept) is 0.38 larger here."""
    e = np.exp
    xx = e(-0.5)                                   # the one pair of X
    yy = (e(-2.0) + e(-4.5) + e(-0.5)) / 3         # the three pairs of Y
    xy = (1 + e(-2.0) + e(-4.5) + e(-0.5) + e(-0.5) + e(-2.0)) / 6
    r = M.mmd_rbf(np.array([[0.0], [1.0]]), np.array([[0.0], [2.0], [3.0]]), bandwidth=1.0,
                  max_n=None)
    assert r["value"] == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    assert (r["n_x"], r["n_y"]) == (2, 3)
