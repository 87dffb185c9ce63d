"""The PyTorch backend: canonical flows as torch modules, Adam from torch.optim."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .. import canonical as C
from ..base import Backend, Flow, TrainConfig
from ..native.torch import TorchArrays
from ..errors import UnsupportedSpec
from ..spec import FlowSpec
from .layers import ActNorm, make_block

_LOG_2PI = math.log(2 * math.pi)


class FlowModule(nn.Module):
    def __init__(self, spec: FlowSpec, counter: list):
        super().__init__()
        self.spec = spec
        self.layout = C.blocks(spec)
        self.blocks = nn.ModuleList(make_block(b, spec, counter) for b in self.layout)

    def to_latent(self, x):
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for block in self.blocks:
            x, ld = block.to_latent(x)
            total = total + ld
        return x, total

    def to_data(self, z):
        total = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for block in reversed(self.blocks):
            z, ld = block.to_data(z)
            total = total + ld
        return z, total

    def base_log_prob(self, z):
        if self.spec.base == "normal":
            return (-0.5 * z * z - 0.5 * _LOG_2PI).sum(1)
        return (-z - 2 * torch.nn.functional.softplus(-z)).sum(1)

    def log_prob(self, x):
        z, ld = self.to_latent(x)
        return self.base_log_prob(z) + ld

    def base_sample(self, n: int, generator: torch.Generator, device):
        shape = (n, self.spec.dim)
        if self.spec.base == "normal":
            return torch.randn(shape, generator=generator, device=device)
        u = torch.rand(shape, generator=generator, device=device).clamp(1e-7, 1 - 1e-7)
        return torch.log(u) - torch.log1p(-u)


class TorchFlow(Flow):
    variant = "eager"

    def __init__(self, backend: "TorchBackend", spec: FlowSpec, seed: int, device: str,
                 train: TrainConfig):
        self.backend, self.spec, self.device, self.train_config = backend, spec, device, train
        self._counter = [0]
        self.module = FlowModule(spec, self._counter).to(device)
        self._set(C.init_weights(spec, seed))
        self._needs_init = any(isinstance(b, ActNorm) for b in self.module.blocks)
        self.optimizer = torch.optim.Adam(self.module.parameters(), lr=train.lr,
                                          betas=train.betas, eps=train.eps)

    # --- canonical weights: state_dict key "blocks.{i}.{suffix}" <-> "{name}.{suffix}" ---
    def _names(self):
        for i, b in enumerate(self.module.layout):
            prefix = f"blocks.{i}."
            for key in self.module.blocks[i].state_dict():
                yield prefix + key, f"{b.name}.{key}"

    def get_weights(self):
        state = self.module.state_dict()
        return {canon: state[key].detach().cpu().numpy().copy() for key, canon in self._names()}

    def set_weights(self, weights):
        self._set(C.check_weights(self.spec, weights))
        self._needs_init = False

    def _set(self, weights):
        state = {key: torch.as_tensor(weights[canon]) for key, canon in self._names()}
        self.module.load_state_dict(state, strict=False)

    # --- ops ----------------------------------------------------------------------------
    def _run(self, fn, *args):
        self._counter[0] = 0
        with torch.no_grad():
            out = fn(*args)
        self.passes = self._counter[0]
        return out

    def _log_prob(self, x):
        return self._run(self.module.log_prob, x)

    def _inverse(self, x):
        return self._run(self.module.to_latent, x)

    def _forward(self, z):
        return self._run(self.module.to_data, z)

    def _sample(self, n, seed):
        gen = torch.Generator(device=self.device).manual_seed(seed)
        z = self.module.base_sample(n, gen, self.device)
        return self._run(self.module.to_data, z)[0]

    def _initialize(self, x):
        with torch.no_grad():
            for block in self.module.blocks:
                if isinstance(block, ActNorm):
                    block.initialize(x)
                x, _ = block.to_latent(x)
        self._needs_init = False

    def _train_step(self, x):
        if self._needs_init:
            self._initialize(x)
        self._counter[0] = 0
        self.optimizer.zero_grad(set_to_none=True)
        loss = -self.module.log_prob(x).mean()
        loss.backward()
        if self.train_config.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.train_config.clip_norm)
        self.optimizer.step()
        self.passes = self._counter[0]
        return loss.item()

    def _gradients(self, x):
        names = dict(self._names())
        params = dict(self.module.named_parameters())
        loss = -self.module.log_prob(x).mean()
        grads = torch.autograd.grad(loss, list(params.values()))
        return {names[k]: g for k, g in zip(params, grads)}

    def jacobian(self, a, direction: str = "forward") -> np.ndarray:
        """Per-row autodiff Jacobian (n, dim, dim) of forward (z -> x) or inverse (x -> z)."""
        fn = self.module.to_data if direction == "forward" else self.module.to_latent
        a = self.backend.to_native(a, self.device).requires_grad_(True)
        jac = torch.autograd.functional.jacobian(lambda t: fn(t)[0].sum(0), a)
        return jac.permute(1, 0, 2).detach().cpu().numpy()


class TorchBackend(TorchArrays, Backend):
    name = "torch"
    variants = ("eager",)

    def build(self, spec: FlowSpec, seed: int = 0, device: str = "cpu",
              train: TrainConfig | None = None, variant: str | None = None) -> TorchFlow:
        if not isinstance(spec, FlowSpec):
            raise UnsupportedSpec(f"build needs a FlowSpec, got {type(spec).__name__}")
        self._variant(variant)
        return TorchFlow(self, spec, int(seed), self._resolve(device), train or TrainConfig())



_BACKEND = None


def get_backend() -> TorchBackend:
    global _BACKEND
    if _BACKEND is None:
        _BACKEND = TorchBackend()
    return _BACKEND
