"""Datasets: one registry, ``load(name, n_train, n_val, n_test, seed)``.

    ds = datasets.load("eq39", n_train=10_000, seed=0)
    ds.train, ds.val, ds.test     # float32 (n, dim)
    ds.log_prob(x)                # exact log-density (float64) or None when unknown
    ds.entropy()                  # (value, standard error): exact where closed form, else MC
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import densities as D


class DatasetError(ValueError):
    """Unknown dataset name or unusable sizes/options."""


_FACTORIES: dict[str, Callable[..., D.Density]] = {
    "eq39": D.Eq39,
    "mixture1d": D.mixture1d,
    "fourmodes": D.fourmodes,
    "gmm": D.gmm,
    "8gaussians": D.eightgaussians,
    "checkerboard": D.Checkerboard,
    "rings": D.Rings,
    "moons": D.Moons,
    "pinwheel": D.Pinwheel,
    "2spirals": D.TwoSpirals,
    "swissroll": D.SwissRoll,
}


def names() -> list[str]:
    return list(_FACTORIES)


def density(name: str, **options) -> D.Density:
    """The density object behind a dataset name ("gmm16" is "gmm" with dim=16)."""
    if not isinstance(name, str):
        raise DatasetError(f"dataset name must be a string, got {name!r}")
    m = re.fullmatch(r"gmm-?(\d+)", name)
    if m:
        name, options = "gmm", {**options, "dim": int(m.group(1))}
    if name not in _FACTORIES:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(_FACTORIES)} "
                           "(and gmm<dim>, e.g. gmm16)")
    if name == "gmm":
        for key in ("dim", "components"):
            v = options.get(key, 2)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise DatasetError(f"gmm {key} must be a positive int, got {v!r}")
    try:
        return _FACTORIES[name](**options)
    except TypeError as exc:
        raise DatasetError(f"dataset {name!r} does not take options {sorted(options)}: "
                           f"{exc}") from None


@dataclass
class Dataset:
    name: str
    dim: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    density: D.Density
    seed: int

    @property
    def log_prob(self) -> Callable[[np.ndarray], np.ndarray] | None:
        return self.density.log_prob

    @property
    def description(self) -> str:
        return self.density.description

    def entropy(self, n: int = 200_000, seed: int = 12345) -> tuple[float, float] | None:
        """The target's entropy in nats and its standard error (0 when exact); None when
        the density is unknown. Monte Carlo uses draws independent of the splits."""
        if self.density.exact_entropy is not None:
            return float(self.density.exact_entropy), 0.0
        if self.density.log_prob is None:
            return None
        x = self.density.sample(n, np.random.default_rng(seed))
        lp = self.density.log_prob(x)
        return float(-lp.mean()), float(lp.std(ddof=1) / np.sqrt(n))


def _check_size(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DatasetError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def load(name: str, n_train: int = 10_000, n_val: int = 2_000, n_test: int = 5_000,
         seed: int = 0, **options) -> Dataset:
    dens = density(name, **options)
    n_train = _check_size("n_train", n_train, 1)
    n_val = _check_size("n_val", n_val, 0)
    n_test = _check_size("n_test", n_test, 1)
    seed = _check_size("seed", seed, 0)
    x = dens.sample(n_train + n_val + n_test, np.random.default_rng(seed)).astype(np.float32)
    return Dataset(dens.name, dens.dim, x[:n_train], x[n_train:n_train + n_val],
                   x[n_train + n_val:], dens, seed)
