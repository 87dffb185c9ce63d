"""The Flow protocol and what every backend shares: input checks, numpy <-> native.

A backend subclasses ``Backend`` and ``Flow`` and implements the underscore methods,
which take and return native arrays and assume valid input. The public methods check
input (shape, dtype, NaN/inf) and give back what they were given: numpy in, numpy out;
native in, native out. The harness times the underscore methods, so no check or host
transfer lands in a timed region.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import (DeviceError, DTypeError, InvalidInput, NonFiniteError, ShapeError,
                     UnsupportedOp, UnsupportedSpec)
from .spec import FlowSpec


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings, the same for every backend: Adam on the mean NLL of a batch."""
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_norm: float | None = None  # global gradient-norm clipping, off by default


def parse_device(device: str | None) -> tuple[str, int]:
    """'cpu' | 'cuda' | 'cuda:N' | 'gpu' | 'gpu:N' -> ("cpu", 0) or ("cuda", N)."""
    device = device or "cpu"
    kind, _, index = str(device).partition(":")
    if kind == "cpu" and not index:
        return "cpu", 0
    if kind in ("cuda", "gpu") and (not index or index.isdigit()):
        return "cuda", int(index or 0)
    raise DeviceError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")


class Backend:
    name: str = ""
    framework: str = ""
    native_types: tuple = ()
    # execution variants (eager, compiled, ...); the first is the default
    variants: tuple[str, ...] = ()
    # the library caches results keyed on the input tensor (TFP bijectors, pyro): timing
    # must hand every call a fresh tensor, or it times a cache lookup
    caches_inputs: bool = False
    # conditioner evaluations the backend's library issues per conditioned block on top of
    # the canonical count when an op also needs the log-det (TFP: one, see adapters/tfp)
    extra_logdet_passes: int = 0

    def version(self) -> str: ...
    def build(self, spec: FlowSpec, seed: int = 0, device: str = "cpu",
              train: TrainConfig | None = None, variant: str | None = None) -> "Flow": ...
    def to_numpy(self, a) -> np.ndarray: ...
    def to_native(self, a, device: str | None = None): ...
    def block(self, a): ...
    def fresh(self, a):
        """A new native array equal to a (a device copy), so no input-keyed cache hits."""
        return self.to_native(a)

    def native_check(self, a) -> tuple[tuple, str, bool]:
        """(shape, dtype kind letter, all finite) of a native array."""
        ...
    def devices(self) -> list[str]: ...

    def clear_caches(self) -> None:
        """Drop compiled functions kept for reuse (a long process that builds many specs
        calls this now and then); flows that exist keep working."""

    def _variant(self, variant: str | None) -> str:
        default = getattr(self, "default_variant", self.variants[0])
        if variant is None:
            return default
        if variant not in self.variants:
            raise UnsupportedSpec(f"backend {self.name} has no execution variant {variant!r}; "
                                  f"it has: {', '.join(self.variants)}")
        return variant

    def is_native(self, a) -> bool:
        return isinstance(a, self.native_types)

    def __repr__(self):
        return f"<flowbench backend {self.name} ({self.framework} {self.version()})>"


