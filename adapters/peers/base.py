"""What every peer backend shares: declared offers, spec checks, the conventions table."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata

from ..base import Backend, Flow
from ..errors import UnsupportedOp, UnsupportedSpec
from ..spec import ONE_WAY_PRESETS, PRESETS, FlowSpec, check_spec

# planar and radial: normflows ships both (nf.flows.Planar, Radial), flowjax a Planar; the
# matched backends are the reference for them so far
ONE_WAY_WHY = ("flowbench adapts no library's planar or radial flow yet (normflows ships "
               "both, flowjax a planar one); the matched torch, jax and tfp backends have "
               "them")

# protocol op -> the method a torch or jax peer backend names it by
LIBRARY_OPS = {"log_prob": "log_prob", "inverse": "to_latent", "forward": "to_data",
               "sample": "sample", "sample_and_log_prob": "sample_and_log_prob"}


@dataclass(frozen=True)
class Offer:
    """What a peer builds for one arch preset and how it differs from the canonical model.

    ``differences`` maps an aspect (scale, conditioner, MADE degrees, permutation, spline,
    extra layers, ...) to what this library does instead; aspects where the library matches
    the canonical model are left out."""
    builds: str
    differences: dict = field(default_factory=dict)
    exact_inverse: bool = True


class PeerBackend(Backend):
    kind = "peer"
    library = ""        # the distribution whose version is reported
    variants = ("eager",)
    families = ("vector",)   # the libraries' flows are vector flows
    offers: dict[str, Offer] = {}
    missing: dict[str, str] = {}     # arch preset -> why the library has nothing for it
    common: dict[str, str] = {}      # differences shared by every arch of this library

    def version(self):
        return f"{self.library} {metadata.version(self.library)}"

    def offer(self, spec: FlowSpec) -> Offer:
        """The declared offer for spec, or UnsupportedSpec saying why there is none."""
        check_spec(spec, self.families)
        if spec.arch not in self.offers:
            why = self.missing.get(spec.arch, ONE_WAY_WHY if spec.arch in ONE_WAY_PRESETS
                                   else "the library ships nothing for it")
            raise UnsupportedSpec(f"{self.name} does not offer {spec.arch!r}: {why}")
        if spec.label != spec.arch:
            raise UnsupportedSpec(f"{self.name} builds its library's own presets; "
                                  f"{spec.label!r} is a non-preset combination")
        if spec.base != "normal":
            raise UnsupportedSpec(f"{self.name} builds flows on a standard normal base only")
        return self.offers[spec.arch]

    def capabilities(self) -> dict[str, str | None]:
        """arch preset -> None when offered, else the reason it is not."""
        return {a: None if a in self.offers else self.missing.get(a, "not offered")
                for a in PRESETS}

    def conventions(self) -> list[dict]:
        rows = []
        for arch, offer in self.offers.items():
            facts = {"builds": offer.builds, **self.common, **offer.differences,
                     "exact inverse": "yes" if offer.exact_inverse else "no"}
            rows += [{"backend": self.name, "arch": arch, "aspect": k, "value": v}
                     for k, v in facts.items()]
        return rows


class PeerFlow(Flow):
    """A library's flow: no canonical weights, its own parameter count."""

    def get_weights(self):
        raise UnsupportedOp(f"{self.backend.name} flows have no canonical weights: the "
                            f"library parameterises {self.spec.arch} its own way")

    def set_weights(self, weights):
        self.get_weights()

    def _gradients(self, x):
        raise UnsupportedOp(f"{self.backend.name} flows report no canonical gradients")
