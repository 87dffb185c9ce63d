"""The canonical model: structure, math and weight layout shared by every matched backend.

Same spec + same canonical weights => same function in every backend. This module is the
single definition of both; backends build from ``blocks(spec)`` and read/write
``dict[str, numpy.ndarray]`` in the layout below. ``adapters/reference.py`` evaluates the
same math in float64 numpy, and the tests hold every backend to it.

The vector layout is written here; a spec carries its own (``Spec.weight_shapes``,
``init_weights``, ``random_weights``: ``FlowSpec``'s call the ``vector_*`` functions
below, ``ImageSpec``'s those of ``image.py``), and the module-level ``weight_shapes``,
``init_weights``, ``random_weights`` and ``check_weights`` take a spec of either kind.

Direction words
---------------
x is data, z is latent. ``inverse``/``log_prob`` go x -> z (density direction),
``forward``/``sample`` go z -> x (sampling direction). Blocks are listed in x -> z order.

Transformers (one scalar bijection per dimension, parameters from the conditioner)
-------------------------------------------------------------------------------
Each transformer has an *easy* map v = g(u; theta) with a closed form and log g'(u):

additive  theta = [shift]                 v = u + shift
affine    theta = [shift, s]              v = u * c + shift, c = exp(s) (scale="exp") or
                                          c = sigmoid(s + 2) (scale="sigmoid", Glow)
spline    theta = [w (K), h (K), d (K-1)] rational-quadratic spline on [-B, B] (B =
          tail_bound), identity outside, as in Durkan et al. 2019 / nflows: bin widths
          and heights = 1e-3 + (1 - 1e-3 K) softmax(.), scaled to 2B; interior knot
          derivatives 1e-3 + softplus(d); boundary derivatives exactly 1.
mlp       theta = [a (M), b (M), w (M)]   deep sigmoidal flow (Huang et al. 2018), M =
          naf_hidden: v = logit(sum_j softmax(w)_j sigmoid(alpha_j u + b_j)), alpha_j =
          1e-3 + softplus(a_j); evaluated in log space, so v is finite on all of R.
          Its inverse is bisection (bracket doubling, then halving to BISECTION_TOL).

Layers (the "core" map h: u -> v of a conditioned block)
-------------------------------------------------------
coupling        v_A = u_A, v_B = g(u_B; theta(u_A)); A = ``identity`` indices, B =
                ``transformed``. Even layers: A = first dim//2 indices; odd layers: A = last
                dim//2 (the mirrored mask), B the rest, both in increasing index order.
autoregressive  v_i = g(u_i; theta_i(u_{<i})) with MADE masks; the inverse of h takes
                dim sequential conditioner passes, one per degree.
A density-fast block (direction="density") uses h for x -> z: one pass for log_prob,
dim passes (autoregressive) to sample. A sampling-fast block uses h for z -> x: IAF is
exactly the MAF block inverted, with the same weights.

actnorm   z = (x - loc) * exp(-log_scale); data-dependent init sets loc = mean and
          log_scale = log(std + 1e-6) of its input on the first training batch.
lu        z = W x, W = P L (U + diag(sign * exp(log_diag))), L unit lower triangular,
          U strictly upper; (P y)_i = y[perm[i]]. log|det| = sum(log_diag).
scale     NICE's final diagonal scaling: z = x * exp(log_scale).
planar, radial   Rezende & Mohamed's layers (``residual.py``), one per layer, z -> x in
          closed form only (sampling direction, ``inverted``); no conditioner network.

Base: standard normal or standard logistic, independent over dimensions.

Weight layout (names, shapes, orientation)
------------------------------------------
Conditioner networks are MLPs ``y = act(x @ weight + bias)``; weight is (fan_in, fan_out).

``layers.{l}.{kind}.net.{k}.weight`` (fan_in, fan_out), ``...net.{k}.bias`` (fan_out,)
    kind = coupling or made; k = 0 .. len(hidden). The last layer has
    ``len(B) * P`` (coupling) or ``dim * P`` (made) outputs, dimension-major: column
    ``i * P + p`` is parameter p of the i-th transformed dimension (P = params_per_dim).
    MADE weights are stored multiplied by their masks (``made_masks``).
``layers.{l}.actnorm.loc``, ``.log_scale``            (dim,)
``layers.{l}.lu.lower``, ``.upper``                   (dim, dim), strictly lower/upper part
``layers.{l}.lu.log_diag``                            (dim,)
``layers.{l}.lu.sign`` (dim,) float, ``.perm`` (dim,) int64: fixed, not trained
``scale.log_scale``                                   (dim,)
``layers.{l}.planar.u``, ``.w`` (dim,), ``.b`` (1,)   raw, before the constraint
``layers.{l}.radial.z0`` (dim,), ``.alpha``, ``.beta`` (1,)   raw, before the constraint
Every float array is float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import InvalidInput
from .residual import KINDS as RESIDUAL, PARAMS as RESIDUAL_PARAMS, shape as residual_shape

if TYPE_CHECKING:  # spec.py imports this module: the specs call the layout written here
    from .spec import FlowSpec, Spec

MIN_BIN_SIZE = 1e-3
MIN_DERIVATIVE = 1e-3
MIN_DSF_SLOPE = 1e-3
ACTNORM_EPS = 1e-6
BISECTION_TOL = 1e-6     # bisection stops when the bracket is below tol * (1 + |u|)
BISECTION_MAX_ITERS = 100
OUTPUT_INIT_SCALE = 0.1  # the last conditioner layer starts small: flows start near identity
FIXED = ("perm", "sign")  # canonical arrays that are structure, not trained parameters


@dataclass(frozen=True)
class Block:
    name: str                      # weight-name prefix, e.g. "layers.0.made"
    kind: str                      # coupling | made | actnorm | lu | scale | planar | radial
    dim: int
    inverted: bool = False         # sampling-fast: the core map h runs z -> x
    identity: tuple[int, ...] = ()     # coupling: conditioning indices A
    transformed: tuple[int, ...] = ()  # coupling: transformed indices B
    degrees: tuple[int, ...] = ()      # made: input degrees (1..dim)
    net_sizes: tuple[int, ...] = ()    # conditioner layer widths, input to output
    params_per_dim: int = 0
    extras: dict = field(default_factory=dict, compare=False)

    @property
    def conditioned(self) -> bool:
        return self.kind in ("coupling", "made")


def coupling_split(dim: int, layer: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    k = dim // 2
    identity = tuple(range(k)) if layer % 2 == 0 else tuple(range(dim - k, dim))
    transformed = tuple(i for i in range(dim) if i not in identity)
    return identity, transformed


def input_degrees(dim: int, layer: int) -> np.ndarray:
    """MADE input degrees: natural order on even layers, reversed on odd ones."""
    d = np.arange(1, dim + 1)
    return d if layer % 2 == 0 else d[::-1].copy()


def hidden_degrees(width: int, dim: int) -> np.ndarray:
    """Cyclic hidden degrees (nflows/normflows convention), in 1..max(1, dim-1)."""
    return np.arange(width) % max(1, dim - 1) + 1


def made_masks(degrees, hidden: tuple[int, ...], params_per_dim: int) -> list[np.ndarray]:
    """Masks (fan_in, fan_out) for each MADE layer; the output is dimension-major."""
    degrees = np.asarray(degrees)
    dim = len(degrees)
    masks, prev = [], degrees
    for width in hidden:
        cur = hidden_degrees(width, dim)
        masks.append((cur[None, :] >= prev[:, None]).astype(np.float32))
        prev = cur
    out = np.repeat(degrees, params_per_dim)
    masks.append((out[None, :] > prev[:, None]).astype(np.float32))
    return masks


def blocks(spec: FlowSpec) -> list[Block]:
    """A vector flow as a list of blocks in x -> z order."""
    out: list[Block] = []
    P, D = spec.params_per_dim, spec.dim
    inverted = spec.direction == "sampling"
    if spec.transform in RESIDUAL:
        return [Block(f"layers.{l}.{spec.transform}", spec.transform, D, True)
                for l in range(spec.layers)]
    for l in range(spec.layers):
        if spec.actnorm:
            out.append(Block(f"layers.{l}.actnorm", "actnorm", D))
        if spec.linear == "lu":
            out.append(Block(f"layers.{l}.lu", "lu", D))
        if spec.conditioner == "coupling":
            a, b = coupling_split(D, l)
            out.append(Block(f"layers.{l}.coupling", "coupling", D, inverted, a, b,
                             net_sizes=(len(a), *spec.hidden, len(b) * P),
                             params_per_dim=P))
        else:
            out.append(Block(f"layers.{l}.made", "made", D, inverted,
                             degrees=tuple(int(d) for d in input_degrees(D, l)),
                             net_sizes=(D, *spec.hidden, D * P), params_per_dim=P))
    if spec.final_scale:
        out.append(Block("scale", "scale", D))
    return out


def block_masks(block: Block) -> list[np.ndarray] | None:
    if block.kind != "made":
        return None
    return made_masks(block.degrees, block.net_sizes[1:-1], block.params_per_dim)


def weight_shapes(spec: Spec) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) of every canonical array of spec, in a stable order."""
    return spec.weight_shapes()


