"""Multi-scale image flows: the spec, the block layout and the canonical weights.

The image flows are the same kind of object as the vector flows of ``canonical.py``: a
framework-free spec, a list of blocks and a named weight layout that every matched backend
(torch, jax, tfp) builds from, so the same weights give the same function everywhere. The
math, written once against a small table of array ops per framework, is in
``image_flow.py``.

An image flow maps a flattened image x of shape (n, H*W*C) (C-order over height, width,
channel) to a latent z of the same size. Internally the state is NHWC.

Blocks, in x -> z order
-----------------------
squeeze   (h, w, c) -> (h/2, w/2, 4c); new channel 4 c + 2 i + j holds pixel (2 h' + i,
          2 w' + j) of old channel c (Glow's squeeze2d).
actnorm   per channel: z = (x - loc) * exp(-log_scale); data-dependent init from the first
          training batch (mean and std over batch, height and width).
invconv   Glow's invertible 1x1 convolution: every pixel's channel vector is mapped by
          W = P L (U + diag(sign exp(log_diag))) as in canonical's ``lu`` block;
          log|det| = h w sum(log_diag).
coupling  affine coupling v_B = u_B * c + shift, (shift, s) = net(u_A), with
          mask "channel": A = the first half of the channels (parity 0) or the second
            (parity 1), B the rest;
          mask "checker": A = pixels with (row + col) % 2 == parity, all channels; the net
            sees u * mask (RealNVP's checkerboard).
          The net is Glow's 3x3 conv -> ReLU -> 1x1 conv -> ReLU -> 3x3 conv, zero "same"
          padding. Output channel 2 k + p is parameter p (0 shift, 1 s) of the k-th
          transformed channel (dimension-major, as the vector layout).
          Scale: glow c = sigmoid(s + 2); realnvp log c = tanh(s) (bounded, for stability:
          RealNVP's learned scale factor of tanh is left out).
split     the second half of the channels leaves the flow as part of z (N(0, 1), Glow's
          learned conditional prior is left out); the first half goes on.

z is the concatenation of the split-off parts in the order they leave, then the final
state, each flattened in C-order.

Architectures
-------------
glow      for each level: squeeze, K x (actnorm, invconv, coupling channel), split
          (not after the last level).
realnvp   for each level but the last: K checkerboard couplings (alternating parity),
          squeeze, K channel couplings (alternating), split; the last level K
          checkerboard couplings. RealNVP's batch normalisation is left out.

Weight layout
-------------
``{block}.net.{k}.weight`` (kh, kw, c_in, c_out) (HWIO), ``.bias`` (c_out,), k = 0, 1, 2;
``{block}.loc``, ``.log_scale`` (c,); ``{block}.lower``, ``.upper`` (c, c),
``.log_diag``, ``.sign`` (c,), ``.perm`` (c,) int64, as the vector ``lu`` block.
Block names: ``levels.{l}.steps.{k}.{actnorm|invconv|coupling}`` (glow),
``levels.{l}.{checker|channel}.{k}.coupling`` (realnvp).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import canonical as C
from .errors import SpecError, UnknownArch
from .spec import Spec

IMAGE_ARCHS = ("glow", "realnvp")
IMAGE_SCALES = {"glow": "sigmoid", "realnvp": "tanh"}
KERNELS = (3, 1, 3)  # the coupling net's kernel sizes


@dataclass(frozen=True)
class ImageSpec(Spec):
    """A multi-scale image flow; ``levels`` L scales of ``steps`` K steps, ``hidden`` conv
    channels in every coupling net."""

    arch: str = "glow"
    shape: tuple[int, int, int] = (8, 8, 1)
    levels: int = 2
    steps: int = 4
    hidden: int = 32
    base: str = "normal"
    dtype: str = "float32"

    family = "image"

    def __post_init__(self):
        if not isinstance(self.arch, str) or self.arch not in IMAGE_ARCHS:
            raise UnknownArch(f"unknown image arch {self.arch!r}; known: "
                              f"{', '.join(IMAGE_ARCHS)}")
        try:
            shape = tuple(int(s) for s in self.shape)
        except TypeError:
            raise SpecError(f"shape must be (height, width, channels), got "
                            f"{self.shape!r}") from None
        object.__setattr__(self, "shape", shape)
        if len(shape) != 3 or min(shape) < 1:
            raise SpecError(f"shape must be (height, width, channels) >= 1, got {shape}")
        for name in ("levels", "steps", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{name} must be an int >= 1, got {value!r}")
        squeezes = self.levels if self.arch == "glow" else self.levels - 1
        H, W, _ = shape
        if H % 2 ** squeezes or W % 2 ** squeezes:
            raise SpecError(f"{self.arch} with {self.levels} levels squeezes {squeezes} "
                            f"times: height and width must be divisible by {2 ** squeezes}, "
                            f"got {H}x{W}")
        if self.arch == "realnvp" and self.levels == 1 and H * W < 2:
            raise SpecError("a checkerboard coupling needs at least 2 pixels")
        if self.base != "normal":
            raise SpecError(f"image flows have a standard normal base, got {self.base!r}")

    # --- what the harness reads from any spec ----------------------------------------------
    @property
    def dim(self) -> int:
        return int(np.prod(self.shape))

    @property
    def scale(self) -> str:
        return IMAGE_SCALES[self.arch]

    @property
    def actnorm(self) -> bool:
        return self.arch == "glow"

    @property
    def label(self) -> str:
        return f"{self.arch}-image"

    @property
    def layers(self) -> int:
        return self.levels * self.steps

    # --- the spec protocol: the layout below ---------------------------------------------
    def blocks(self) -> list[ImageBlock]:
        return blocks(self)

    def weight_shapes(self):
        return weight_shapes(self)

    def init_weights(self, seed: int = 0):
        return init_weights(self, seed)

    def random_weights(self, seed: int = 0, scale: float = 0.1):
        return random_weights(self, seed, scale)

    def conditioner_flops(self) -> float:
        return conditioner_flops(self)


@dataclass(frozen=True)
class ImageBlock:
    name: str
    kind: str                       # squeeze | actnorm | invconv | coupling | split
    shape: tuple[int, int, int]     # (h, w, c) of the block's input, x side
    mask: str = ""                  # coupling: channel | checker
    parity: int = 0

    @property
    def channels(self) -> int:
        return self.shape[2]

    def net_channels(self) -> tuple[int, int]:
        """(input, output) channels of a coupling's net."""
        c = self.channels
        if self.mask == "checker":
            return c, 2 * c
        half = c // 2 if self.parity == 0 else c - c // 2
        return half, 2 * (c - half)


