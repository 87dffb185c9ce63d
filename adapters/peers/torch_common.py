"""What the PyTorch peers share: a library nn.Module run without gradients for the ops,
torch.optim.Adam for training, seeded construction and sampling, and conditioner calls
counted by forward hooks that hit the flow's ``PassCounter`` (a real count of every
evaluation, not a trace-time estimate)."""

from __future__ import annotations

import abc

import torch

from ..base import TrainConfig
from ..native.torch import TorchArrays, counted_work
from ..passes import PassCounter
from ..spec import FlowSpec
from .base import LIBRARY_OPS, PeerBackend, PeerFlow


class TorchPeerFlow(PeerFlow):
    def __init__(self, backend: "TorchPeerBackend", spec: FlowSpec, seed: int, device: str,
                 train: TrainConfig, variant: str = "eager"):
        super().__init__(backend, spec, backend._resolve(device), train, variant)
        self.offer = backend.offer(spec)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.module = backend.make(spec).to(self.device)
        # eval mode outside training: libraries' ActNorm initialises on the first batch it
        # sees in training mode, and ops must not change parameters
        self.module.eval()
        self.counter = PassCounter()
        for m in self.module.modules():
            if isinstance(m, backend.conditioner_types()):
                m.register_forward_hook(self._hit)
        self.optimizer = torch.optim.Adam(self.module.parameters(), lr=train.lr,
                                          betas=train.betas, eps=train.eps)

    def _hit(self, *_):
        self.counter.hit()

    def _call(self, op, *args):
        fn = getattr(self.backend, LIBRARY_OPS[op])
        self.counter.reset()
        with torch.no_grad():
            out = fn(self.module, *args)
        self.passes = self.counter.n
        return out

    def num_params(self) -> int:
        return int(sum(p.numel() for p in self.module.parameters() if p.requires_grad))

    def executed(self, run, analytic):
        return counted_work(run, self.backend.block)

    def _sample(self, n, seed):
        devices = [torch.device(self.device).index or 0] if self.device != "cpu" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return self._call("sample", n)

    def _sample_and_log_prob(self, n, seed):
        if not hasattr(self.backend, "sample_and_log_prob"):
            return super()._sample_and_log_prob(n, seed)
        devices = [torch.device(self.device).index or 0] if self.device != "cpu" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return self._call("sample_and_log_prob", n)

    def _train_step(self, x):
        self.counter.reset()
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = -self.backend.log_prob(self.module, x).mean()
        loss.backward()
        self.module.eval()
        if self.train_config.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.train_config.clip_norm)
        self.optimizer.step()
        self.passes = self.counter.n
        return loss.item()


class TorchPeerBackend(TorchArrays, PeerBackend):
    """A library's flows as nn.Modules. Subclasses say how to build one and how the
    library names its directions."""

    flow_class = TorchPeerFlow

    def version(self):
        return f"{PeerBackend.version(self)} (torch {torch.__version__})"

    def conditioner_types(self) -> tuple[type, ...]:
        """Module classes whose every call is one conditioner evaluation."""
        raise NotImplementedError

    @abc.abstractmethod
    def make(self, spec: FlowSpec) -> torch.nn.Module: ...
    @abc.abstractmethod
    def log_prob(self, module, x): ...
    @abc.abstractmethod
    def to_latent(self, module, x): ...     # (z, log|det dz/dx|)
    @abc.abstractmethod
    def to_data(self, module, z): ...       # (x, log|det dx/dz|)
    @abc.abstractmethod
    def sample(self, module, n: int): ...

