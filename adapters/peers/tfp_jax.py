"""TensorFlow Probability's bijectors on its JAX substrate (tfp-nightly), without TensorFlow.

Direction: TFP names directions as the protocol does. A TransformedDistribution's bijector
maps base -> data (``forward`` = sampling), and so every affine or spline map below is
parameterised in the sampling direction (x = z * exp(s) + t), the reverse of the canonical
x -> z form. MaskedAutoregressiveFlow's ``forward`` is the sequential direction (a
while_loop of ``dim`` network passes) and its ``inverse`` one pass: as a data-side bijector
that is MAF (sampling sequential, density one pass); ``Invert`` of it is IAF.

Surprises:

- Importing the substrate, and also *first touching* ``tfp.bijectors`` or
  ``tfp.distributions`` (lazy modules), tries to import TensorFlow just to copy
  docstrings; both happen inside ``without_tensorflow`` so no TensorFlow loads here.
- ``tfb.AutoregressiveNetwork`` raises in this substrate (it needs Keras), so the MADE
  is our own: ``adapters.conditioner.mlp`` with ``adapters.canonical.made_masks``.
- Bijectors are pytrees, but a RealNVP/MAF holds its network as a Python callable, which
  JAX treats as static: weights closed over there would not train. The model is therefore
  a dict of weight arrays (plus the spec, static), and each op rebuilds the bijector chain
  from it. Rebuilding also means TFP's input-keyed bijector cache never spans two ops.
- MAF's sequential ``forward`` has no log-det of its own: TFP takes -ildj at the result,
  one more network pass per layer (dim + 1 passes per layer to compute x and its log-det).
- RealNVP and MAF's inverse compute the log-det with a second call of the network
  (2 passes per layer for log_prob).
- RationalQuadraticSpline fails under ``jax.jit`` with JAX 0.10 ("Shapes must be 1D
  sequences of concrete values"): it builds a shape from ``tf.rank``, a jnp scalar that
  JAX now stages. Spline ops run under ``jax.ensure_compile_time_eval`` (see _tracing).
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import canonical as C
from ..conditioner import mlp
from ..passes import PassCounter
from ..quiet import without_tensorflow
from ..spec import FlowSpec
from .base import Offer
from .jax_common import JaxPeerBackend

with without_tensorflow():  # the substrate and its lazy submodules would load TensorFlow
    from tensorflow_probability.substrates import jax as tfp
    tfb, tfd = tfp.bijectors, tfp.distributions

# TFP's docs (RationalQuadraticSpline) constrain the network outputs with these minimums
MIN_BIN_WIDTH = 1e-3
MIN_SLOPE = 1e-3

_SAMPLING_SIDE = ("parameterised in the sampling direction, TFP's convention: x = z * "
                  "exp(s) + t (canonical: z = x * exp(s) + t)")
_MADE = ("own MADE (TFP's AutoregressiveNetwork raises in the JAX substrate): the canonical "
         "masked MLP (adapters.conditioner.mlp, made_masks with cyclic hidden degrees), "
         "natural input order in every layer")
_PERMUTE = "tfb.Permute(reversed) between layers (canonical: MADE degrees reversed on odd layers)"
_SPLINE = ("tfb.RationalQuadraticSpline on [-B, B] as in TFP's docs: widths/heights softmax * "
           "(2B - K * 1e-3) + 1e-3 (min bin size 1e-3 absolute; canonical 1e-3 of the "
           "interval), slopes softplus + 1e-3; 3K-1 parameters, identity tails, boundary "
           "slope 1 as canonical; applied in the sampling direction (z -> x)")
_MAF_COST = ("sampling is TFP's while_loop: dim passes per layer each applying the whole "
             "layer (canonical: one dimension solved per pass)")


class TfpJaxBackend(JaxPeerBackend):
    name = "tfp-jax"
    library = "tfp-nightly"
    common = {
        "direction": "bijector.forward is base -> data (sampling), as the protocol",
        "base": "tfd.MultivariateNormalDiag(0, 1), not trained",
        "conditioner": "the canonical plain MLP (adapters.conditioner.mlp) in glue code: "
                       "TFP's JAX substrate ships no network",
        "initialisation": "canonical scheme (uniform +-1/sqrt(fan_in), last layer x0.1) "
                          "drawn from jax.random, not canonical.init_weights' stream",
        "log-det passes": "RealNVP and MAF's one-pass direction call the network again for "
                          "the log-det (2 per layer); MAF's sequential direction with its "
                          "log-det takes dim + 1 per layer (-ildj at the result)",
    }
    offers = {
        "nice": Offer("RealNVP(num_masked=+-dim//2, shift_and_log_scale_fn -> (shift, None)) "
                      "per layer + tfb.Scale(log_scale)", {
            "final scale": "tfb.Scale(log_scale) applied z -> x: x = z * exp(log_scale) "
                           "(canonical: z = x * exp(log_scale))"}),
        "realnvp": Offer("RealNVP(num_masked=+-dim//2, shift_and_log_scale_fn=MLP)", {
            "scale": "exp(log_scale), " + _SAMPLING_SIDE}),
        "maf": Offer("MaskedAutoregressiveFlow(shift_and_log_scale_fn=MADE) + Permute", {
            "scale": "exp(log_scale), " + _SAMPLING_SIDE, "conditioner": _MADE,
            "permutation": _PERMUTE, "sampling cost": _MAF_COST}),
        "iaf": Offer("Invert(MaskedAutoregressiveFlow(shift_and_log_scale_fn=MADE)) + Permute", {
            "scale": "exp(log_scale); MAF's map run backwards: x = (z - t) * exp(-s) with "
                     "t, s from z (canonical IAF: x = z * exp(s) + t)",
            "conditioner": _MADE, "permutation": _PERMUTE,
            "density cost": "TFP's while_loop: dim passes per layer each applying the whole "
                            "layer"}),
        "nsf": Offer("RealNVP(num_masked=+-dim//2, bijector_fn -> RationalQuadraticSpline)", {
            "spline": _SPLINE}),
        "nsf-ar": Offer("MaskedAutoregressiveFlow(bijector_fn -> RationalQuadraticSpline) "
                        "+ Permute", {
            "spline": _SPLINE, "conditioner": _MADE, "permutation": _PERMUTE,
            "sampling cost": _MAF_COST}),
    }
    missing = {
        "glow": "tfb.Glow is for NHWC images and needs Keras (TensorFlow only); the JAX "
                "substrate has no Glow",
        "naf": "TFP has no neural autoregressive (deep sigmoidal) transformer",
    }

    # --- building -------------------------------------------------------------------------
    def make(self, spec: FlowSpec, key):
        weights = {}
        for block in _layout(spec):
            sizes = block.net_sizes
            masks = _masks(spec, block.name)
            for k, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:])):
                key, kw, kb = jax.random.split(key, 3)
                bound = 1.0 / np.sqrt(fi) * (C.OUTPUT_INIT_SCALE if k == len(sizes) - 2 else 1)
                w = jax.random.uniform(kw, (fi, fo), jnp.float32, -bound, bound)
                weights[f"{block.name}.net.{k}.weight"] = w if masks is None else w * masks[k]
                weights[f"{block.name}.net.{k}.bias"] = jax.random.uniform(
                    kb, (fo,), jnp.float32, -bound, bound)
        if spec.final_scale:
            weights["scale.log_scale"] = jnp.zeros(spec.dim, jnp.float32)
        return _Model(weights, spec)

    # --- directions -----------------------------------------------------------------------
    def log_prob(self, model, x):
        with _tracing(model.spec):
            return _distribution(model).log_prob(x)

    def sample(self, model, key, n: int):
        with _tracing(model.spec):
            return _distribution(model).sample(n, seed=key)

    def sample_and_log_prob(self, model, key, n: int):
        with _tracing(model.spec):
            return _distribution(model).experimental_sample_and_log_prob(n, seed=key)

    def to_latent(self, model, x):
        with _tracing(model.spec):
            chain = _chain(model)
            return chain.inverse(x), chain.inverse_log_det_jacobian(x, event_ndims=1)

    def to_data(self, model, z):
        with _tracing(model.spec):
            chain = _chain(model)
            return chain.forward(z), chain.forward_log_det_jacobian(z, event_ndims=1)

    # the glue MLP hits it; off except inside counting(), where ops run untraced: calls
    # made while tracing a jitted op do not count
    counter = PassCounter(enabled=False)

    def counting(self):
        return self.counter.counting()


class _Model(eqx.Module):
    """The trained arrays by canonical-style name, and the spec they are laid out for."""
    weights: dict
    spec: FlowSpec = eqx.field(static=True)


@functools.lru_cache(maxsize=256)
def _layout(spec: FlowSpec) -> tuple[C.Block, ...]:
    """The conditioned blocks in x -> z order. MADE blocks all take the natural input order:
    the reversal between layers is a tfb.Permute instead."""
    natural = tuple(range(1, spec.dim + 1))
    return tuple(b if b.kind != "made" else C.Block(b.name, b.kind, b.dim, b.inverted,
                                                     degrees=natural, net_sizes=b.net_sizes,
                                                     params_per_dim=b.params_per_dim)
                 for b in C.blocks(spec) if b.conditioned)


@functools.lru_cache(maxsize=256)
def _masks(spec: FlowSpec, name: str):
    """MADE masks as numpy constants: a jnp array first made inside a trace would be a
    tracer, and caching it would leak it."""
    block = next(b for b in _layout(spec) if b.name == name)
    masks = C.block_masks(block)
    return None if masks is None else tuple(masks)


@contextlib.contextmanager
def _tracing(spec: FlowSpec):
    """Where TFP's code needs help to run under jit with JAX 0.10."""
    with contextlib.ExitStack() as stack:
        if spec.transform == "spline":
            # TFP's spline pads its knots with tf.zeros([tf.rank(t) - 1, 2]); tf.rank is a
            # jnp scalar, which JAX 0.10 stages under jit, and the shape is no longer
            # concrete ("Shapes must be 1D sequences of concrete values"). Evaluating what
            # depends on no traced input at trace time keeps such shapes concrete.
            stack.enter_context(jax.ensure_compile_time_eval())
        # The spline also asks for int64 bin indices; JAX without x64 truncates them to
        # int32 (same result) and warns on every trace.
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", "Explicitly requested dtype int64", UserWarning)
        yield


