"""FlowJAX (danielward27/flowjax) as shipped: ``flowjax.flows`` builders returning a
``Transformed(base_dist, bijection)`` equinox module.

FlowJAX names directions like the protocol: ``bijection.transform`` maps base -> data
(sampling) and ``inverse`` data -> base (density); ``Transformed.log_prob`` uses the
inverse, ``sample`` the transform. Its bijections act on ONE sample (shape ``(dim,)``);
distributions vectorise over leading batch axes themselves, bijections do not, so
``to_latent``/``to_data`` vmap over the batch here.

Surprising: flowjax implements each layer with its *cheap* map as ``transform`` (for
``MaskedAutoregressive`` that is x -> y in one pass; its ``inverse`` is a ``lax.scan`` of
``dim`` conditioner passes plus one more pass for the log-det) and every builder wraps the
stack in ``Invert`` by default (``invert=True``). So ``invert=True`` puts the cheap map on
the density side (MAF) and ``invert=False`` on the sampling side (IAF), as the builders'
docstrings say (True: faster log_prob). Layers are stacked with ``eqx.filter_vmap`` and
run by ``lax.scan`` (``flowjax.bijections.Scan``), so a count taken at trace time would see
one layer; passes are measured under ``jax.disable_jit``, where scans run in Python.

``bijection.transform`` returns ``transform_and_log_det(...)[0]`` and relies on XLA's dead
code elimination to drop the log-det: the extra MADE pass after the inverse scan is counted
by the measured (un-jitted) sample although the jitted sample does not run it.

Parameters are paramax-wrapped (``Parameterize`` for MADE masks, softplus scales, spline
knots): ``Transformed.log_prob``/``sample`` and every bijection method call
``paramax.unwrap`` themselves, so the partitioned-and-recombined model is used as is.

A flowjax model's non-array leaves (activations, closures that build the transformer) are
new on every build, so each flow compiles its own code (a raw flowjax distribution under
``eqx.filter_jit`` does too).
"""

from __future__ import annotations

import contextlib

import equinox as eqx
import jax
import jax.numpy as jnp
import paramax
from flowjax.bijections import Loc, RationalQuadraticSpline
from flowjax.distributions import StandardNormal
from flowjax.flows import coupling_flow, masked_autoregressive_flow

from ..passes import PassCounter
from .base import Offer
from .jax_common import JaxPeerBackend

_NET = ("equinox.nn.MLP of width hidden[0] and depth len(hidden) (flowjax takes one "
        "width; spec.hidden widths after the first are ignored); default equinox init on "
        "every layer, output added to the identity parameters (canonical: small output "
        "layer)")
_MADE = ("flowjax masked_autoregressive_mlp: equinox.nn.MLP with paramax-masked weights, "
         "width hidden[0], depth len(hidden); cyclic hidden degrees arange(W) % (dim-1) as "
         "canonical; input order natural in every layer; default equinox init, output "
         "added to the identity parameters (canonical: small output layer)")
_PERMUTE = ("a random permutation (jax.random.permutation of the build key; Flip at dim 2) "
            "after every layer, including the last (canonical: " )
_COUPLING_PERMUTE = _PERMUTE + "mirrored masks on odd layers)"
_AR_PERMUTE = _PERMUTE + "MADE degrees reversed on odd layers)"
_COUPLING_MASKS = ("the first dim//2 features condition the rest in every layer, the "
                   "permutation between layers mixes them (canonical: alternating halves)")
_SCALE = "softplus(s + softplus^-1(0.99)) + 1e-2, 1 at s = 0 (canonical: exp(s))"
_SPLINE = ("RationalQuadraticSpline(knots=bins-1, interval=tail_bound): bins bins, 3*bins+1 "
           "parameters per dimension (canonical 3*bins-1): the two boundary derivatives "
           "are learned (canonical: exactly 1), so the slope jumps at +-tail_bound where "
           "the identity tails start; min bin width/height 1e-3 absolute (canonical 1e-3 "
           "of the interval, i.e. 1e-2 at tail_bound 5); derivatives 1e-3 + softplus")


