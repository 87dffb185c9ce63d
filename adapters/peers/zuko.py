"""zuko (probabilists/zuko) as shipped: lazy flows, ``flow()`` builds the distribution.

zuko names directions the other way round from the protocol: a flow's ``transform`` maps
data to noise (the density direction, ``NormalizingFlow.log_prob`` calls
``transform.call_and_ladj``) and ``transform.inv`` maps noise to data (``rsample``). Its
MAF layer is one conditioner pass in the density direction and ``dim`` passes to sample,
as canonical.

Surprising:
- zuko flows are lazy modules: every call ``flow()`` re-creates the transforms and the
  distribution (that is how its users call it), so nothing is cached between calls.
- ``NICE`` is affine (RealNVP) by default; ``RealNVP`` is a bare alias of ``NICE``. The
  additive NICE is ``NICE(univariate=AdditiveTransform, shapes=[()])``.
- "Coupling" splines are ``NSF(passes=2)``: a MADE whose inputs fall into two ordered
  groups, not a split with an identity half. The first group is still transformed, by a
  spline whose parameters are the MADE's output biases alone (learned, input-independent),
  and sampling takes two conditioner passes per layer, not one.
- ``NSF`` has no bound argument: its spline lives on [-5, 5]. NSF is MAF with a
  ``MonotonicRQSTransform`` univariate; built here that same way so spec.tail_bound
  reaches the spline (identical to ``NSF(bins=K)`` at tail_bound 5).
- IAF has no class; zuko's maintainers answer (probabilists/zuko discussion #72) with
  ``Flow(maf.transform.inv, maf.base)``, used as is. Its log_prob pays one extra pass per
  layer: torch's ``_InverseTransform`` computes the log-det by re-running the forward
  layer's conditioner on the recovered input.
- ``transform.inv.call_and_ladj`` (protocol ``forward``, and zuko's own
  ``rsample_and_log_prob``) also pays one extra pass per layer (coupling too) for the
  log-det: dim + 1 passes per MAF layer, 2 per coupling layer; ``sample`` costs dim, 1.
- At dim 1 zuko swaps every autoregressive layer for an ``ElementWiseTransform`` whose
  parameters are trained directly: no conditioner network, 0 passes.
- NAF inverts its monotonic networks by bisection on the fixed interval [-10, 10] (25
  halvings, tolerance 1e-6), so samples can never leave [-10, 10], and inserts a
  ``SoftclipTransform(bound=11)`` between layers.
"""

from __future__ import annotations

from functools import partial

import torch
import zuko
from torch import nn
from zuko.flows import MAF, NAF, NICE, Flow, UnconditionalTransform
from zuko.nn import MLP, MaskedMLP, MonotonicMLP
from zuko.transforms import AdditiveTransform, MonotonicAffineTransform, MonotonicRQSTransform

from .base import Offer
from .torch_common import TorchPeerBackend

_MIN_SLOPE = 1e-3  # zuko's default minimum slope for its affine and spline transforms
_INIT = ("PyTorch's default uniform(+-1/sqrt(fan_in)) init on every layer, the output "
         "layer included (canonical: output layer scaled by 0.1)")
_MADE = ("zuko.nn.MaskedMLP with hidden_features=spec.hidden, plain (not residual); masks "
         "built from an adjacency matrix come out as canonical cyclic hidden degrees "
         "(checked at dim 4); " + _INIT)
_ORDER = "feature order ascending on even layers, descending on odd (randperm=False), as canonical"
_AFFINE = ("exp of a soft-clipped log-scale a / (1 + |a| / 6.91), |log s| < 6.91 "
           "(canonical: exp(s))")
_SPLINE = ("3K-1 parameters, identity outside [-B, B], boundary slope 1 as canonical; "
           "width/height logits soft-clipped to |.| < 3.45 then softmax, no minimum bin "
           "size (canonical: 1e-3 + (1 - 1e-3 K) softmax); interior derivatives "
           "exp(soft-clipped d) in (1e-3, 1e3) (canonical: 1e-3 + softplus(d))")
_CHECKERED = ("checkered masks: layer 0 keeps the odd indices and transforms the even "
              "ones, then they alternate (canonical: first dim//2 kept first)")
_COUPLING_NET = "zuko.nn.MLP with hidden_features=spec.hidden, plain (not residual); " + _INIT


