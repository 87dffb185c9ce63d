"""The Flow protocol and what every backend shares: construction, op dispatch, input
checks, numpy <-> native.

A backend is a ``Backend`` subclass (its framework's arrays and devices, and the
``flow_class`` it builds) and a ``Flow`` subclass. ``Backend.build`` checks the spec and
the execution variant and constructs the flow; ``Flow.__init__`` sets what every flow
holds (backend, spec, device, train_config, variant).

The contract, for every backend (x is data, z latent; arrays are (n, dim)):

    flow.log_prob(x)          (n,) log-density
    flow.inverse(x)           (z, logdet), logdet = log|det dz/dx|  (density direction)
    flow.forward(z)           (x, logdet), logdet = log|det dx/dz|  (sampling direction)
    flow.sample(n, seed=0)    (n, dim) draws: forward of base_sample(n, seed)
    flow.train_step(x)        one Adam step on the mean NLL of batch x; returns the loss
    flow.train_step_reverse_kl(target, z)   one Adam step on the reverse KL to an
                              unnormalised target, on the samples forward(z) of base draws z
    flow.get_weights() / flow.set_weights(w)   the canonical layout (canonical.py)
    flow.passes               conditioner evaluations of the last op
    flow.executed(run, n)     the work an op executes, by the framework's counter

The public methods check their input (shape, dtype, NaN/inf; typed errors from
``errors.py``) and give back what they were given: numpy in, numpy out; native in, native
out. They call underscore hooks that take and return native arrays and assume valid
input; ``_log_prob``, ``_inverse`` and ``_forward`` all go through the one hook a backend
must write, ``_call(op, *args)``. The harness times the hooks, so no check or host
transfer lands in a timed region.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass

import numpy as np

from .canonical import FIXED, overflow_is_minus_inf
from .errors import (DeviceError, DTypeError, InvalidInput, NonFiniteError, ShapeError,
                     UnsupportedOp, UnsupportedSpec)
from .spec import FAMILIES, Spec, check_spec
from .work import Work


# the largest sample count and seed every framework takes: TF's shapes and stateless
# seeds are int32
MAX_DRAWS = 2 ** 31 - 1
MAX_SEED = 2 ** 31 - 1


def check_seed(seed) -> int:
    """The one seed rule of build, sample and base_sample: an int in [0, 2**31 - 1]."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InvalidInput(f"seed must be an int, got {seed!r}")
    if not 0 <= seed <= MAX_SEED:
        raise InvalidInput(f"seed must be in [0, {MAX_SEED}] (TF's stateless seeds are "
                           f"int32), got {seed}")
    return int(seed)


def check_target(target, spec) -> None:
    """A typed error unless target is a target density (``datasets.targets``) of the
    dimension of a vector flow that can be trained by reverse KL."""
    if spec.family != "vector":
        raise UnsupportedOp(f"reverse-KL training needs a vector flow, not a "
                            f"{type(spec).__name__}")
    if spec.transform == "mlp" and spec.direction == "density":
        raise UnsupportedOp("reverse-KL training of a density-direction mlp flow (NAF): "
                            "its sampling direction inverts the transformer by "
                            "bisection, which no gradient flows through")
    if not callable(getattr(target, "log_density", None)) or not hasattr(target, "dim"):
        raise InvalidInput(f"target must be a flowbench.datasets.targets.Target (a "
                           f"log_density(ops, x) and a dim), got {type(target).__name__}")
    if target.dim != spec.dim:
        raise ShapeError(f"target {getattr(target, 'name', '')!r} is {target.dim}-D, the "
                         f"flow {spec.dim}-D")


