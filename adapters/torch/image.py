"""The image flows of ``adapters/image_flow.py`` on PyTorch (over the torch ops table,
``ops.py``): a module with the interface ``adapters.torch.TorchFlow`` drives (the vector
flows' ``FlowModule``'s)."""

from __future__ import annotations

import torch
from torch import nn

from .. import canonical as C
from ..image import ImageSpec
from ..image_flow import ImageModel
from ..naf import EAGER
from ..passes import PassCounter
from .ops import TorchOps


def _key(name: str) -> str:
    return name.replace(".", "__")  # module attribute names cannot hold dots


class ImageModule(nn.Module):
    """Canonical arrays as parameters (trained) and buffers (perm, sign), under their
    canonical names with dots written as double underscores."""

    def __init__(self, spec: ImageSpec, counter: PassCounter):
        super().__init__()
        self.spec = spec
        self.ops = TorchOps()
        self.ops.device = "cpu"
        self.math = ImageModel(spec, self.ops, counter)
        for name, (shape, dtype) in C.weight_shapes(spec).items():
            if name.rsplit(".", 1)[-1] in C.FIXED:
                self.register_buffer(_key(name), torch.zeros(
                    shape, dtype=torch.int64 if dtype == "int64" else torch.float32))
            else:
                self.register_parameter(_key(name), nn.Parameter(torch.zeros(shape)))
        self.has_actnorm = spec.actnorm

    def _apply(self, fn, *args, **kwargs):  # .to(device): constants follow the parameters
        out = super()._apply(fn, *args, **kwargs)
        self.ops.device = next(iter(self.parameters())).device
        return out

    def canonical_names(self):
        """(state_dict key, canonical name) pairs."""
        for name in C.weight_shapes(self.spec):
            yield _key(name), name

    def params(self) -> dict:
        state = dict(self.named_parameters())
        state.update(self.named_buffers())
        return {canon: state[key] for key, canon in self.canonical_names()}

    def to_latent(self, x, steps=EAGER):
        return self.math.to_latent(self.params(), x)

    def to_data(self, z, steps=EAGER):
        return self.math.to_data(self.params(), z)

    def solves(self, direction: str) -> bool:
        return False

    def log_prob(self, x, steps=EAGER):
        return self.math.log_prob(self.params(), x)

    def loss(self, x, steps=EAGER):
        return -self.log_prob(x).mean()

    def base_sample(self, n: int, generator: torch.Generator, device):
        return torch.randn((n, self.spec.dim), generator=generator, device=device)

    @torch.no_grad()
    def initialize(self, x):
        state = dict(self.named_parameters())
        for name, value in self.math.actnorm_init(self.params(), x).items():
            state[_key(name)].copy_(value)