def init_weights(spec: Spec, seed: int = 0) -> dict[str, np.ndarray]:
    """The seeded canonical initialiser: every backend built with this seed starts here."""
    return spec.init_weights(seed)


def random_weights(spec: Spec, seed: int = 0, scale: float = 0.1) -> dict[str, np.ndarray]:
    """The initial weights plus N(0, scale^2) noise on every trained array: a flow far
    enough from identity that parity and round-trip checks mean something."""
    return spec.random_weights(seed, scale)


def vector_weight_shapes(spec: FlowSpec) -> dict[str, tuple[tuple[int, ...], str]]:
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    for b in blocks(spec):
        D = b.dim
        if b.conditioned:
            for k, (fi, fo) in enumerate(zip(b.net_sizes[:-1], b.net_sizes[1:])):
                shapes[f"{b.name}.net.{k}.weight"] = ((fi, fo), "float32")
                shapes[f"{b.name}.net.{k}.bias"] = ((fo,), "float32")
        elif b.kind == "actnorm":
            shapes[f"{b.name}.loc"] = ((D,), "float32")
            shapes[f"{b.name}.log_scale"] = ((D,), "float32")
        elif b.kind == "lu":
            shapes[f"{b.name}.lower"] = ((D, D), "float32")
            shapes[f"{b.name}.upper"] = ((D, D), "float32")
            shapes[f"{b.name}.log_diag"] = ((D,), "float32")
            shapes[f"{b.name}.sign"] = ((D,), "float32")
            shapes[f"{b.name}.perm"] = ((D,), "int64")
        elif b.kind == "scale":
            shapes[f"{b.name}.log_scale"] = ((D,), "float32")
        elif b.kind in RESIDUAL:
            for p in RESIDUAL_PARAMS[b.kind]:
                shapes[f"{b.name}.{p}"] = (residual_shape(p, D), "float32")
    return shapes