def _memory_bytes() -> int:
    """Physical memory available now."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no limit known
        return 2 ** 62


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


class Backend(abc.ABC):
    name: str = ""
    framework: str = ""
    native_types: tuple = ()
    # execution variants (eager, compiled, ...); the first is the default
    variants: tuple[str, ...] = ()
    # the spec families (adapters.spec.FAMILIES) it builds
    families: tuple[str, ...] = tuple(FAMILIES)
    # the library caches results keyed on the input tensor (TFP bijectors, pyro): timing
    # must hand every call a fresh tensor, or it times a cache lookup
    caches_inputs: bool = False
    # conditioner evaluations the backend's library issues per conditioned block on top of
    # the canonical count when an op also needs the log-det (TFP: one, see adapters/tfp)
    extra_logdet_passes: int = 0
    # what build() constructs: flow_class(backend, spec, seed, device, train, variant)
    flow_class: type[Flow]

    def build(self, spec: Spec, seed: int = 0, device: str = "cpu",
              train: TrainConfig | None = None, variant: str | None = None) -> Flow:
        """A flow of spec, initialised from seed, on device ('cpu', 'cuda:N'), trained
        with train (TrainConfig() by default), run in variant (the backend's default)."""
        check_spec(spec, self.families)
        variant = self._variant(variant)
        return self.flow_class(self, spec, check_seed(seed), device, train or TrainConfig(),
                               variant)

    @abc.abstractmethod
    def version(self) -> str: ...

    @abc.abstractmethod
    def to_numpy(self, a) -> np.ndarray: ...

    @abc.abstractmethod
    def to_native(self, a, device: str | None = None): ...

    @abc.abstractmethod
    def block(self, a):
        """a, once every computation that produces it has finished (async devices)."""

    def fresh(self, a):
        """A new native array equal to a (a device copy), so no input-keyed cache hits."""
        return self.to_native(a)

    @abc.abstractmethod
    def native_check(self, a) -> tuple[tuple, str, bool]:
        """(shape, dtype kind letter, all finite) of a native array."""

    @abc.abstractmethod
    def devices(self) -> list[str]: ...

    def clear_caches(self) -> None:
        """Drop compiled functions kept for reuse (a long process that builds many specs
        calls this now and then); flows that exist keep working. Nothing by default."""
        return None

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


class Flow(abc.ABC):
    """One flow of one backend; the contract is in this module's docstring."""

    variant: str = ""
    # conditioner-network evaluations made by the last op (sequential passes show here)
    passes: int = 0

    def __init__(self, backend: Backend, spec: Spec, device: str, train: TrainConfig,
                 variant: str):
        self.backend, self.spec, self.device = backend, spec, device
        self.train_config, self.variant = train, variant

    # --- backend hooks: native arrays in and out, input already checked ---------------
    @abc.abstractmethod
    def _call(self, op: str, *args):
        """Run op ("log_prob", "inverse", "forward", or another op the backend routes
        here) on native arguments and set ``passes``."""

    def _log_prob(self, x):
        return self._call("log_prob", x)

    def _inverse(self, x):
        return self._call("inverse", x)

    def _forward(self, z):
        return self._call("forward", z)

    @abc.abstractmethod
    def _sample(self, n: int, seed: int):
        """n draws, seeded: the forward map of ``_base_sample(n, seed)`` where there is one."""

    def _base_sample(self, n: int, seed: int):
        raise UnsupportedOp(f"backend {self.backend.name} does not expose the base draws "
                            f"of its sample op")

    @abc.abstractmethod
    def _train_step(self, x) -> float: ...

    def _train_step_reverse_kl(self, target, z) -> float:
        raise UnsupportedOp(f"backend {self.backend.name} has no reverse-KL training step "
                            f"(the matched backends have one)")

    def executed(self, run, analytic: float) -> Work | None:
        """The matmul and convolution FLOPs one call of ``run`` (a no-argument call of one
        of this flow's ops, as the harness times it) executes, from the framework's own
        counter (``work.py``). ``analytic`` is the count derived from ``passes``, which
        eager code executes as counted. None where the framework has no counter."""
        return None

    @abc.abstractmethod
    def _gradients(self, x) -> dict: ...

    # --- public contract --------------------------------------------------------------
    def log_prob(self, x):
        """log q(x) per row. For finite x, as numpy: a float, or -inf where the flow's
        float arithmetic overflowed on the way (the density underflows there); never NaN
        (``overflow_is_minus_inf``). A native result is the framework's own (the timed
        path adds no op), NaN included."""
        self._needs_inverse()
        native, was_numpy = self._accept(x, "x")
        out = self._give(self._log_prob(native), was_numpy)
        return overflow_is_minus_inf(out) if was_numpy else out

    def inverse(self, x):
        self._needs_inverse()
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

    def sample_and_log_prob(self, n: int, seed: int = 0, native: bool = False):
        """``(x, log q(x))`` of n draws, from one pass in the sampling direction: the base
        draws z of ``base_sample(n, seed)``, x = forward(z), and log q(x) = log p(z) -
        log|det dx/dz|, with no pass back through the inverse (IAF: one conditioner pass
        per layer; MAF: dim). x equals ``sample(n, seed)``; log q follows the tails rule
        of ``log_prob`` as numpy."""
        x, lp = self._sample_and_log_prob(*self._draws(n, seed))
        if native:
            return x, lp
        return self.backend.to_numpy(x), overflow_is_minus_inf(self.backend.to_numpy(lp))

    def _sample_and_log_prob(self, n: int, seed: int):
        from .ops import base_log_prob, for_framework

        z = self._base_sample(n, seed)
        x, logdet = self._forward(z)
        ops = for_framework(self.backend.framework)
        return x, base_log_prob(ops, z, getattr(self.spec, "base", "normal")) - logdet

    def base_sample(self, n: int, seed: int = 0, native: bool = False):
        """The n base-distribution draws that ``sample(n, seed)`` pushes through
        ``forward``: sample(n, seed) == forward(base_sample(n, seed))[0]."""
        out = self._base_sample(*self._draws(n, seed))
        return out if native else self.backend.to_numpy(out)

    def _draws(self, n, seed) -> tuple[int, int]:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InvalidInput(f"sample needs a positive int n, got {n!r}")
        if n > MAX_DRAWS:  # TF's int32 shapes wrap around, jax aborts the process
            raise InvalidInput(f"sample n={n} is above {MAX_DRAWS} (2**31 - 1), the most "
                               f"rows every framework can index; draw in batches")
        # the draws and the widest conditioner layer's activations, in and out, float32: a
        # lower bound on what one call holds (an allocator failure deep in a framework, or
        # the OOM killer, otherwise)
        hidden = getattr(self.spec, "hidden", ())  # an image spec's is per pixel: left out
        width = self.spec.dim + (max(hidden) if isinstance(hidden, tuple) and hidden else 0)
        need, free = 2 * 4 * int(n) * width, _memory_bytes()
        if need > free:
            raise InvalidInput(f"sample n={n} needs at least {need / 2 ** 30:.1f} GiB, more "
                               f"than the {free / 2 ** 30:.1f} GiB of memory available; "
                               f"draw in batches")
        return int(n), check_seed(seed)

    def train_step(self, x) -> float:
        self._needs_inverse()
        native, _ = self._accept(x, "x")
        return float(self._train_step(native))

    def train_step_reverse_kl(self, target, z) -> float:
        """One Adam step (the flow's TrainConfig) on the reverse KL to ``target``, a
        ``datasets.targets.Target`` (an unnormalised log-density written over the ops
        table, rendered in this flow's framework), estimated on base draws z, an
        (n, dim) array such as ``base_sample(n, seed)``: x = forward(z) with the gradient
        taken through the draws (reparameterised), and the loss
        mean(log q(x) - log p~(x)) with log q(x) = log p(z) - log|det dx/dz|, the one pass
        in the sampling direction of ``sample_and_log_prob``. Returns the loss: the
        negative ELBO, KL(q || p) - log Z. Matched backends fed the same draws take the
        same step. ActNorm has no data here: it starts where it is (identity at init)."""
        check_target(target, self.spec)
        native, _ = self._accept(z, "z")
        self._needs_init = False
        return float(self._train_step_reverse_kl(target, native))

    def gradients(self, x) -> dict[str, np.ndarray]:
        """Gradient of the mean NLL of batch x with respect to every trained canonical
        array, by canonical name; parameters are left unchanged. Parity tests compare
        these across backends directly, so no optimizer convention can hide a difference."""
        self._needs_inverse()
        native, _ = self._accept(x, "x")
        return {k: np.asarray(self.backend.to_numpy(v), np.float32)
                for k, v in self._gradients(native).items()}

    def num_params(self) -> int:
        """Trained scalars (fixed permutations and signs excluded)."""
        return int(sum(np.prod(shape) for name, (shape, _) in self.spec.weight_shapes().items()
                       if name.rsplit(".", 1)[-1] not in FIXED))

    def jacobian(self, a, direction: str = "forward", eps: float = 1e-3) -> np.ndarray:
        """Per-row Jacobian (n, dim, dim) of forward (z -> x) or inverse (x -> z).

        Central finite differences here; backends override it with autodiff.
        """
        if direction != "forward":
            self._needs_inverse()
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

    @abc.abstractmethod
    def get_weights(self) -> dict[str, np.ndarray]:
        """The canonical weights (canonical.py's layout), as numpy arrays."""

    @abc.abstractmethod
    def set_weights(self, weights: dict) -> None:
        """Load canonical weights (checked against the spec's layout)."""

    def initialize(self, x) -> None:
        """Data-dependent initialisation (Glow's ActNorm) from batch x; a no-op otherwise.

        Runs by itself on the first train_step. log_prob/inverse never change parameters,
        so round trips stay exact on an untrained flow.
        """
        native, _ = self._accept(x, "x")
        self._initialize(native)

    def _initialize(self, x) -> None:
        return None  # no data-dependent layer by default

    # --- checks -----------------------------------------------------------------------
    def _needs_inverse(self) -> None:
        """UnsupportedOp for an op that maps data to the latent on a flow without x -> z
        (planar, radial: ``spec.invertible``)."""
        if not getattr(self.spec, "invertible", True):
            from .residual import no_inverse
            raise UnsupportedOp(no_inverse(self.spec))

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
