"""The spec protocol, and FlowSpec: a framework-free description of one vector flow.

Every spec (``FlowSpec`` here, ``ImageSpec`` in ``image.py``) is a frozen dataclass that
subclasses ``Spec``: it names its ``family`` (the model family a backend builds for it)
and knows its own canonical layout (``blocks``, ``weight_shapes``, ``init_weights``,
``random_weights``), so no backend or harness module switches on a spec's type.
``check_spec`` is the one build-time check that an object is a spec a backend can build.

A spec is an arch preset plus the axes underneath it. The preset only fills in the axes
the caller left as ``None``, so ``FlowSpec(arch="maf", transform="spline")`` is a valid
non-preset combination, as is ``FlowSpec(arch="custom", conditioner="coupling",
transform="mlp", ...)``.

Axes
----
transform    additive | affine | mlp | spline     the scalar bijection per dimension
             | planar | radial                    or a whole-vector residual layer
conditioner  coupling | autoregressive | none     what its parameters may depend on (none:
                                                  planar and radial have no network)
direction    density | sampling                   which way is one pass: density-fast
             (MAF-like, x -> z cheap) or sampling-fast (IAF-like, z -> x cheap)
scale        exp | sigmoid                        affine scale: exp(s) or Glow's sigmoid(s + 2)
actnorm, linear ("none" | "lu"), final_scale      Glow's and NICE's extra layers
"""

from __future__ import annotations

import numbers

import abc
import dataclasses
from dataclasses import dataclass

import numpy as np

from . import canonical
from .errors import SpecError, UnknownArch, UnsupportedSpec

RESIDUAL = ("planar", "radial")  # layers of Rezende & Mohamed 2015: see residual.py
TRANSFORMS = ("additive", "affine", "mlp", "spline", *RESIDUAL)
CONDITIONERS = ("coupling", "autoregressive", "none")
DIRECTIONS = ("density", "sampling")
SCALES = ("exp", "sigmoid")
LINEARS = ("none", "lu")
BASES = ("normal", "logistic")
ACTIVATIONS = ("relu", "tanh")
DTYPES = ("float32",)

# The axes each preset sets; everything not listed takes the FlowSpec default.
PRESETS: dict[str, dict] = {
    "nice": dict(transform="additive", conditioner="coupling", final_scale=True),
    "realnvp": dict(transform="affine", conditioner="coupling"),
    "maf": dict(transform="affine", conditioner="autoregressive"),
    "iaf": dict(transform="affine", conditioner="autoregressive", direction="sampling"),
    "naf": dict(transform="mlp", conditioner="autoregressive"),
    "nsf": dict(transform="spline", conditioner="coupling"),
    "nsf-ar": dict(transform="spline", conditioner="autoregressive"),
    "glow": dict(transform="affine", conditioner="coupling", scale="sigmoid",
                 actnorm=True, linear="lu"),
}
PRESET_DOCS = {
    "nice": "additive coupling + final diagonal scaling (Dinh et al. 2014)",
    "realnvp": "affine coupling, exp scale, alternating masks (Dinh et al. 2017)",
    "maf": "MADE affine, density direction one pass, order reversed between layers",
    "iaf": "the MAF layer inverted: sampling one pass, density dim passes",
    "naf": "MADE + deep sigmoidal flow transformer; inverse by bisection (Huang et al. 2018)",
    "nsf": "coupling rational-quadratic spline, identity tails (Durkan et al. 2019)",
    "nsf-ar": "autoregressive rational-quadratic spline (Durkan et al. 2019)",
    "glow": ("ActNorm + LU 1x1 linear map + affine coupling with sigmoid scale "
             "(Kingma & Dhariwal 2018)"),
}
# Flows with no closed-form inverse: sample, forward, sample_and_log_prob and reverse-KL
# training only. Kept apart from PRESETS, the flows that have the whole contract.
ONE_WAY_PRESETS: dict[str, dict] = {
    "planar": dict(transform="planar", conditioner="none", direction="sampling"),
    "radial": dict(transform="radial", conditioner="none", direction="sampling"),
}
PRESET_DOCS.update({
    "planar": "K planar layers x = z + u tanh(w.z + b), u constrained so w.u >= -1; "
              "sampling direction only (Rezende & Mohamed 2015)",
    "radial": "K radial layers x = z + beta (z - z0) / (alpha + |z - z0|), beta >= "
              "-alpha; sampling direction only (Rezende & Mohamed 2015)",
})
ALL_PRESETS = {**PRESETS, **ONE_WAY_PRESETS}
ARCHS = tuple(ALL_PRESETS) + ("custom",)