class FlowjaxBackend(JaxPeerBackend):
    name = "flowjax"
    library = "flowjax"
    common = {"direction": "bijection.transform is base -> data (sampling), as the "
                           "protocol; builders wrap the layer stack in Invert (invert=True) "
                           "so each layer's cheap map serves log_prob",
              "base": "StandardNormal((dim,)), no parameters (flowjax's examples use "
                      "Normal(jnp.zeros(dim)), whose loc and scale would be trained)",
              "activation": "nn_activation = jax.nn.relu or jnp.tanh per spec"}
    offers = {
        "nice": Offer("coupling_flow(transformer=Loc(0.))", {
            "conditioner": _NET, "masks": _COUPLING_MASKS,
            "permutation": _COUPLING_PERMUTE,
            "extra layers": "no final diagonal scaling (flowjax's builder has none)"}),
        "realnvp": Offer("coupling_flow() (default affine transformer)", {
            "scale": _SCALE, "conditioner": _NET, "masks": _COUPLING_MASKS,
            "permutation": _COUPLING_PERMUTE}),
        "maf": Offer("masked_autoregressive_flow(invert=True) (default affine transformer)", {
            "scale": _SCALE, "conditioner": _MADE, "permutation": _AR_PERMUTE}),
        "iaf": Offer("masked_autoregressive_flow(invert=False) (default affine "
                     "transformer)", {
            "scale": _SCALE, "conditioner": _MADE, "permutation": _AR_PERMUTE}),
        "nsf": Offer("coupling_flow(transformer=RationalQuadraticSpline)", {
            "conditioner": _NET, "masks": _COUPLING_MASKS, "spline": _SPLINE,
            "permutation": _COUPLING_PERMUTE}),
        "nsf-ar": Offer("masked_autoregressive_flow(transformer=RationalQuadraticSpline, "
                        "invert=True)", {
            "conditioner": _MADE, "spline": _SPLINE, "permutation": _AR_PERMUTE}),
    }
    missing = {
        "naf": "flowjax has block_neural_autoregressive_flow (BNAF, De Cao et al. 2019: one "
               "block-masked monotone network, no MADE conditioner, no deep sigmoidal "
               "transformer), not NAF. Not offered as naf: with 2 layers (dim 2 and 8) its "
               "default bisect_check_expand_search inverse fails to sample at "
               "initialisation ('Maximum steps reached'), and that inverse is a "
               "lax.while_loop under vmap, which jax.disable_jit cannot run in Python, so "
               "its passes are not measurable",
        "glow": "flowjax has no ActNorm and no LU-parameterised linear layer (only "
                "TriangularAffine), so no Glow step",
    }

    # --- building -------------------------------------------------------------------------
    def make(self, spec, key):
        dim = spec.dim
        kw = dict(base_dist=StandardNormal((dim,)), flow_layers=spec.layers,
                  nn_width=spec.hidden[0], nn_depth=len(spec.hidden),
                  nn_activation=jax.nn.relu if spec.activation == "relu" else jnp.tanh)
        # flowjax's knots are the inner knots: knots + 1 bins
        spline = RationalQuadraticSpline(knots=spec.bins - 1, interval=spec.tail_bound)
        if spec.arch == "nice":
            return coupling_flow(key, transformer=Loc(0.0), **kw)
        if spec.arch == "realnvp":
            return coupling_flow(key, **kw)
        if spec.arch == "nsf":
            return coupling_flow(key, transformer=spline, **kw)
        if spec.arch == "maf":
            return masked_autoregressive_flow(key, invert=True, **kw)
        if spec.arch == "iaf":
            return masked_autoregressive_flow(key, invert=False, **kw)
        return masked_autoregressive_flow(key, transformer=spline, invert=True, **kw)

    def partition(self, model):
        # flowjax's fit_to_data idiom: leaves wrapped in NonTrainable stay fixed
        return eqx.partition(model, eqx.is_inexact_array,
                             is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable))

    # --- directions -----------------------------------------------------------------------
    def log_prob(self, model, x):
        return model.log_prob(x)

    def to_latent(self, model, x):
        return jax.vmap(model.bijection.inverse_and_log_det)(x)

    def to_data(self, model, z):
        return jax.vmap(model.bijection.transform_and_log_det)(z)

    def sample(self, model, key, n):
        return model.sample(key, (n,))

    def sample_and_log_prob(self, model, key, n):
        return model.sample_and_log_prob(key, (n,))

    # --- measured passes ------------------------------------------------------------------
    counter = PassCounter()

    @contextlib.contextmanager
    def counting(self):
        """Both the coupling conditioner and flowjax's MADE are ``equinox.nn.MLP``s; one
        ``__call__`` (vmapped over the batch) is one conditioner pass."""
        counter, mlp = self.counter, eqx.nn.MLP
        original = mlp.__dict__["__call__"]

        def counted(self, *args, **kwargs):
            counter.hit()
            return original(self, *args, **kwargs)

        mlp.__call__ = counted
        try:
            with counter.counting():
                yield counter
        finally:
            mlp.__call__ = original

