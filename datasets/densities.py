"""Densities with a sampler and, where one exists, an exact log-density.

The 2-D toy sets follow the definitions popularised by FFJORD (Grathwohl et al. 2019);
rings is drawn with a continuous angle so that its density has a closed form.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import i0e, logsumexp
from scipy.stats import multivariate_normal, norm


class Density:
    name = ""
    dim = 2
    description = ""
    exact_entropy: float | None = None  # closed form, where there is one

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    log_prob = None  # a method on densities with a closed-form log-density


class Eq39(Density):
    name, dim = "eq39", 2
    description = "seed 000 Eq. 39: x2 ~ N(0, 2^2), x1 | x2 ~ N(x2^2 / 4, 1)"
    exact_entropy = math.log(2 * math.pi * math.e) + math.log(2.0)

    def sample(self, n, rng):
        x2 = 2.0 * rng.standard_normal(n)
        x1 = x2 ** 2 / 4 + rng.standard_normal(n)
        return np.stack([x1, x2], 1)

    def log_prob(self, x):
        x = np.asarray(x, np.float64)
        return norm.logpdf(x[:, 1], 0, 2) + norm.logpdf(x[:, 0], x[:, 1] ** 2 / 4, 1)


class GaussianMixture(Density):
    """sum_k w_k N(mu_k, Sigma_k) in any dimension."""

    def __init__(self, name, weights, means, covs, description=""):
        self.name, self.description = name, description
        self.weights = np.asarray(weights, np.float64)
        self.means = np.asarray(means, np.float64)
        self.covs = np.asarray(covs, np.float64)
        self.dim = self.means.shape[1]
        self._chol = np.linalg.cholesky(self.covs)

    def sample(self, n, rng):
        k = rng.choice(len(self.weights), size=n, p=self.weights)
        eps = rng.standard_normal((n, self.dim))
        return self.means[k] + np.einsum("nij,nj->ni", self._chol[k], eps)

    def log_prob(self, x):
        x = np.asarray(x, np.float64)
        comps = [np.log(w) + multivariate_normal(m, c).logpdf(x).reshape(len(x))
                 for w, m, c in zip(self.weights, self.means, self.covs)]
        return logsumexp(np.stack(comps, 1), 1)


def mixture1d() -> GaussianMixture:
    return GaussianMixture("mixture1d", [0.6, 0.4], [[2.3], [-0.8]],
                           np.full((2, 1, 1), 0.4 ** 2),
                           "seed 000: asymmetric 1-D mixture "
                           "0.6 N(2.3, 0.4^2) + 0.4 N(-0.8, 0.4^2)")


def fourmodes() -> GaussianMixture:
    means = [[2, 2], [-2, 2], [-2, -2], [2, -2]]
    return GaussianMixture("fourmodes", [0.25] * 4, means, np.tile(0.25 * np.eye(2), (4, 1, 1)),
                           "seed 001: four equal modes at (+-2, +-2), std 0.5")


def eightgaussians() -> GaussianMixture:
    s = 1 / math.sqrt(2)
    centers = 4 * np.array([[1, 0], [-1, 0], [0, 1], [0, -1], [s, s], [s, -s], [-s, s], [-s, -s]])
    std = 0.5 / 1.414
    return GaussianMixture("8gaussians", [1 / 8] * 8, centers / 1.414,
                           np.tile(std ** 2 * np.eye(2), (8, 1, 1)),
                           "eight isotropic Gaussians on a circle (FFJORD)")


def gmm(dim: int = 8, components: int = 5, structure_seed: int = 1234) -> GaussianMixture:
    """Random correlated Gaussian mixture; its parameters depend on dim and structure_seed
    only, never on the seed that draws the samples."""
    rng = np.random.default_rng([structure_seed, dim, components])
    means = rng.normal(0, 2.5, (components, dim))
    covs = []
    for _ in range(components):
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        covs.append(q @ np.diag(rng.uniform(0.1, 1.0, dim)) @ q.T)
    weights = rng.dirichlet(np.full(components, 5.0))
    return GaussianMixture(f"gmm{dim}", weights, means, np.array(covs),
                           f"{components}-component Gaussian mixture in {dim}-D, random "
                           "correlated covariances")


class Checkerboard(Density):
    name = "checkerboard"
    description = "uniform on 8 squares of side 2 in [-4, 4]^2 (FFJORD)"
    exact_entropy = math.log(32.0)

    def sample(self, n, rng):
        x1 = rng.uniform(0, 1, n) * 4 - 2
        x2 = rng.uniform(0, 1, n) - rng.integers(0, 2, n) * 2 + np.floor(x1) % 2
        return np.stack([x1, x2], 1) * 2

    def log_prob(self, x):
        u = np.asarray(x, np.float64) / 2
        inside = (np.abs(u[:, 0]) < 2) & (np.abs(u[:, 1]) < 2)
        black = (np.floor(u[:, 0]) + np.floor(u[:, 1])) % 2 == 0
        return np.where(inside & black, -math.log(32.0), -np.inf)


class Rings(Density):
    name = "rings"
    description = "four concentric rings, radii 3, 2.25, 1.5, 0.75, noise 0.08"
    radii = np.array([1.0, 0.75, 0.5, 0.25]) * 3.0
    noise = 0.08

    def sample(self, n, rng):
        r = self.radii[rng.integers(0, 4, n)]
        angle = rng.uniform(0, 2 * np.pi, n)
        return np.stack([r * np.cos(angle), r * np.sin(angle)], 1) \
            + self.noise * rng.standard_normal((n, 2))

    def log_prob(self, x):
        # The angle integrates out to a Bessel function: N2 averaged over the circle.
        x = np.asarray(x, np.float64)
        rho = np.linalg.norm(x, axis=1)[:, None]
        s2 = self.noise ** 2
        r = self.radii[None, :]
        log_ring = (-np.log(2 * np.pi * s2) - (rho - r) ** 2 / (2 * s2)
                    + np.log(i0e(rho * r / s2)))
        return logsumexp(log_ring, 1) - np.log(len(self.radii))


class Moons(Density):
    name = "moons"
    description = "two interleaved half circles, noise 0.1 (scikit-learn make_moons)"

    def sample(self, n, rng):
        from sklearn.datasets import make_moons
        x, _ = make_moons(n, noise=0.1, random_state=int(rng.integers(2 ** 31)))
        return rng.permutation(x * 2 + np.array([-1.0, -0.2]))


class Pinwheel(Density):
    name = "pinwheel"
    description = "five curved arms (FFJORD)"

    def sample(self, n, rng):
        radial_std, tangential_std, classes, rate = 0.3, 0.1, 5, 0.25
        rads = np.linspace(0, 2 * np.pi, classes, endpoint=False)
        feats = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
        feats[:, 0] += 1.0
        labels = rng.integers(0, classes, n)
        angles = rads[labels] + rate * np.exp(feats[:, 0])
        rot = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)], 1)
        return 2 * np.einsum("ti,tij->tj", feats, rot.reshape(-1, 2, 2))


class TwoSpirals(Density):
    name = "2spirals"
    description = "two interleaved spirals (FFJORD)"

    def sample(self, n, rng):
        m = np.sqrt(rng.uniform(0, 1, (n // 2 + 1, 1))) * 540 * (2 * np.pi) / 360
        d1x = -np.cos(m) * m + rng.uniform(0, 1, m.shape) * 0.5
        d1y = np.sin(m) * m + rng.uniform(0, 1, m.shape) * 0.5
        x = np.vstack((np.hstack((d1x, d1y)), np.hstack((-d1x, -d1y)))) / 3
        x = rng.permutation(x)[:n]
        return x + 0.1 * rng.standard_normal(x.shape)


class SwissRoll(Density):
    name = "swissroll"
    description = "2-D swiss roll, noise 1.0, scaled by 1/5 (scikit-learn make_swiss_roll)"

    def sample(self, n, rng):
        from sklearn.datasets import make_swiss_roll
        x, _ = make_swiss_roll(n, noise=1.0, random_state=int(rng.integers(2 ** 31)))
        return x[:, [0, 2]] / 5.0