# spec family -> the spec class that describes it (for messages; image.py defines ImageSpec)
FAMILIES = {"vector": "FlowSpec", "image": "ImageSpec"}


class Spec(abc.ABC):
    """What every spec provides. Subclasses are frozen dataclasses with ``dim`` (the
    flattened event size), ``label``, ``layers``, ``actnorm`` and ``base``."""

    family: str = ""  # a key of FAMILIES: which model family a backend builds

    @abc.abstractmethod
    def blocks(self) -> list:
        """The flow as a list of blocks in x -> z order."""

    @abc.abstractmethod
    def weight_shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """name -> (shape, dtype) of every canonical array, in a stable order."""

    @abc.abstractmethod
    def init_weights(self, seed: int = 0) -> dict[str, np.ndarray]:
        """The seeded canonical initialiser: every backend built with this seed starts here."""

    @abc.abstractmethod
    def random_weights(self, seed: int = 0, scale: float = 0.1) -> dict[str, np.ndarray]:
        """The initial weights plus seeded noise on every trained array (parity checks)."""

    @abc.abstractmethod
    def conditioner_flops(self) -> float:
        """FLOPs per row of one conditioner evaluation, averaged over the conditioned
        blocks (2 multiply-adds per weight of a dense layer, per output pixel of a conv)."""

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as plain Python values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


def check_spec(spec, families: tuple[str, ...] = tuple(FAMILIES)) -> None:
    """UnsupportedSpec unless spec is a spec of one of ``families``."""
    if not isinstance(spec, Spec) or spec.family not in families:
        names = [FAMILIES[f] for f in families]
        wanted = " or ".join(("an " if n[0] in "AEIOU" else "a ") + n for n in names)
        raise UnsupportedSpec(f"build needs {wanted}, got {type(spec).__name__}")


_DEFAULTS = dict(transform=None, conditioner=None, direction="density", scale="exp",
                 actnorm=False, linear="none", final_scale=False)