def lu_init(rng: np.random.Generator, D: int) -> dict[str, np.ndarray]:
    """A random rotation, LU-decomposed (Glow's initialisation of its 1x1 convolution)."""
    import scipy.linalg

    q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    pmat, lower, upper = scipy.linalg.lu(q)
    diag = np.diag(upper)
    return {"lower": np.tril(lower, -1).astype(np.float32),
            "upper": np.triu(upper, 1).astype(np.float32),
            "log_diag": np.log(np.abs(diag)).astype(np.float32),
            "sign": np.sign(diag).astype(np.float32),
            "perm": np.argmax(pmat, axis=1).astype(np.int64)}


def vector_init_weights(spec: FlowSpec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w: dict[str, np.ndarray] = {}
    for b in blocks(spec):
        D = b.dim
        if b.conditioned:
            masks = block_masks(b)
            n = len(b.net_sizes) - 1
            for k, (fi, fo) in enumerate(zip(b.net_sizes[:-1], b.net_sizes[1:])):
                bound = 1.0 / np.sqrt(max(fi, 1))
                if k == n - 1:
                    bound *= OUTPUT_INIT_SCALE
                weight = rng.uniform(-bound, bound, (fi, fo))
                if masks is not None:
                    weight = weight * masks[k]
                w[f"{b.name}.net.{k}.weight"] = weight.astype(np.float32)
                w[f"{b.name}.net.{k}.bias"] = rng.uniform(-bound, bound, fo).astype(np.float32)
        elif b.kind == "actnorm":
            w[f"{b.name}.loc"] = np.zeros(D, np.float32)
            w[f"{b.name}.log_scale"] = np.zeros(D, np.float32)
        elif b.kind == "lu":
            w.update({f"{b.name}.{k}": v for k, v in lu_init(rng, D).items()})
        elif b.kind == "scale":
            w[f"{b.name}.log_scale"] = np.zeros(D, np.float32)
        elif b.kind in RESIDUAL:
            w.update({f"{b.name}.{k}": v for k, v in residual_init(rng, b.kind, D).items()})
    return w


def residual_init(rng: np.random.Generator, kind: str, D: int) -> dict[str, np.ndarray]:
    """normflows' initialisation: planar u, w ~ U(+-1/sqrt(D)), b = 0; radial centre
    z0 ~ N(0, I), raw alpha and beta ~ U(+-1/sqrt(D)) (beta = -alpha + softplus(raw)
    starts small: each layer starts near the identity)."""
    lim = 1.0 / np.sqrt(D)
    if kind == "planar":
        return {"u": rng.uniform(-lim, lim, D).astype(np.float32),
                "w": rng.uniform(-lim, lim, D).astype(np.float32),
                "b": np.zeros(1, np.float32)}
    return {"z0": rng.standard_normal(D).astype(np.float32),
            "alpha": rng.uniform(-lim, lim, 1).astype(np.float32),
            "beta": rng.uniform(-lim, lim, 1).astype(np.float32)}


def vector_random_weights(spec: FlowSpec, seed: int = 0,
                          scale: float = 0.1) -> dict[str, np.ndarray]:
    """The noise is divided by sqrt(fan_in) on network weights: tame enough to stay finite
    at |x| = 50."""
    rng = np.random.default_rng([seed, 7])
    w = vector_init_weights(spec, seed)
    for b in blocks(spec):
        masks = block_masks(b)
        for name in [k for k in w if k.startswith(b.name + ".")]:
            if name.rsplit(".", 1)[-1] in FIXED:
                continue
            noise = scale * rng.standard_normal(w[name].shape)
            if name.endswith(".weight"):  # keep pre-activations O(scale) as fan-in grows
                noise /= np.sqrt(w[name].shape[0])
                if masks is not None:
                    noise = noise * masks[int(name.split(".")[-2])]
            w[name] = (w[name] + noise).astype(np.float32)
    return w


def conditioner_flops(spec: FlowSpec) -> float:
    """FLOPs per row of one conditioner evaluation, averaged over the conditioned blocks
    (coupling blocks alternate masks but have the same widths)."""
    nets = [b for b in blocks(spec) if b.conditioned]
    if not nets:
        return 0.0
    total = sum(2 * fi * fo for b in nets for fi, fo in zip(b.net_sizes[:-1], b.net_sizes[1:]))
    return total / len(nets)


def check_weights(spec: Spec, weights: dict) -> dict[str, np.ndarray]:
    """Validate a canonical weight dict against the spec; returns float32/int64 copies."""
    shapes = weight_shapes(spec)
    if not isinstance(weights, dict):
        raise InvalidInput(f"weights must be a dict name -> array, got {type(weights).__name__}")
    missing = sorted(set(shapes) - set(weights))
    extra = sorted(set(weights) - set(shapes))
    if missing or extra:
        raise InvalidInput(f"weights do not match the canonical layout of this spec: "
                           f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                           f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}")
    out = {}
    for name, (shape, dtype) in shapes.items():
        arr = np.asarray(weights[name])
        if arr.shape != shape:
            raise InvalidInput(f"weight {name}: shape {arr.shape}, expected {shape}")
        if dtype == "int64":
            if not np.array_equal(np.sort(arr), np.arange(shape[0])):
                raise InvalidInput(f"weight {name} must be a permutation of 0..{shape[0] - 1}")
            out[name] = arr.astype(np.int64)
            continue
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)):
            raise InvalidInput(f"weight {name} must be finite floats")
        out[name] = arr.astype(np.float32)
    for name in out:
        if name.endswith(".sign") and not np.all(np.abs(out[name]) == 1):
            raise InvalidInput(f"weight {name} must hold only +1 and -1")
    return out


def actnorm_init(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Data-dependent ActNorm init from a batch: (loc, log_scale)."""
    u = np.asarray(u, np.float64)
    return (u.mean(0).astype(np.float32),
            np.log(u.std(0) + ACTNORM_EPS).astype(np.float32))


def overflow_is_minus_inf(log_density: np.ndarray) -> np.ndarray:
    """The tails contract of ``log_prob``: NaN from finite input only arises from inf - inf
    or 0 * inf after an overflow (a latent or a scale beyond float range, where the true
    log-density is below what the dtype holds), so it is -inf; TFP's bijectors already
    give -inf there, torch and jax NaN. Every backend, peer and the float64 reference
    keep this one rule, so a far-tail row reads the same everywhere."""
    return np.where(np.isnan(log_density), -np.inf, log_density)
