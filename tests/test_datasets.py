from __future__ import annotations

import numpy as np
import pytest

from flowbench import datasets

EXACT_2D = ["eq39", "fourmodes", "8gaussians", "checkerboard", "rings"]


def _grid(lim, n):
    g = np.linspace(-lim, lim, n)
    xx, yy = np.meshgrid(g, g, indexing="ij")
    return g, np.stack([xx.ravel(), yy.ravel()], 1)


@pytest.mark.parametrize("name", EXACT_2D)
def test_2d_log_density_integrates_to_one_and_matches_samples(name):
    ds = datasets.load(name, n_train=100_000, n_val=0, n_test=1, seed=0)
    lim = 40 if name == "eq39" else 6
    g, pts = _grid(lim, 1601)
    p = np.exp(ds.log_prob(pts)).reshape(len(g), len(g))

    def integrate(f):
        return np.trapezoid(np.trapezoid(p * f.reshape(p.shape), g, axis=1), g)

    assert abs(integrate(np.ones(len(pts))) - 1) < 5e-3
    x = ds.train.astype(np.float64)
    for j in range(2):  # first and second moments from the density vs from the samples
        for power in (1, 2):
            expected = integrate(pts[:, j] ** power)
            sample = np.mean(x[:, j] ** power)
            assert abs(sample - expected) < 0.03 * (1 + abs(expected)), (name, j)


def test_mixture1d():
    ds = datasets.load("mixture1d", n_train=200_000, n_val=0, n_test=1, seed=1)
    assert ds.dim == 1 and ds.train.shape == (200_000, 1)
    g = np.linspace(-6, 8, 20001)[:, None]
    p = np.exp(ds.log_prob(g))
    assert abs(np.trapezoid(p, g[:, 0]) - 1) < 1e-6
    assert abs(ds.train.mean() - (0.6 * 2.3 - 0.4 * 0.8)) < 0.01
    assert abs(np.mean(ds.train > 0.75) - 0.6) < 0.005


def test_eq39_entropy_is_exact_and_matches_monte_carlo():
    ds = datasets.load("eq39", n_train=10, n_val=0, n_test=10)
    h, se = ds.entropy()
    assert se == 0 and h == pytest.approx(np.log(2 * np.pi * np.e) + np.log(2))
    x = ds.density.sample(400_000, np.random.default_rng(3))
    assert -ds.log_prob(x).mean() == pytest.approx(h, abs=0.01)


@pytest.mark.parametrize("dim", [1, 4, 16])
def test_gmm_any_dimension(dim):
    ds = datasets.load(f"gmm{dim}", n_train=100_000, n_val=0, n_test=10, seed=0)
    d = ds.density
    assert ds.dim == dim and d.covs.shape == (5, dim, dim)
    mean = d.weights @ d.means
    assert np.abs(ds.train.mean(0) - mean).max() < 0.05
    second = sum(w * (c + np.outer(m, m)) for w, m, c in zip(d.weights, d.means, d.covs))
    cov = second - np.outer(mean, mean)
    err = np.abs(np.cov(ds.train.T).reshape(dim, dim) - cov)
    assert (err < 0.05 + 0.03 * np.abs(cov)).all(), err.max()
    off = cov - np.diag(np.diag(cov))
    if dim > 1:
        assert np.abs(off).max() > 0.1  # correlated
    h, se = ds.entropy(n=20_000)
    assert se > 0 and np.isfinite(h)
    # the mixture's parameters do not depend on the sampling seed
    np.testing.assert_array_equal(datasets.load(f"gmm{dim}", seed=5).density.means, d.means)


@pytest.mark.parametrize("name", datasets.names())
def test_every_dataset_loads(name):
    ds = datasets.load(name, n_train=300, n_val=20, n_test=50, seed=2)
    assert ds.train.dtype == np.float32 and ds.train.shape == (300, ds.dim)
    assert ds.val.shape == (20, ds.dim) and ds.test.shape == (50, ds.dim)
    assert np.isfinite(ds.train).all()
    again = datasets.load(name, n_train=300, n_val=20, n_test=50, seed=2)
    np.testing.assert_array_equal(ds.train, again.train)
    other = datasets.load(name, n_train=300, n_val=20, n_test=50, seed=3)
    assert not np.array_equal(ds.train, other.train)
    if ds.log_prob is not None:
        assert np.all(np.isfinite(ds.log_prob(ds.test)))


@pytest.mark.parametrize("kw, match", [
    (dict(name="banana"), "unknown dataset"),
    (dict(name="eq39", n_train=0), "n_train"),
    (dict(name="eq39", n_test=-1), "n_test"),
    (dict(name="eq39", n_val=2.5), "n_val"),
    (dict(name="eq39", seed=-1), "seed"),
    (dict(name="gmm", dim=0), "dim"),
    (dict(name="eq39", dim=3), "options"),
])
def test_bad_dataset_requests(kw, match):
    with pytest.raises(datasets.DatasetError, match=match):
        datasets.load(**kw)
