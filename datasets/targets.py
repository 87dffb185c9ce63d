"""Target densities for variational training: only an unnormalised log-density log p~(x),
no data (seed 004). A flow q is trained by the reverse KL, E_q[log q(x) - log p~(x)], on
its own samples.

Each target writes ``terms(ops, x)`` once over the ops table (``adapters/ops.py``): every
backend differentiates its own framework's copy, and the harness evaluates the same
formula in float64 numpy (``NUMPY_OPS``). ``terms`` is (n, K): log p~ is their logsumexp,
and a target with K > 1 is multimodal, its modes the regions where one term is largest
(mode coverage compares the share of flow samples in each region with the target's).

``log_z`` is log of the integral of exp(log p~): in closed form where there is one, else
(the 2-D energies of Rezende and Mohamed) by quadrature on a fine grid, so the reverse KL
itself, KL(q || p) = E_q[log q - log p~] + log Z >= 0, is reported and not only the ELBO.
"""

from __future__ import annotations

import functools
import math
import re

import numpy as np

from flowbench.adapters.ops import NUMPY_OPS


class TargetError(ValueError):
    """An unknown target name."""


class Target:
    name = ""
    dim = 2
    description = ""
    # the figure's and the quadrature's window, per axis (2-D targets)
    box: tuple[tuple[float, float], ...] = ((-6.0, 6.0), (-6.0, 6.0))
    # closed-form log Z where known; None: by quadrature (2-D only)
    closed_log_z: float | None = None

    def terms(self, ops, x):
        """(n, K) per-component log terms; log p~ = logsumexp over them."""
        raise NotImplementedError

    def log_density(self, ops, x):
        """log p~(x) per row, unnormalised, on the table ``ops``."""
        t = self.terms(ops, x)
        return t[:, 0] if t.shape[1] == 1 else ops.logsumexp(t, 1)

    def __call__(self, x) -> np.ndarray:
        """log p~ of numpy rows, in float64."""
        return self.log_density(NUMPY_OPS, np.asarray(x, np.float64))

    @property
    def modes(self) -> int:
        return int(self.terms(NUMPY_OPS, np.zeros((1, self.dim))).shape[1])

    def regions(self, x) -> np.ndarray:
        """Index of the largest term per row (the mode a row belongs to)."""
        return np.argmax(self.terms(NUMPY_OPS, np.asarray(x, np.float64)), 1)

    @functools.cached_property
    def log_z(self) -> float:
        return self.closed_log_z if self.closed_log_z is not None else self._quad[0]

    @property
    def knows_log_z(self) -> bool:
        return self.closed_log_z is not None or self.dim == 2

    @property
    def log_z_method(self) -> str:
        return "closed form" if self.closed_log_z is not None else "quadrature"

    @functools.cached_property
    def mode_shares(self) -> np.ndarray:
        """The target's mass in each mode region (by quadrature on ``box``)."""
        return self._quad[1]

    def grid(self, points: int = 96):
        """(x axis, y axis, log p~ on the grid (points, points)) over ``box``, 2-D only."""
        axes = [np.linspace(lo, hi, points) for lo, hi in self.box]
        xx, yy = np.meshgrid(*axes)
        pts = np.stack([xx.ravel(), yy.ravel()], 1)
        return axes[0], axes[1], self(pts).reshape(points, points)

    @functools.cached_property
    def _quad(self) -> tuple[float, np.ndarray]:
        return self._quadrature()

    def _quadrature(self, points: int = 1201):
        """(log Z, mass share per mode) on ``box`` by the trapezoid rule (2-D)."""
        if self.dim != 2:
            raise TargetError(f"target {self.name}: no closed-form log Z and no quadrature "
                              f"in {self.dim} dimensions")
        axes = [np.linspace(lo, hi, points) for lo, hi in self.box]
        xx, yy = np.meshgrid(*axes)
        pts = np.stack([xx.ravel(), yy.ravel()], 1)
        lp = self(pts)
        peak = lp.max()
        dens = np.exp(lp - peak).reshape(points, points)
        weights = np.outer(*(np.full(points, a[1] - a[0]) for a in axes[::-1]))
        for w in (weights[0], weights[-1], weights[:, 0], weights[:, -1]):
            w *= 0.5
        mass = dens * weights
        total = mass.sum()
        region = self.regions(pts).reshape(points, points)
        shares = np.array([mass[region == k].sum() / total for k in range(self.modes)])
        return float(np.log(total) + peak), shares


def _col(x, i):
    return x[:, i]


def _stack(ops, parts):
    return ops.concat([p[:, None] for p in parts], 1)


class Normal(Target):
    """A standard normal in any dimension: the target of the timing sweeps, and the
    sanity case (a flow at its initial weights is close to it)."""

    def __init__(self, dim: int = 2):
        self.dim, self.name = dim, f"normal{dim}"
        self.description = f"standard normal in {dim}-D"
        self.closed_log_z = 0.5 * dim * math.log(2 * math.pi)
        self.box = ((-4.0, 4.0),) * 2

    def terms(self, ops, x):
        return ops.sum(-0.5 * x * x, 1)[:, None]


class Ring(Target):
    """Seed 004: p~(z) = exp(-0.5 ((|z| - 4) / 0.8)^2)."""
    name, radius, width = "ring", 4.0, 0.8
    description = "seed 004: exp(-0.5 ((|z| - 4) / 0.8)^2)"
    box = ((-7.0, 7.0), (-7.0, 7.0))

    def __init__(self):
        from scipy.stats import norm
        mu, s = self.radius, self.width
        # 2 pi * integral_0^inf r exp(-(r - mu)^2 / (2 s^2)) dr
        radial = s * s * math.exp(-mu * mu / (2 * s * s)) \
            + mu * s * math.sqrt(2 * math.pi) * norm.cdf(mu / s)
        self.closed_log_z = math.log(2 * math.pi * radial)

    def terms(self, ops, x):
        r = ops.sqrt(_col(x, 0) ** 2 + _col(x, 1) ** 2)
        return (-0.5 * ((r - self.radius) / self.width) ** 2)[:, None]


