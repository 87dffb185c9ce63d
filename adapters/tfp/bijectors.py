"""Canonical blocks as tfp.bijectors, each oriented x -> z (forward = density direction).

From TFP as shipped: RealNVP (coupling, both masks: a negative ``num_masked`` conditions on
the last units), MaskedAutoregressiveFlow (MADE blocks, with our masked network inside
``bijector_fn``), RationalQuadraticSpline, Shift, Scale, ScaleMatvecLU, Invert, Chain.
Written here because TFP has no such piece: the deep sigmoidal transformer with its
bisection inverse in ``tf.while_loop`` (the shared ``adapters/naf.py`` on the TF ops
table), and the masked conditioner network (TFP's
AutoregressiveNetwork assigns hidden degrees in contiguous blocks, ``hidden_degrees=
'equal'``, not the canonical cyclic ones, so the same weights would compute another
function; its output layout is also parameter-major).

Where TFP's conventions differ from the canonical ones, and what is done about it:

- Direction: TFP's MaskedAutoregressiveFlow ``forward`` is the sequential direction (x =
  f(z) with dim passes) and its ``inverse`` the one-pass direction. A density-fast MADE
  block (one pass x -> z) is therefore ``Invert(MAF(bijector_fn=lambda v:
  Invert(g(theta(v)))))``: MAF's one-pass inverse then applies the canonical g.
- Spline: TFP takes constrained bin widths, heights and K-1 interior slopes, and puts no
  minimums on them; the canonical ``1e-3 + (1 - 1e-3 K) softmax`` sizes scaled to 2B and
  ``1e-3 + softplus`` slopes are computed here. Its boundary slopes are 1 and its tails the
  identity, as in the canonical spline. Its last knot is ``range_min + cumsum(widths)``,
  equal to B up to float32 rounding (the canonical spline pins it to B exactly).
- ScaleMatvecLU's ``permutation`` is that of ``tf.linalg.lu``: W = P^-1 L U with
  (P y) = y[perm]. The canonical W selects rows, W = (L U)[perm], so TFP gets the
  inverse permutation, ``argsort(perm)``.
- Cost of the sequential direction: MAF's while_loop applies ``bijector_fn(y).forward``
  to every dimension on each of its dim passes (the canonical loop solves one dimension
  per pass). Same result after dim passes; for NAF, whose inverse is bisection, dim times
  the transformer work.
- Log-det: TFP computes a coupling or MADE block's log-det with a second call of
  ``bijector_fn`` (RealNVP and MAF's inverse), and the log-det of MAF's sequential
  direction as -ildj(forward(x)), one more conditioner pass. These are issued passes;
  TF's graph optimiser may merge the duplicate in the function and XLA variants.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from .. import canonical as C, naf, residual
from ..errors import UnsupportedOp
from ..conditioner import mlp
from ..passes import PassCounter
from .ops import OPS

tfb = tfp.bijectors


class DeepSigmoidal(tfb.Bijector):
    """NAF's monotone transformer, elementwise; inverse by bisection."""

    def __init__(self, a, b, w, name="deep_sigmoidal"):
        self.a, self.b, self.w = a, b, w
        super().__init__(forward_min_event_ndims=0, name=name,
                         parameters=dict(a=a, b=b, w=w))

    @classmethod
    def _parameter_properties(cls, dtype):
        return dict()

    def _forward(self, x):
        return naf.dsf(OPS, x, self.a, self.b, self.w)[0]

    def _forward_log_det_jacobian(self, x):
        return naf.dsf(OPS, x, self.a, self.b, self.w)[1]

    def _inverse(self, y):
        return naf.dsf_root(OPS, y, self.a, self.b, self.w)

    def _inverse_log_det_jacobian(self, y):
        return -naf.dsf(OPS, self.inverse(y), self.a, self.b, self.w)[1]


def _knots(raw, bound):
    K = raw.shape[-1]
    return 2 * bound * (C.MIN_BIN_SIZE + (1 - C.MIN_BIN_SIZE * K) * tf.nn.softmax(raw, -1))


class RationalQuadraticSpline(tfb.RationalQuadraticSpline):
    """TFP's spline, with outputs that keep their input's static shape: with one unit per
    row its broadcasting loses the last dimension, which RealNVP and MAF's while_loop need
    to know while tracing."""

    def _forward(self, x):
        out = super()._forward(x)
        out.set_shape(x.shape)
        return out

    def _inverse(self, y):
        out = super()._inverse(y)
        out.set_shape(y.shape)
        return out


