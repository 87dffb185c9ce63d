"""Planar and radial layers (Rezende & Mohamed 2015), written once over the ops table
(``ops.py``) for the torch, jax and tfp backends: no flow library of those frameworks ships
them (TFP and distrax have neither), so the matched backends share this math, as they share
the image flows'.

Each layer maps z -> x in closed form with its log|det dx/dz|; x -> z has no closed form
(a scalar root per row), so these flows sample, evaluate the density of their own samples
(``sample_and_log_prob``) and train by reverse KL, and refuse ``inverse`` and ``log_prob``
(``spec.invertible``).

planar  x = z + u_hat tanh(w.z + b), with the paper's appendix-A constraint
        u_hat = u + (m(w.u) - w.u) w / |w|^2, m(a) = -1 + softplus(a), so that
        w.u_hat = m(w.u) > -1 for any raw u, w (w != 0): the layer is invertible.
        det = 1 + (1 - t^2) w.u_hat = t^2 + (1 - t^2) softplus(w.u), t = tanh(w.z + b):
        written so, it is positive in float arithmetic too.
radial  x = z + beta h (z - z0), h = 1 / (alpha + r), r = |z - z0|, with alpha =
        softplus(alpha_raw) > 0 and beta = -alpha + softplus(beta_raw) > -alpha.
        det = (1 + beta h)^(D-1) (1 + beta alpha h^2), computed as
        ((r + softplus(beta_raw)) h)^(D-1) ((r (r + 2 alpha) + alpha softplus(beta_raw)) h^2),
        both factors positive for any raw parameters.

Canonical arrays per layer (``canonical.py``): ``layers.{l}.planar.u``, ``.w`` (dim,),
``.b`` (1,); ``layers.{l}.radial.z0`` (dim,), ``.alpha``, ``.beta`` (1,) (raw, before the
constraint). They have no conditioner network: an op's ``passes`` is 0.
"""

from __future__ import annotations

KINDS = ("planar", "radial")
PARAMS = {"planar": ("u", "w", "b"), "radial": ("z0", "alpha", "beta")}


def shape(param: str, dim: int) -> tuple[int]:
    """A layer array's shape: vectors over the event (u, w, z0), else one scalar (1,)."""
    return (dim,) if param in ("u", "w", "z0") else (1,)


def planar_u_hat(ops, u, w):
    """The constrained u of a planar layer, and softplus(w.u) = 1 + w.u_hat."""
    wu = ops.sum(w * u, 0)
    sp = ops.softplus(wu)
    return u + (sp - 1.0 - wu) * w / ops.sum(w * w, 0), sp


def radial_coefficients(ops, alpha_raw, beta_raw):
    """(alpha, beta, softplus(beta_raw)) of a radial layer: beta + alpha = softplus(beta_raw)."""
    alpha, sb = ops.softplus(alpha_raw), ops.softplus(beta_raw)
    return alpha, sb - alpha, sb


def planar(ops, z, u, w, b):
    """(x, log|det dx/dz|) of one planar layer on rows z (n, dim)."""
    u_hat, sp = planar_u_hat(ops, u, w)
    t = ops.tanh(ops.sum(z * w, 1)[:, None] + b)
    det = t * t + (1.0 - t * t) * sp
    return z + t * u_hat, ops.log(det)[:, 0]


def radial(ops, z, z0, alpha_raw, beta_raw):
    """(x, log|det dx/dz|) of one radial layer on rows z (n, dim)."""
    alpha, beta, sb = radial_coefficients(ops, alpha_raw, beta_raw)
    diff = z - z0
    r = ops.sqrt(ops.sum(diff * diff, 1))[:, None]
    h = 1.0 / (alpha + r)
    dim = z.shape[-1]
    ld = (dim - 1) * ops.log((r + sb) * h) + ops.log((r * (r + 2.0 * alpha) + alpha * sb) * h * h)
    return z + beta * h * diff, ld[:, 0]


LAYERS = {"planar": planar, "radial": radial}


def layer(ops, kind: str, z, arrays):
    """(x, log|det|) of one layer of ``kind`` whose arrays come in ``PARAMS[kind]`` order."""
    return LAYERS[kind](ops, z, *arrays)


def named(params: dict, block) -> list:
    """A block's arrays from canonical name -> array, in ``PARAMS[kind]`` order."""
    return [params[f"{block.name}.{p}"] for p in PARAMS[block.kind]]


def no_inverse(spec) -> str:
    """Why x -> z is refused: the message of every backend's UnsupportedOp."""
    return (f"a {spec.transform} flow has no closed-form inverse (Rezende & Mohamed "
            f"2015): inverse, log_prob of outside data and NLL training are not offered; "
            f"sample, forward, sample_and_log_prob and train_step_reverse_kl are")
