"""normflows (VincentStimper/normalizing-flows) as shipped: NormalizingFlow(DiagGaussian, flows).

normflows names directions like the protocol: ``NormalizingFlow.forward_and_log_det`` maps
base -> data (sampling) and ``inverse_and_log_det`` data -> base (density); its flow list
runs base -> data, so ``flows[0]`` sits next to the base.

Surprising: ``flows.MaskedAffineAutoregressive`` is nflows' MAF transform copied without
swapping directions (normflows' spline wrappers do swap), so in normflows' naming its
cheap pass is ``forward``, base -> data: used as the README and examples use it, it is an
IAF (1 pass to sample, ``dim`` passes for log_prob). The MAF preset wraps it in
normflows' own ``flows.Reverse``. Measured with forward hooks, not read off the names.

Also: ``flows.ActNorm`` initialises from the first batch it sees in *any* mode (it ignores
train/eval), so this peer holds that initialisation back until the first training batch;
``DiagGaussian`` is trainable by default and is built with ``trainable=False`` here;
``InvertibleAffine(use_lu=True)`` calls the deprecated ``Tensor.lu`` when built (torch
2.13 warns once per process).
"""

from __future__ import annotations

import contextlib

import normflows as nf
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UnsupportedSpec
from .base import Offer
from .torch_common import TorchPeerBackend

_MASKS = ("alternating even/odd features, as normflows' RealNVP example (b = 1 on even "
          "indices, then 1 - b); canonical: first half, then last half (same at dim 2)")
_MLP_NETS = ("separate s and t nets, each nf.nets.MLP([dim, *spec.hidden, dim]) on the "
             "masked full input (zeros in the transformed slots); last layer zero-"
             "initialised (init_zeros=True, as normflows' examples); canonical: one net "
             "from the identity half to shift and scale, small random output layer")
_MADE = ("MADE (feedforward, use_residual_blocks=False; normflows' default is residual) "
         "of one width hidden[0] and num_blocks = len(hidden) - 1, i.e. len(hidden) "
         "hidden layers; cyclic hidden degrees as canonical; input order always natural. "
         "Its first masked layer has no activation after it (nflows' MADE, copied): "
         "len(hidden) - 1 ReLUs where canonical has len(hidden), so the first two layers "
         "compose to one linear map and each pass skips one activation (at 2x128 and "
         "batch 4096 those activations are about a tenth of the canonical torch MAF's "
         "log_prob time in torch.profiler)")
_RES_MADE = ("residual MADE (AutoregressiveRationalQuadraticSpline hard-codes "
             "use_residual_blocks=True): width hidden[0], num_blocks = len(hidden) residual "
             "blocks (normflows' examples pass the hidden-layer count there); final layer "
             "zero-initialised (init_identity=True: starts at the identity)")
_SWAP = ("flows.Permute(dim, mode='swap') between layers (swaps the two halves; canonical "
         "reverses the MADE degrees on odd layers, the same at dim 2); normflows' "
         "examples use LULinearPermute, a trained LU linear map, left out here")
_AFFINE_AR_SCALE = "sigmoid(s + 2) + 1e-3 (canonical: exp(s))"
_SPLINE = ("3K-1 parameters, linear tails, boundary slope 1, min width/height/derivative "
           "1e-3 as canonical")


