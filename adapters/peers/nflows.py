"""nflows (bayesiains) as shipped: Flow(CompositeTransform, StandardNormal).

nflows names directions the other way round from the protocol: a transform's ``forward``
maps data to noise (the density direction) and ``inverse`` noise to data. Its MAF layer
is one pass in the density direction and ``dim`` passes to sample, as canonical.
"""

from __future__ import annotations

import torch
from nflows import transforms as T
from nflows.distributions.normal import StandardNormal
from nflows.flows.base import Flow
from nflows.flows.realnvp import SimpleRealNVP
from nflows.nn.nets import MLP, ResidualNet
from nflows.transforms.made import MADE
from torch.nn import functional as F

from .base import Offer
from .torch_common import TorchPeerBackend

_MADE = ("MADE with one hidden width (the first of spec.hidden) and len(hidden) - 1 "
         "masked feedforward blocks, not residual (nflows' default is residual). Its "
         "initial masked layer has no activation after it: len(hidden) - 1 ReLUs where "
         "canonical has len(hidden), the first two layers composing to one linear map, "
         "and one activation fewer per pass")
_COUPLING_MASKS = "canonical split: identity on the first dim//2, then the last dim//2"
_SPLINE = ("3K-1 parameters, linear tails, boundary slope 1, min width/height 1e-3 as "
           "canonical; the width and height logits are divided by sqrt(hidden width)")


class _Net(torch.nn.Module):
    """nflows' plain MLP, callable as a coupling transform net (which passes a context
    that MLP.forward does not take)."""

    def __init__(self, in_shape, out_shape, hidden, **kwargs):
        super().__init__()
        self.mlp = MLP(in_shape, out_shape, hidden, **kwargs)
        # nflows' spline coupling divides its logits by sqrt(hidden_features) when the net
        # has that attribute, as its own ResidualNet does
        self.hidden_features = hidden[-1]

    def forward(self, x, context=None):
        return self.mlp(x)


class NflowsBackend(TorchPeerBackend):
    name = "nflows"
    library = "nflows"
    common = {"direction": "transform.forward is data -> noise (density); mapped",
              "base": "StandardNormal, not trained"}
    offers = {
        "nice": Offer("SimpleRealNVP(use_volume_preserving=True)", {
            "conditioner": "ResidualNet (residual blocks of width hidden[0])",
            "masks": "even/odd features alternate (mask[::2] = -1, then *= -1)",
            "extra layers": "no final diagonal scaling"}),
        "realnvp": Offer("SimpleRealNVP", {
            "scale": "sigmoid(s + 2) + 1e-3 (canonical: exp(s))",
            "conditioner": "ResidualNet (residual blocks of width hidden[0])",
            "masks": "even/odd features alternate (mask[::2] = -1, then *= -1)"}),
        "maf": Offer("MaskedAutoregressiveFlow(use_residual_blocks=False)", {
            "scale": "softplus(s) + 1e-3 (canonical: exp(s))",
            "conditioner": _MADE,
            "permutation": "ReversePermutation before every layer (canonical: degrees "
                           "reversed on odd layers)"}),
        "iaf": Offer("InverseTransform(MaskedAffineAutoregressiveTransform)", {
            "scale": "softplus(s) + 1e-3 (canonical: exp(s))",
            "conditioner": _MADE,
            "permutation": "ReversePermutation between layers"}),
        "nsf": Offer("PiecewiseRationalQuadraticCouplingTransform(tails='linear')", {
            "conditioner": "nflows.nn.nets.MLP with spec.hidden (as canonical)",
            "masks": _COUPLING_MASKS, "spline": _SPLINE}),
        "nsf-ar": Offer("MaskedPiecewiseRationalQuadraticAutoregressiveTransform"
                        "(tails='linear')", {
            "conditioner": _MADE, "spline": _SPLINE,
            "permutation": "ReversePermutation between layers"}),
        "glow": Offer("ActNorm + LULinear + AffineCouplingTransform per layer", {
            "scale": "sigmoid(s + 2) + 1e-3 (canonical: sigmoid(s + 2))",
            "conditioner": "nflows.nn.nets.MLP with spec.hidden (as canonical)",
            "masks": _COUPLING_MASKS,
            "extra layers": "LULinear starts at the identity (canonical: a random "
                            "rotation); ActNorm initialises on its first batch in "
                            "training mode"}),
    }
    missing = {"naf": "nflows has no neural autoregressive (deep sigmoidal) transform"}

    def conditioner_types(self):
        return (MADE, ResidualNet, MLP)

    # --- building -------------------------------------------------------------------------
    def make(self, spec):
        D, act = spec.dim, F.relu if spec.activation == "relu" else torch.tanh
        width, blocks = spec.hidden[0], max(1, len(spec.hidden) - 1)
        if spec.arch in ("nice", "realnvp"):
            return SimpleRealNVP(D, width, spec.layers, blocks, activation=act,
                                 use_volume_preserving=spec.arch == "nice")
        layers = []
        for l in range(spec.layers):
            layers += self._layer(spec, l, width, blocks, act)
        return Flow(T.CompositeTransform(layers), StandardNormal([D]))

    def _layer(self, spec, l, width, blocks, act):
        D = spec.dim
        net = lambda i, o: _Net([i], [o], spec.hidden, activation=act)  # noqa: E731
        made = dict(features=D, hidden_features=width, num_blocks=blocks,
                    use_residual_blocks=False, activation=act)
        if spec.arch == "maf":
            return [T.ReversePermutation(D), T.MaskedAffineAutoregressiveTransform(**made)]
        if spec.arch == "iaf":
            return [T.ReversePermutation(D),
                    T.InverseTransform(T.MaskedAffineAutoregressiveTransform(**made))]
        if spec.arch == "nsf-ar":
            return [T.ReversePermutation(D),
                    T.MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                        **made, num_bins=spec.bins, tails="linear",
                        tail_bound=spec.tail_bound)]
        mask = self._mask(D, l)
        if spec.arch == "nsf":
            return [T.PiecewiseRationalQuadraticCouplingTransform(
                mask, net, num_bins=spec.bins, tails="linear", tail_bound=spec.tail_bound)]
        return [T.ActNorm(D), T.LULinear(D, identity_init=True),
                T.AffineCouplingTransform(mask, net)]

    @staticmethod
    def _mask(D, layer):
        """nflows transforms features where mask > 0; identity as in the canonical split."""
        k = D // 2
        mask = torch.ones(D)
        if layer % 2 == 0:
            mask[:k] = -1
        else:
            mask[D - k:] = -1
        return mask

    # --- directions -----------------------------------------------------------------------
    def log_prob(self, module, x):
        return module.log_prob(x)

    def to_latent(self, module, x):
        return module._transform(x)

    def to_data(self, module, z):
        return module._transform.inverse(z)

    def sample(self, module, n):
        return module.sample(n)

    def sample_and_log_prob(self, module, n):
        return module.sample_and_log_prob(n)