def transformer(theta, spec) -> tfb.Bijector:
    """The scalar bijector g(.; theta) for theta (..., P), elementwise over (...)."""
    t = spec.transform
    if t == "additive":
        return tfb.Shift(theta[..., 0])
    if t == "affine":
        s = theta[..., 1]
        log_scale = s if spec.scale == "exp" else tf.math.log_sigmoid(s + 2.0)
        return tfb.Chain([tfb.Shift(theta[..., 0]), tfb.Scale(log_scale=log_scale)])
    if t == "spline":
        K, B = spec.bins, float(spec.tail_bound)
        return RationalQuadraticSpline(
            bin_widths=_knots(theta[..., :K], B), bin_heights=_knots(theta[..., K:2 * K], B),
            knot_slopes=C.MIN_DERIVATIVE + tf.math.softplus(theta[..., 2 * K:]),
            range_min=-B)
    M = spec.naf_hidden
    return DeepSigmoidal(theta[..., :M], theta[..., M:2 * M], theta[..., 2 * M:])


class MaskedAutoregressive(tfb.MaskedAutoregressiveFlow):
    """TFP's MAF, with the pass counter told how often its while_loop body runs."""

    def __init__(self, bijector_fn, dim: int, counter: PassCounter):
        self._dim, self._counter = dim, counter
        super().__init__(bijector_fn=bijector_fn)

    def _forward(self, x, **kwargs):
        if tf.executing_eagerly():  # the loop runs in Python and counts itself
            return super()._forward(x, **kwargs)
        # traced: TFP calls bijector_fn once outside the loop (dead code), then the body
        with self._counter.loop(self._dim, skip=1):
            return super()._forward(x, **kwargs)


class Residual(tfb.Bijector):
    """A planar or radial layer (``adapters/residual.py``): its inverse is the layer's
    z -> x; its forward, x -> z, has no closed form and is refused. TFP asks for the
    inverse and its log-det separately: the layer runs twice (cheap next to a network)."""

    def __init__(self, kind: str, arrays, spec, name="residual"):
        self.kind, self.arrays, self.spec = kind, arrays, spec
        super().__init__(forward_min_event_ndims=1, name=name, parameters=dict(kind=kind))

    @classmethod
    def _parameter_properties(cls, dtype):
        return dict()

    def _forward(self, x):
        raise UnsupportedOp(residual.no_inverse(self.spec))

    _forward_log_det_jacobian = _forward

    def _inverse(self, y):
        return residual.layer(OPS, self.kind, y, self.arrays)[0]

    def _inverse_log_det_jacobian(self, y):
        return residual.layer(OPS, self.kind, y, self.arrays)[1]


def block_bijector(block: C.Block, params: dict, spec, counter: PassCounter) -> tfb.Bijector:
    """One canonical block as a TFP bijector whose forward is x -> z."""
    n = block.name
    if block.kind in residual.KINDS:
        return Residual(block.kind, residual.named(params, block), spec)
    if block.kind == "actnorm":
        return tfb.Chain([tfb.Scale(log_scale=-params[f"{n}.log_scale"]),
                          tfb.Shift(-params[f"{n}.loc"])])
    if block.kind == "scale":
        return tfb.Scale(log_scale=params[f"{n}.log_scale"])
    if block.kind == "lu":
        D = block.dim
        lower_upper = (params[f"{n}.lower"] * np.tril(np.ones((D, D), np.float32), -1)
                       + params[f"{n}.upper"] * np.triu(np.ones((D, D), np.float32), 1)
                       + tf.linalg.diag(params[f"{n}.sign"] * tf.exp(params[f"{n}.log_diag"])))
        perm = tf.cast(params[f"{n}.perm"], tf.int32)
        return tfb.ScaleMatvecLU(lower_upper, tf.argsort(perm))
    masks = C.block_masks(block)
    if masks is not None:  # masked once per call: TFP's while_loop would redo it every pass
        params = dict(params)
        for k, m in enumerate(masks):
            params[f"{n}.net.{k}.weight"] = params[f"{n}.net.{k}.weight"] * tf.constant(m)
        masks = None
    act = tf.nn.relu if spec.activation == "relu" else tf.tanh
    P = block.params_per_dim

    if block.kind == "coupling":
        k = len(block.identity)
        num_masked = k if block.identity[0] == 0 else -k

        def bijector_fn(cond, units):
            out = mlp(params, block, None, act, cond, counter)
            return transformer(tf.reshape(out, [-1, units, P]), spec)

        core = tfb.RealNVP(num_masked=num_masked, bijector_fn=bijector_fn)
        return tfb.Invert(core) if block.inverted else core

    def made_fn(v):
        out = mlp(params, block, masks, act, v, counter)
        return tfb.Invert(transformer(tf.reshape(out, [-1, block.dim, P]), spec))

    maf = MaskedAutoregressive(made_fn, block.dim, counter)
    # MAF's one-pass inverse applies g: that is x -> z for a density-fast block
    return maf if block.inverted else tfb.Invert(maf)