class Flow:
    """One flow of one backend. See DESIGN.md for the contract."""

    backend: Backend
    spec: FlowSpec
    device: str
    variant: str = ""
    # conditioner-network evaluations made by the last op (sequential passes show here)
    passes: int = 0

    # --- backend hooks: native arrays in and out, input already checked ---------------
    def _log_prob(self, x): ...
    def _inverse(self, x): ...
    def _forward(self, z): ...
    def _sample(self, n: int, seed: int): ...

    def _base_sample(self, n: int, seed: int):
        raise UnsupportedOp(f"backend {self.backend.name} does not expose the base draws "
                            f"of its sample op")
    def _train_step(self, x) -> float: ...
    def _gradients(self, x) -> dict: ...

    # --- public contract --------------------------------------------------------------
    def log_prob(self, x):
        native, was_numpy = self._accept(x, "x")
        return self._give(self._log_prob(native), was_numpy)

    def inverse(self, x):
        native, was_numpy = self._accept(x, "x")
        z, logdet = self._inverse(native)
        return self._give(z, was_numpy), self._give(logdet, was_numpy)

    def forward(self, z):
        native, was_numpy = self._accept(z, "z")
        x, logdet = self._forward(native)
        return self._give(x, was_numpy), self._give(logdet, was_numpy)

    def sample(self, n: int, seed: int = 0, native: bool = False):
        """n draws as a numpy array (a native array with native=True)."""
        out = self._sample(*self._draws(n, seed))
        return out if native else self.backend.to_numpy(out)

    def base_sample(self, n: int, seed: int = 0, native: bool = False):
        """The n base-distribution draws that ``sample(n, seed)`` pushes through
        ``forward``: sample(n, seed) == forward(base_sample(n, seed))[0]."""
        out = self._base_sample(*self._draws(n, seed))
        return out if native else self.backend.to_numpy(out)

    @staticmethod
    def _draws(n, seed) -> tuple[int, int]:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InvalidInput(f"sample needs a positive int n, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise InvalidInput(f"seed must be an int, got {seed!r}")
        return int(n), int(seed)

    def train_step(self, x) -> float:
        native, _ = self._accept(x, "x")
        return float(self._train_step(native))

    def gradients(self, x) -> dict[str, np.ndarray]:
        """Gradient of the mean NLL of batch x with respect to every trained canonical
        array, by canonical name; parameters are left unchanged. Parity tests compare
        these across backends directly, so no optimizer convention can hide a difference."""
        native, _ = self._accept(x, "x")
        return {k: np.asarray(self.backend.to_numpy(v), np.float32)
                for k, v in self._gradients(native).items()}

    def num_params(self) -> int:
        """Trained scalars (fixed permutations and signs excluded)."""
        from .canonical import FIXED, weight_shapes
        return int(sum(np.prod(shape) for name, (shape, _) in weight_shapes(self.spec).items()
                       if name.rsplit(".", 1)[-1] not in FIXED))

    def jacobian(self, a, direction: str = "forward", eps: float = 1e-3) -> np.ndarray:
        """Per-row Jacobian (n, dim, dim) of forward (z -> x) or inverse (x -> z).

        Central finite differences here; backends override it with autodiff.
        """
        fn = self.forward if direction == "forward" else self.inverse
        a = np.asarray(a, np.float32)
        n, d = a.shape
        jac = np.empty((n, d, d))
        for j in range(d):
            step = np.zeros_like(a)
            step[:, j] = eps
            jac[:, :, j] = (np.asarray(fn(a + step)[0], np.float64)
                            - np.asarray(fn(a - step)[0], np.float64)) / (2 * eps)
        return jac

    def get_weights(self) -> dict[str, np.ndarray]: ...
    def set_weights(self, weights: dict) -> None: ...

    def initialize(self, x) -> None:
        """Data-dependent initialisation (Glow's ActNorm) from batch x; a no-op otherwise.

        Runs by itself on the first train_step. log_prob/inverse never change parameters,
        so round trips stay exact on an untrained flow.
        """
        native, _ = self._accept(x, "x")
        self._initialize(native)

    def _initialize(self, x) -> None:
        pass

    # --- checks -----------------------------------------------------------------------
    def _accept(self, a, what: str):
        dim = self.spec.dim
        if self.backend.is_native(a):
            shape, kind, finite = self.backend.native_check(a)
            was_numpy = False
        else:
            try:
                arr = np.asarray(a)
            except Exception as exc:  # ragged lists and the like
                raise InvalidInput(f"{what} is not array-like: {exc}") from None
            shape, kind = arr.shape, arr.dtype.kind
            finite = None
            was_numpy = True
        if len(shape) != 2 or shape[1] != dim:
            raise ShapeError(f"{what} must have shape (n, {dim}) for this {dim}-D flow, "
                             f"got {tuple(shape)}")
        if shape[0] < 1:
            raise ShapeError(f"{what} is empty: shape {tuple(shape)}")
        if kind != "f":
            raise DTypeError(f"{what} must hold real floating point numbers (float32; float64 "
                             f"is cast), got dtype kind {kind!r}")
        if was_numpy:
            with np.errstate(over="ignore"):  # float64 beyond float32 range: caught below
                arr = arr.astype(np.float32, copy=False)
            finite = bool(np.isfinite(arr).all())
        if not finite:
            raise NonFiniteError(f"{what} holds NaN or infinite values")
        return (self.backend.to_native(arr, self.device) if was_numpy
                else self.backend.to_native(a, self.device)), was_numpy

    def _give(self, a, as_numpy: bool):
        return self.backend.to_numpy(a) if as_numpy else a

    def __repr__(self):
        return (f"<{self.backend.name} ({self.variant}) flow {self.spec.label} "
                f"dim={self.spec.dim} layers={self.spec.layers} on {self.device}>")