def blocks(spec: ImageSpec) -> list[ImageBlock]:
    out: list[ImageBlock] = []
    h, w, c = spec.shape

    def add(name, kind, **kw):
        out.append(ImageBlock(name, kind, (h, w, c), **kw))

    for lvl in range(spec.levels):
        last = lvl == spec.levels - 1
        if spec.arch == "glow":
            add(f"levels.{lvl}.squeeze", "squeeze")
            h, w, c = h // 2, w // 2, 4 * c
            for k in range(spec.steps):
                add(f"levels.{lvl}.steps.{k}.actnorm", "actnorm")
                add(f"levels.{lvl}.steps.{k}.invconv", "invconv")
                add(f"levels.{lvl}.steps.{k}.coupling", "coupling", mask="channel")
        else:
            for k in range(spec.steps):
                add(f"levels.{lvl}.checker.{k}.coupling", "coupling", mask="checker",
                    parity=k % 2)
            if last:
                break
            add(f"levels.{lvl}.squeeze", "squeeze")
            h, w, c = h // 2, w // 2, 4 * c
            for k in range(spec.steps):
                add(f"levels.{lvl}.channel.{k}.coupling", "coupling", mask="channel",
                    parity=k % 2)
        if not last:
            if c < 2:
                raise SpecError(f"cannot split {c} channel(s) at level {lvl}")
            add(f"levels.{lvl}.split", "split")
            c = c // 2
    return out