class ZukoBackend(TorchPeerBackend):
    name = "zuko"
    library = "zuko"
    common = {"direction": "flow().transform is data -> noise (density), .inv noise -> "
                           "data (sampling); mapped",
              "base": "DiagNormal(0, 1) held as buffers, not trained",
              "laziness": "flow() rebuilds the distribution and its transforms on every "
                          "call; each op calls it once, as zuko's users do"}
    offers = {
        "nice": Offer("Flow(NICE(univariate=AdditiveTransform, shapes=[()]) layers + "
                      "UnconditionalTransform(MonotonicAffineTransform, 0.0, zeros(dim)))", {
            "conditioner": _COUPLING_NET,
            "masks": _CHECKERED,
            "extra layers": "final diagonal scaling is zuko's MonotonicAffineTransform "
                            "with shift fixed at 0: soft-clipped log-scale, |log s| < 6.91"}),
        "realnvp": Offer("zuko.flows.RealNVP (an alias of NICE, affine by default)", {
            "scale": _AFFINE,
            "conditioner": _COUPLING_NET + "; one net gives shift and scale",
            "masks": _CHECKERED}),
        "maf": Offer("zuko.flows.MAF", {
            "scale": _AFFINE, "conditioner": _MADE, "order": _ORDER}),
        "iaf": Offer("Flow(MAF(...).transform.inv, MAF(...).base) (zuko discussion #72)", {
            "scale": _AFFINE, "conditioner": _MADE, "order": _ORDER,
            "log_prob passes": "dim + 1 per layer: torch's _InverseTransform gets the "
                               "log-det by one more conditioner pass on the recovered "
                               "input (canonical: dim)"}),
        "naf": Offer("zuko.flows.NAF (default signal=16 and monotonic network)", {
            "transformer": "per-dimension monotonic MLP (MonotonicMLP: |W| weights, "
                           "TwoWayELU, hidden (64, 64), zuko's default) on [x, signal], its "
                           "weights trained directly (one stack per feature); the MADE "
                           "gives 16 signal values per dimension (canonical: deep "
                           "sigmoidal flow whose 3 * naf_hidden parameters come from the "
                           "MADE). spec.naf_hidden is not used: with a monotonic MLP of "
                           "width naf_hidden=8 zuko's NAF starts nearly flat (density "
                           "mass 0.01 on [-9, 9]^2 at dim 2, samples pinned at +-10)",
            "conditioner": _MADE, "order": _ORDER,
            "extra layers": "SoftclipTransform(bound=11) between consecutive layers",
            "inverse": "bisection on [-10, 10], 25 halvings (tolerance 1e-6): exact to "
                       "that tolerance inside [-10, 10]; samples never leave it "
                       "(canonical: bracket doubling, unbounded)"}),
        "nsf": Offer("MAF(passes=2, univariate=MonotonicRQSTransform(bound=tail_bound)), "
                     "i.e. zuko.flows.NSF(passes=2) with the bound passed", {
            "coupling": "zuko's passes=2 coupling is a MADE over two ordered feature "
                        "groups (the first ceil(dim/2) features, then the rest; reversed on "
                        "odd layers): the first group is transformed by a spline from the "
                        "output biases alone (canonical: identity), and sampling costs 2 "
                        "conditioner passes per layer (canonical: 1)",
            "conditioner": _MADE, "spline": _SPLINE}),
        "nsf-ar": Offer("MAF(univariate=MonotonicRQSTransform(bound=tail_bound)), "
                        "i.e. zuko.flows.NSF with the bound passed", {
            "conditioner": _MADE, "order": _ORDER, "spline": _SPLINE}),
    }
    missing = {"glow": "zuko has no Glow: no ActNorm and no Glow flow (it ships "
                       "LULinearTransform only as a bare transform)"}

    def conditioner_types(self):
        # NAF's MonotonicMLP subclasses MLP but is the transformer, evaluated many times
        # per conditioner pass (bisection, autograd log-det); _PlainMLP leaves it out
        return (MaskedMLP, _PlainMLP)

    # --- building -------------------------------------------------------------------------
    def make(self, spec):
        D, L = spec.dim, spec.layers
        net = dict(hidden_features=spec.hidden,
                   activation=nn.ReLU if spec.activation == "relu" else nn.Tanh)
        if spec.arch == "nice":
            nice = NICE(D, transforms=L, univariate=AdditiveTransform, shapes=[()], **net)
            # NICE's final diagonal scaling sits next to the base; a plain float shift is
            # stored as a constant, so only the log-scale is trained
            scale = UnconditionalTransform(MonotonicAffineTransform, 0.0, torch.zeros(D))
            return Flow([*nice.transform.transforms, scale], nice.base)
        if spec.arch == "realnvp":
            return zuko.flows.RealNVP(D, transforms=L, **net)
        if spec.arch in ("maf", "iaf"):
            maf = MAF(D, transforms=L, **net)
            return maf if spec.arch == "maf" else Flow(maf.transform.inv, maf.base)
        if spec.arch == "naf":
            return NAF(D, transforms=L, **net)
        # NSF's own body, with the spline bound it does not expose
        K = spec.bins
        spline = partial(MonotonicRQSTransform, bound=float(spec.tail_bound),
                         slope=_MIN_SLOPE)
        return MAF(D, transforms=L, univariate=spline, shapes=[(K,), (K,), (K - 1,)],
                   passes=2 if spec.arch == "nsf" else None, **net)

    # --- directions -----------------------------------------------------------------------
    def log_prob(self, module, x):
        return module().log_prob(x)

    def to_latent(self, module, x):
        return module().transform.call_and_ladj(x)

    def to_data(self, module, z):
        return module().transform.inv.call_and_ladj(z)

    def sample(self, module, n):
        return module().sample((n,))

    def sample_and_log_prob(self, module, n):
        return module().rsample_and_log_prob((n,))


class _PlainMLPMeta(type):
    def __instancecheck__(cls, obj):
        return isinstance(obj, MLP) and not isinstance(obj, MonotonicMLP)


class _PlainMLP(metaclass=_PlainMLPMeta):
    """isinstance(m, _PlainMLP) holds for zuko's MLP (the coupling conditioner) but not
    for its subclass MonotonicMLP (NAF's transformer)."""