class NormflowsBackend(TorchPeerBackend):
    name = "normflows"
    library = "normflows"
    common = {"direction": "NormalizingFlow.forward is base -> data (sampling), as the "
                           "protocol; inverse_and_log_det is data -> base",
              "base": "DiagGaussian(dim, trainable=False) (normflows' default is trainable)"}
    offers = {
        "nice": Offer("MaskedAffineFlow(b, t=MLP, s=None) alternating masks + "
                      "AffineConstFlow(dim, shift=False) at the base", {
            "conditioner": "nf.nets.MLP([dim, *spec.hidden, dim]) on the masked full input "
                           "(zeros in the transformed slots), last layer zero-initialised",
            "masks": _MASKS,
            "extra layers": "final scaling is normflows' AffineConstFlow with shift=False "
                            "(x = z * exp(s); canonical log_scale = -s)"}),
        "realnvp": Offer("MaskedAffineFlow(b, t=MLP, s=MLP) with alternating masks", {
            "conditioner": _MLP_NETS + "; 2 passes per layer",
            "masks": _MASKS}),
        "maf": Offer("flows.Reverse(MaskedAffineAutoregressive(use_residual_blocks=False))", {
            "orientation": "normflows' MaskedAffineAutoregressive is sampling-fast as "
                           "shipped; wrapped in normflows' Reverse to make log_prob 1 pass",
            "scale": _AFFINE_AR_SCALE,
            "conditioner": _MADE,
            "permutation": _SWAP}),
        "iaf": Offer("MaskedAffineAutoregressive(use_residual_blocks=False), as shipped", {
            "orientation": "as normflows' examples use it (there called MAF): 1 pass to "
                           "sample, dim passes for log_prob",
            "scale": _AFFINE_AR_SCALE,
            "conditioner": _MADE,
            "permutation": _SWAP}),
        "nsf": Offer("CoupledRationalQuadraticSpline(tails='linear'), reverse_mask alternating", {
            "conditioner": "nf.nets.ResidualNet of width hidden[0] with num_blocks = "
                           "len(hidden) residual blocks (not configurable)",
            "masks": "alternating even/odd features (odd transformed first); canonical: "
                     "first half, then last half (same at dim 2)",
            "spline": _SPLINE + "; width/height logits divided by sqrt(hidden[0])",
            "extra layers": "apply_unconditional_transform=True: the identity half also "
                            "goes through an unconditional RQ spline with its own trained "
                            "per-feature parameters (identity at initialisation)"}),
        "nsf-ar": Offer("AutoregressiveRationalQuadraticSpline(permute_mask=False)", {
            "conditioner": _RES_MADE,
            "spline": _SPLINE + "; logits not divided by sqrt(hidden) (MADE has no "
                                "hidden_features attribute)",
            "permutation": _SWAP}),
        "glow": Offer("ActNorm + InvertibleAffine(use_lu=True) + AffineCouplingBlock("
                      "MLP, scale_map='sigmoid') per layer, GlowBlock's order for vectors", {
            "coupling": "split_mode='channel': the first ceil(dim/2) features always "
                        "condition (no alternation; the LU map mixes); canonical alternates",
            "scale": "z = (x - shift) * sigmoid(s + 2) (canonical: x * sigmoid(s + 2) + "
                     "shift); shift and scale interleaved in the net output",
            "conditioner": "nf.nets.MLP([ceil(dim/2), *spec.hidden, 2 * (dim//2)]), last "
                           "layer zero-initialised as GlowBlock's ConvNet2d",
            "extra layers": "InvertibleAffine starts at a random rotation (as canonical), "
                            "inverse via torch.inverse in float64; ActNorm initialises on "
                            "the first training batch with the unbiased (N-1) std (canonical: "
                            "population std); normflows would initialise on any first call, "
                            "the peer holds it back in eval mode"}),
    }
    missing = {"naf": "normflows has no neural autoregressive (deep sigmoidal) transform"}

    def conditioner_types(self):
        # MADE for the autoregressive flows, ResidualNet inside the spline couplings, MLP
        # for the affine/additive couplings; none of them nests another
        return (nf.nets.MLP, nf.nets.MADE, nf.nets.ResidualNet)

    def offer(self, spec):
        offer = super().offer(spec)
        if spec.activation != "relu" and spec.arch in ("nice", "realnvp", "glow"):
            raise UnsupportedSpec(f"normflows' nets.MLP (used by {spec.arch}) has only "
                                  f"(leaky) ReLU; activation={spec.activation!r} not offered")
        return offer

    # --- building -------------------------------------------------------------------------
    def make(self, spec):
        D = spec.dim
        # built in x -> z order (layer 0 next to the data, as canonical), then reversed:
        # normflows lists flows base -> data
        layers = []
        for l in range(spec.layers):
            if l > 0 and spec.arch in ("maf", "iaf", "nsf-ar"):
                layers.append([nf.flows.Permute(D, mode="swap")])
            layers.append(self._layer(spec, l))
        flows = [f for layer in reversed(layers) for f in layer]
        if spec.arch == "nice":
            # NICE's final diagonal scaling sits next to the base
            flows.insert(0, nf.flows.AffineConstFlow((D,), scale=True, shift=False))
        return nf.NormalizingFlow(q0=nf.distributions.DiagGaussian(D, trainable=False),
                                  flows=flows)

    def _layer(self, spec, l):
        """One layer's flows in base -> data order."""
        D, H = spec.dim, spec.hidden
        tanh = spec.activation == "tanh"
        if spec.arch in ("nice", "realnvp"):
            b = torch.tensor([1.0 if i % 2 == 0 else 0.0 for i in range(D)])
            b = b if l % 2 == 0 else 1 - b
            net = lambda: nf.nets.MLP([D, *H, D], init_zeros=True)  # noqa: E731
            return [nf.flows.MaskedAffineFlow(b, t=net(),
                                              s=net() if spec.arch == "realnvp" else None)]
        if spec.arch in ("maf", "iaf"):
            made = nf.flows.MaskedAffineAutoregressive(
                D, H[0], num_blocks=len(H) - 1, use_residual_blocks=False,
                activation=torch.tanh if tanh else F.relu)
            return [nf.flows.Reverse(made) if spec.arch == "maf" else made]
        act = nn.Tanh if tanh else nn.ReLU
        if spec.arch == "nsf":
            return [nf.flows.CoupledRationalQuadraticSpline(
                D, len(H), H[0], num_bins=spec.bins, tails="linear",
                tail_bound=spec.tail_bound, activation=act, reverse_mask=l % 2 == 1)]
        if spec.arch == "nsf-ar":
            return [nf.flows.AutoregressiveRationalQuadraticSpline(
                D, len(H), H[0], num_bins=spec.bins, tail_bound=spec.tail_bound,
                activation=act, permute_mask=False)]
        # glow: GlowBlock's coupling -> 1x1 -> ActNorm (base -> data), for flat vectors
        net = nf.nets.MLP([(D + 1) // 2, *H, 2 * (D // 2)], init_zeros=True)
        return [nf.flows.AffineCouplingBlock(net, scale=True, scale_map="sigmoid",
                                             split_mode="channel"),
                nf.flows.InvertibleAffine(D, use_lu=True),
                nf.flows.ActNorm((D,))]

    # --- directions -----------------------------------------------------------------------
    @staticmethod
    @contextlib.contextmanager
    def _no_actnorm_init(module):
        """normflows' ActNorm initialises on the first batch it sees whatever the mode;
        outside training mark it done for the call, so ops do not change parameters and
        the first training batch still initialises it."""
        held = [] if module.training else [
            m for m in module.modules()
            if isinstance(m, nf.flows.ActNorm) and not m.data_dep_init_done > 0]
        for m in held:
            m.data_dep_init_done.fill_(1.0)
        try:
            yield
        finally:
            for m in held:
                m.data_dep_init_done.fill_(0.0)

    def log_prob(self, module, x):
        with self._no_actnorm_init(module):
            return module.log_prob(x)

    def to_latent(self, module, x):
        with self._no_actnorm_init(module):
            return module.inverse_and_log_det(x)

    def to_data(self, module, z):
        with self._no_actnorm_init(module):
            return module.forward_and_log_det(z)

    def sample(self, module, n):
        with self._no_actnorm_init(module):
            return module.sample(n)[0]

    def sample_and_log_prob(self, module, n):
        with self._no_actnorm_init(module):
            return module.sample(n)  # normflows' sample returns (x, log q(x))