def weight_shapes(spec: ImageSpec) -> dict[str, tuple[tuple[int, ...], str]]:
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    for b in blocks(spec):
        c = b.channels
        if b.kind == "coupling":
            cin, cout = b.net_channels()
            widths = (cin, spec.hidden, spec.hidden, cout)
            for k, kernel in enumerate(KERNELS):
                shapes[f"{b.name}.net.{k}.weight"] = (
                    (kernel, kernel, widths[k], widths[k + 1]), "float32")
                shapes[f"{b.name}.net.{k}.bias"] = ((widths[k + 1],), "float32")
        elif b.kind == "actnorm":
            shapes[f"{b.name}.loc"] = ((c,), "float32")
            shapes[f"{b.name}.log_scale"] = ((c,), "float32")
        elif b.kind == "invconv":
            shapes[f"{b.name}.lower"] = ((c, c), "float32")
            shapes[f"{b.name}.upper"] = ((c, c), "float32")
            shapes[f"{b.name}.log_diag"] = ((c,), "float32")
            shapes[f"{b.name}.sign"] = ((c,), "float32")
            shapes[f"{b.name}.perm"] = ((c,), "int64")
    return shapes


def conditioner_flops(spec: ImageSpec) -> float:
    """The coupling nets are conv nets: 2 * kh * kw * c_in * c_out per output pixel."""
    shapes = weight_shapes(spec)
    convs = [b for b in blocks(spec) if b.kind == "coupling"]
    total = sum(2 * b.shape[0] * b.shape[1] * int(np.prod(shapes[name][0]))
                for b in convs for name in shapes
                if name.startswith(b.name + ".") and name.endswith(".weight"))
    return total / len(convs)


def init_weights(spec: ImageSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded canonical initialiser: uniform +-1/sqrt(fan_in) conv weights, the last conv
    of each net scaled by OUTPUT_INIT_SCALE (Glow zero-initialises it; small and random
    keeps parity tests meaningful from the start), identity ActNorm, a random rotation
    LU-decomposed for each 1x1 convolution."""
    rng = np.random.default_rng(seed)
    shapes = weight_shapes(spec)
    w: dict[str, np.ndarray] = {}
    for b in blocks(spec):
        if b.kind == "coupling":
            for k in range(len(KERNELS)):
                shape = shapes[f"{b.name}.net.{k}.weight"][0]
                kh, kw, cin, _ = shape
                bound = 1.0 / np.sqrt(kh * kw * cin)
                if k == len(KERNELS) - 1:
                    bound *= C.OUTPUT_INIT_SCALE
                w[f"{b.name}.net.{k}.weight"] = rng.uniform(-bound, bound, shape).astype(
                    np.float32)
                w[f"{b.name}.net.{k}.bias"] = rng.uniform(-bound, bound, shape[-1]).astype(
                    np.float32)
        elif b.kind == "actnorm":
            w[f"{b.name}.loc"] = np.zeros(b.channels, np.float32)
            w[f"{b.name}.log_scale"] = np.zeros(b.channels, np.float32)
        elif b.kind == "invconv":
            w.update({f"{b.name}.{k}": v for k, v in C.lu_init(rng, b.channels).items()})
    return w


def random_weights(spec: ImageSpec, seed: int = 0, scale: float = 0.1) -> dict[str, np.ndarray]:
    """The initial weights plus N(0, scale^2) noise (divided by sqrt(fan_in) on conv
    weights) on every trained array: far enough from the identity for parity checks."""
    rng = np.random.default_rng([seed, 7])
    w = init_weights(spec, seed)
    for name, arr in w.items():
        if name.rsplit(".", 1)[-1] in C.FIXED:
            continue
        noise = scale * rng.standard_normal(arr.shape)
        if name.endswith(".weight"):
            noise /= np.sqrt(np.prod(arr.shape[:3]))
        w[name] = (arr + noise).astype(np.float32)
    return w