@dataclass(frozen=True)
class FlowSpec(Spec):
    arch: str = "maf"
    dim: int = 2
    layers: int = 5
    hidden: tuple[int, ...] = (64, 64)
    transform: str | None = None
    conditioner: str | None = None
    direction: str | None = None
    scale: str | None = None
    actnorm: bool | None = None
    linear: str | None = None
    final_scale: bool | None = None
    bins: int = 8
    tail_bound: float = 5.0
    naf_hidden: int = 8
    base: str = "normal"
    activation: str = "relu"
    dtype: str = "float32"

    family = "vector"

    def __post_init__(self):
        if not isinstance(self.arch, str) or self.arch not in ARCHS:
            raise UnknownArch(
                f"unknown arch {self.arch!r}; known: {', '.join(ARCHS)}")
        preset = ALL_PRESETS.get(self.arch, {})
        for axis, default in _DEFAULTS.items():
            if getattr(self, axis) is None:
                object.__setattr__(self, axis, preset.get(axis, default))
        widths = (self.hidden,) if isinstance(self.hidden, (str, bytes)) else self.hidden
        try:
            widths = tuple(widths)
        except TypeError:
            widths = (self.hidden,)
        if any(isinstance(h, bool) or not isinstance(h, numbers.Integral) for h in widths):
            raise SpecError(f"hidden must be a sequence of int layer widths, such as "
                            f"(64, 64), got {self.hidden!r}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in widths))
        self._validate()

    def _validate(self):
        if self.transform is None or self.conditioner is None:
            raise SpecError("arch='custom' needs transform= and conditioner=")
        for axis, allowed in (("transform", TRANSFORMS), ("conditioner", CONDITIONERS),
                              ("direction", DIRECTIONS), ("scale", SCALES),
                              ("linear", LINEARS), ("base", BASES),
                              ("activation", ACTIVATIONS), ("dtype", DTYPES)):
            if getattr(self, axis) not in allowed:
                raise SpecError(f"{axis}={getattr(self, axis)!r} is not one of {allowed}")
        for name in ("dim", "layers", "bins", "naf_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise SpecError(f"{name} must be an int, got {value!r}")
        if self.dim < 1:
            raise SpecError(f"dim must be >= 1, got {self.dim}")
        if self.layers < 1:
            raise SpecError(f"layers must be >= 1, got {self.layers}")
        if not self.hidden or min(self.hidden) < 1:
            raise SpecError(f"hidden needs at least one layer of width >= 1, got {self.hidden}")
        if (self.transform in RESIDUAL) != (self.conditioner == "none"):
            raise SpecError(f"transform={self.transform!r} with conditioner="
                            f"{self.conditioner!r}: planar and radial layers take "
                            f"conditioner='none', and only they do")
        if self.transform in RESIDUAL and (self.direction != "sampling" or self.actnorm
                                           or self.linear != "none" or self.final_scale):
            raise SpecError(f"a {self.transform} flow is its layers alone, in the sampling "
                            f"direction (direction='sampling', no actnorm, linear or "
                            f"final_scale): its one closed-form map is z -> x")
        if self.conditioner == "coupling" and self.dim < 2:
            raise SpecError("a coupling layer needs dim >= 2: with dim 1 there is nothing "
                            "to condition on (use conditioner='autoregressive')")
        if self.bins < 2:
            raise SpecError(f"bins must be >= 2 for a spline, got {self.bins}")
        if self.bins * 1e-3 >= 1.0:
            raise SpecError(f"bins={self.bins} too many for the minimum bin size 1e-3")
        if not (float(self.tail_bound) > 0 and float(self.tail_bound) < float("inf")):
            raise SpecError(f"tail_bound must be positive and finite, got {self.tail_bound}")
        if self.naf_hidden < 1:
            raise SpecError(f"naf_hidden must be >= 1, got {self.naf_hidden}")

    @property
    def label(self) -> str:
        """The preset name when the axes are exactly the preset's, else a description."""
        preset = ALL_PRESETS.get(self.arch)
        if preset is not None and all(getattr(self, k) == preset.get(k, d)
                                      for k, d in _DEFAULTS.items()):
            return self.arch
        parts = [self.transform, self.conditioner]
        if self.direction != "density":
            parts.append("sampling-fast")
        if self.actnorm:
            parts.append("actnorm")
        if self.linear != "none":
            parts.append(self.linear)
        if self.final_scale:
            parts.append("final-scale")
        return "+".join(parts)

    @property
    def params_per_dim(self) -> int:
        """Conditioner outputs per transformed dimension (canonical layout); 0 for the
        residual layers, which have no conditioner."""
        return {"additive": 1, "affine": 2, "mlp": 3 * self.naf_hidden,
                "spline": 3 * self.bins - 1, "planar": 0, "radial": 0}[self.transform]

    @property
    def invertible(self) -> bool:
        """Whether x -> z has a closed form or a solver here (inverse, log_prob of outside
        data, NLL training); planar and radial flows have neither."""
        return self.transform not in RESIDUAL

    # --- the spec protocol: the vector layout of canonical.py -----------------------------
    def blocks(self) -> list[canonical.Block]:
        return canonical.blocks(self)

    def weight_shapes(self):
        return canonical.vector_weight_shapes(self)

    def init_weights(self, seed: int = 0):
        return canonical.vector_init_weights(self, seed)

    def random_weights(self, seed: int = 0, scale: float = 0.1):
        return canonical.vector_random_weights(self, seed, scale)

    def conditioner_flops(self) -> float:
        return canonical.conditioner_flops(self)