def _w1(ops, z1):
    return ops.sin(2 * math.pi * z1 / 4)


def _envelope(z1):
    """U2-U4 are constant along z1 and so not normalisable as the paper writes them: a
    smooth wall at |z1| ~ 4, the box the paper draws them in, makes them densities."""
    return -(z1 / 4) ** 8


class Energy(Target):
    """Rezende and Mohamed (2015), Table 1: p~(z) = exp(-U(z))."""
    box = ((-6.0, 6.0), (-6.5, 6.5))

    def __init__(self, k: int):
        self.k, self.name = k, f"u{k}"
        self.description = (f"Rezende & Mohamed 2015, Table 1, U{k}"
                            + (" (a wall at |z1| ~ 4 makes it normalisable)" if k > 1 else ""))

    def terms(self, ops, z):
        z1, z2 = _col(z, 0), _col(z, 1)
        if self.k == 1:
            ring = -0.5 * ((ops.sqrt(z1 ** 2 + z2 ** 2) - 2) / 0.4) ** 2
            return _stack(ops, [ring - 0.5 * ((z1 - 2) / 0.6) ** 2,
                                ring - 0.5 * ((z1 + 2) / 0.6) ** 2])
        w1, wall = _w1(ops, z1), _envelope(z1)
        if self.k == 2:
            return (wall - 0.5 * ((z2 - w1) / 0.4) ** 2)[:, None]
        if self.k == 3:
            w2 = 3 * ops.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
            return _stack(ops, [wall - 0.5 * ((z2 - w1) / 0.35) ** 2,
                                wall - 0.5 * ((z2 - w1 + w2) / 0.35) ** 2])
        w3 = 3 * ops.exp(ops.log_sigmoid((z1 - 1) / 0.3))
        return _stack(ops, [wall - 0.5 * ((z2 - w1) / 0.4) ** 2,
                            wall - 0.5 * ((z2 - w1 + w3) / 0.35) ** 2])


class Banana(Target):
    """Seed 000 Eq. 39 given only its log-density: x2 ~ N(0, 2^2), x1 | x2 ~ N(x2^2/4, 1),
    without the normalising constants (log Z = log(2 pi * 2 * 1)). An affine autoregressive
    flow represents it exactly (x1's shift is a function of x2)."""
    name = "banana"
    description = "seed 000 Eq. 39, log-density only: x2 ~ N(0, 4), x1 | x2 ~ N(x2^2/4, 1)"
    closed_log_z = math.log(4 * math.pi)
    box = ((-3.0, 12.0), (-7.0, 7.0))

    def terms(self, ops, x):
        x1, x2 = _col(x, 0), _col(x, 1)
        return (-x2 * x2 / 8 - 0.5 * (x1 - x2 * x2 / 4) ** 2)[:, None]


class Mixture(Target):
    """Four equal modes at (+-2, +-2), std 0.5 (the fourmodes dataset), log-density only."""
    name = "mixture"
    description = "four equal Gaussian modes at (+-2, +-2), std 0.5, log-density only"
    means = ((2.0, 2.0), (-2.0, 2.0), (-2.0, -2.0), (2.0, -2.0))
    std = 0.5
    closed_log_z = math.log(4 * 2 * math.pi * 0.25)
    box = ((-4.5, 4.5), (-4.5, 4.5))

    def terms(self, ops, x):
        x1, x2 = _col(x, 0), _col(x, 1)
        return _stack(ops, [-((x1 - a) ** 2 + (x2 - b) ** 2) / (2 * self.std ** 2)
                            for a, b in self.means])


class Funnel(Target):
    """Neal's funnel: v ~ N(0, 3^2), x_i | v ~ N(0, e^v), i = 1..dim-1; log p~ drops the
    constants."""
    name = "funnel"
    description = "Neal's funnel in 10-D: v ~ N(0, 9), x_i | v ~ N(0, e^v)"

    def __init__(self, dim: int = 10):
        self.dim = dim
        self.closed_log_z = 0.5 * math.log(2 * math.pi * 9) \
            + 0.5 * (dim - 1) * math.log(2 * math.pi)

    def terms(self, ops, x):
        v, rest = x[:, 0], x[:, 1:]
        return (-v * v / 18 - 0.5 * ops.exp(-v) * ops.sum(rest * rest, 1)
                - 0.5 * (self.dim - 1) * v)[:, None]


_FACTORIES = {"ring": Ring, "u1": lambda: Energy(1), "u2": lambda: Energy(2),
              "u3": lambda: Energy(3), "u4": lambda: Energy(4), "banana": Banana,
              "mixture": Mixture, "funnel": Funnel}


def names() -> list[str]:
    return list(_FACTORIES) + ["normal<dim>"]


@functools.lru_cache(maxsize=None)
def load(name: str) -> Target:
    """The target of a name ("normal16" is the standard normal in 16-D)."""
    if not isinstance(name, str):
        raise TargetError(f"target name must be a string, got {name!r}")
    m = re.fullmatch(r"normal(\d+)", name)
    if m and int(m.group(1)) >= 1:
        return Normal(int(m.group(1)))
    if name not in _FACTORIES:
        raise TargetError(f"unknown target {name!r}; known: {', '.join(names())}")
    return _FACTORIES[name]()