def _knots(raw, bound):
    K = raw.shape[-1]
    return jax.nn.softmax(raw, -1) * (2 * bound - K * MIN_BIN_WIDTH) + MIN_BIN_WIDTH


def _spline(theta, spec):
    """TFP's spline with widths, heights and slopes constrained as in its docs."""
    K, B = spec.bins, float(spec.tail_bound)
    return tfb.RationalQuadraticSpline(
        bin_widths=_knots(theta[..., :K], B), bin_heights=_knots(theta[..., K:2 * K], B),
        knot_slopes=jax.nn.softplus(theta[..., 2 * K:]) + MIN_SLOPE, range_min=-B)


def _layer(model, block):
    """One conditioned block as a TFP bijector whose forward is z -> x."""
    spec = model.spec
    act = jax.nn.relu if spec.activation == "relu" else jnp.tanh
    masks = _masks(spec, block.name)
    P = block.params_per_dim

    def net(h, units):  # (..., units, P), dimension-major as the canonical layout
        out = mlp(model.weights, block, masks, act, h, TfpJaxBackend.counter)
        return out.reshape(*out.shape[:-1], units, P)

    def shift_and_log_scale(h, units):  # one network call for both
        theta = net(h, units)
        return theta[..., 0], None if P == 1 else theta[..., 1]

    if block.kind == "coupling":
        k = len(block.identity)
        num_masked = k if block.identity[0] == 0 else -k  # negative: condition on the last k
        if spec.transform == "spline":
            return tfb.RealNVP(num_masked=num_masked,
                               bijector_fn=lambda x0, units: _spline(net(x0, units), spec))
        return tfb.RealNVP(num_masked=num_masked, shift_and_log_scale_fn=shift_and_log_scale)

    D = block.dim
    if spec.transform == "spline":
        maf = tfb.MaskedAutoregressiveFlow(bijector_fn=lambda y: _spline(net(y, D), spec))
    else:
        maf = tfb.MaskedAutoregressiveFlow(
            shift_and_log_scale_fn=lambda y: shift_and_log_scale(y, D))
    return tfb.Invert(maf) if block.inverted else maf


def _chain(model):
    """The flow's bijector, base -> data. Chain applies its last element first, so listing
    the layers in x -> z order makes the first layer the one nearest the data."""
    spec = model.spec
    parts = []
    for l, block in enumerate(_layout(spec)):
        if l and block.kind == "made":
            parts.append(tfb.Permute(np.arange(spec.dim)[::-1].copy()))
        parts.append(_layer(model, block))
    if spec.final_scale:
        parts.append(tfb.Scale(log_scale=model.weights["scale.log_scale"]))
    return tfb.Chain(parts)


def _distribution(model):
    D = model.spec.dim
    return tfd.TransformedDistribution(
        tfd.MultivariateNormalDiag(jnp.zeros(D), jnp.ones(D)), _chain(model))

