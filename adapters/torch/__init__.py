"""The PyTorch backend: canonical flows as torch modules, Adam from torch.optim.

Two execution variants, chosen per flow with ``build(..., variant=...)``:

``eager`` (the default)
    plain PyTorch.
``compile``
    ``log_prob``, ``inverse``, ``forward``, the flow transform of ``sample`` (the base draw
    stays eager: it uses a ``torch.Generator``) and the loss of ``train_step`` run through
    ``torch.compile`` (inductor, ``dynamic=False``, ``fullgraph=True``); the loss's backward
    is the graph AOTAutograd compiled with it, Adam's step stays eager. Each flow compiles
    its own functions on their first call and again for each new input shape (batch size),
    up to ``RECOMPILE_LIMIT`` shapes per op; one more raises ``UnsupportedOp`` rather than
    falling back to eager.

How the compile variant is built, and why:

* The functions torch.compile sees have code objects of their own per flow
  (``_own_code``). Dynamo keeps compiled code on the code object, so compiling the
  modules' shared methods would pile every flow's and every spec's entries onto one
  object: torch's per-code limits (8 recompiles; 256 entries over all regions, counting
  entries of flows already gone) would soon be hit, and past them dynamo runs the code
  eagerly with no more than a log line. Per flow, the entries are that flow's own, bounded
  per op by ``RECOMPILE_LIMIT``, and freed with it. A second flow of the same spec traces
  again (dynamo and AOTAutograd) but builds no C++: inductor's cache has the kernels.
* ``fullgraph=True`` everywhere: no graph break goes unnoticed. Autoregressive inversion
  (sampling a MAF, the density of an IAF: ``dim`` conditioner passes per layer) is a Python
  loop over dimensions that dynamo unrolls into the graph, so compile time grows with
  ``dim * layers``; the graph has no break.
* The inverse of the mlp (NAF) transformer is bisection: a loop that stops on data, which
  one graph cannot hold (dynamo breaks the graph at each ``bool()``; with
  ``torch.while_loop`` every bisection compiles for seconds, and even a small NAF's
  forward did not finish compiling). Ops that invert it (``forward`` and ``sample`` of a
  density-direction mlp flow such as NAF; ``log_prob``, ``inverse`` and ``train_step`` of
  a sampling-direction one) run their Python eagerly and compile the two loop bodies, a
  bracket doubling and a halving (``transformers.Bisection``), where such an op spends its
  time; the conditioner passes and the rest of the op between them stay eager.
* ``flow.passes``: under torch.compile the conditioners' Python counter would run once per
  trace, not per call, so it is switched off there (``layers.counts_now``) and each op's
  passes are measured once, by an eager run of that op on one row at its first call.
  Passes do not depend on values or batch size.
* ``get_weights``, ``set_weights``, ``gradients`` and ``jacobian`` use the eager module;
  the compiled functions take its parameters as inputs, so they see every update.
"""

from __future__ import annotations

import dataclasses
import functools
import types

import numpy as np
import torch
from torch import nn

from .. import canonical as C
from ..base import Backend, Flow, TrainConfig
from ..errors import UnsupportedOp
from ..native.torch import TorchArrays, counted_work
from ..ops import base_log_prob
from ..passes import PassCounter
from ..spec import FlowSpec, Spec
from . import transformers as T
from .image import ImageModule
from .ops import OPS
from .layers import ActNorm, Conditioned, counts_now, make_block

VARIANTS = ("eager", "compile")
RECOMPILE_LIMIT = 8  # input shapes each op of a compile-variant flow compiles for


class FlowModule(nn.Module):
    def __init__(self, spec: FlowSpec, counter: PassCounter):
        super().__init__()
        self.spec = spec
        self.layout = C.blocks(spec)
        self.blocks = nn.ModuleList(make_block(b, spec, counter) for b in self.layout)
        self.has_actnorm = any(isinstance(b, ActNorm) for b in self.blocks)

    def canonical_names(self):
        """(state_dict key "blocks.{i}.{suffix}", canonical name "{block}.{suffix}")."""
        for i, b in enumerate(self.layout):
            for key in self.blocks[i].state_dict():
                yield f"blocks.{i}.{key}", f"{b.name}.{key}"

    @torch.no_grad()
    def initialize(self, x):
        """Glow's data-dependent ActNorm init, each from its own input."""
        for block in self.blocks:
            if isinstance(block, ActNorm):
                block.initialize(x)
            x, _ = block.to_latent(x)

    def to_latent(self, x, steps=T.EAGER):
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for block in self.blocks:
            x, ld = block.to_latent(x, steps)
            total = total + ld
        return x, total

    def to_data(self, z, steps=T.EAGER):
        total = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for block in reversed(self.blocks):
            z, ld = block.to_data(z, steps)
            total = total + ld
        return z, total

    def solves(self, direction: str) -> bool:
        """Whether to_latent / to_data runs a root search (bisection) somewhere."""
        return any(b.solves(b.block.inverted == (direction == "to_latent"))
                   for b in self.blocks if isinstance(b, Conditioned))

    def base_log_prob(self, z):
        return base_log_prob(OPS, z, self.spec.base)

    def log_prob(self, x, steps=T.EAGER):
        z, ld = self.to_latent(x, steps)
        return self.base_log_prob(z) + ld

    def loss(self, x, steps=T.EAGER):
        """The training objective: the mean negative log-likelihood of batch x."""
        return -self.log_prob(x, steps).mean()

    def reverse_kl(self, z, target):
        """The variational objective on base draws z: mean(log q(x) - log p~(x)), x the
        forward of z, differentiable through z's path (reparameterised)."""
        x, ld = self.to_data(z)
        return (self.base_log_prob(z) - ld - target.log_density(OPS, x)).mean()

    def base_sample(self, n: int, generator: torch.Generator, device):
        shape = (n, self.spec.dim)
        if self.spec.base == "normal":
            return torch.randn(shape, generator=generator, device=device)
        u = torch.rand(shape, generator=generator, device=device).clamp(1e-7, 1 - 1e-7)
        return torch.log(u) - torch.log1p(-u)


def _own_code(fn, name: str):
    """fn with a code object of its own (the same bytecode, closure and globals), so that
    the entries dynamo keeps on it belong to one flow and live as long as it does."""
    code = fn.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)


def _compile(fn, name: str):
    return torch.compile(_own_code(fn, name), dynamic=False, fullgraph=True,
                         recompile_limit=RECOMPILE_LIMIT)


def _calling(method):
    def call(*args):
        return method(*args)
    return call


# op -> (FlowModule method it runs, the direction of that method)
_OPS = {"log_prob": ("log_prob", "to_latent"), "inverse": ("to_latent", "to_latent"),
        "forward": ("to_data", "to_data"), "sample": ("to_data", "to_data"),
        "train_step": ("loss", "to_latent"),
        "train_step_reverse_kl": ("reverse_kl", "to_data")}


def _key(op: str, target=None) -> str:
    """What a compile-variant flow keeps op's function and passes under: one per
    reverse-KL target."""
    return op if target is None else f"{op}:{target.name}"


# spec family -> the nn.Module that computes it
MODULES = {"vector": FlowModule, "image": ImageModule}


class TorchFlow(Flow):
    def __init__(self, backend: "TorchBackend", spec: Spec, seed: int, device: str,
                 train: TrainConfig, variant: str = "eager"):
        super().__init__(backend, spec, backend._resolve(device), train, variant)
        self.counter = PassCounter(counts=counts_now)
        self.module = MODULES[spec.family](spec, self.counter).to(self.device)
        self._set(C.init_weights(spec, seed))
        self._needs_init = self.module.has_actnorm
        self.optimizer = torch.optim.Adam(self.module.parameters(), lr=train.lr,
                                          betas=train.betas, eps=train.eps)
        self._compiled: dict = {}  # compile variant: op -> its function, made on first call
        self._passes: dict[str, int] = {}  # compile variant: op -> passes of one call

    # --- canonical weights -------------------------------------------------------------
    def _names(self):
        return self.module.canonical_names()

    def get_weights(self):
        state = self.module.state_dict()
        return {canon: state[key].detach().cpu().numpy().copy() for key, canon in self._names()}

    def set_weights(self, weights):
        self._set(C.check_weights(self.spec, weights))
        self._needs_init = False

    def _set(self, weights):
        state = {key: torch.as_tensor(weights[canon]) for key, canon in self._names()}
        self.module.load_state_dict(state, strict=False)

    # --- compile variant --------------------------------------------------------------
    def _op(self, op: str, x, target=None):
        """The compiled function of op (of op on target, a reverse-KL objective); on first
        use it is made and the op's passes are counted by one eager run on the first row
        of x (the op's input)."""
        key = _key(op, target)
        fn = self._compiled.get(key)
        if fn is None:
            method, direction = _OPS[op]
            eager = getattr(self.module, method)
            if target is not None:
                eager = functools.partial(eager, target=target)
            self.counter.reset()
            with torch.no_grad():
                eager(x[:1])
            self._passes[key] = self.counter.n
            name = f"flowbench_{op.replace('_', '')}_{id(self):x}"
            if self.module.solves(direction):
                # a root search stops on data: eager Python around compiled loop bodies
                steps = T.Bisection(_compile(T.bracket_step, name + "_bracket"),
                                    _compile(T.halve_step, name + "_halve"))
                fn = functools.partial(eager, steps=steps)
            else:
                fn = _compile(_calling(eager), name)
            self._compiled[key] = fn
        return fn

    def _compiled_call(self, op: str, *args, target=None):
        fn = self._op(op, args[0], target)
        try:
            return fn(*args)
        except Exception as exc:
            if isinstance(exc, torch._dynamo.exc.FailOnRecompileLimitHit):
                raise UnsupportedOp(
                    f"{op} of this compile-variant flow was already compiled for "
                    f"{RECOMPILE_LIMIT} input shapes (batch sizes; see "
                    f"flowbench.adapters.torch.RECOMPILE_LIMIT): use fewer batch sizes per flow, a "
                    f"new flow, or the eager variant") from exc
            raise

    # --- ops ----------------------------------------------------------------------------
    def _call(self, op: str, x):
        if self.variant == "compile":
            with torch.no_grad():
                out = self._compiled_call(op, x)
            self.passes = self._passes[op]
            return out
        self.counter.reset()
        with torch.no_grad():
            out = getattr(self.module, _OPS[op][0])(x)
        self.passes = self.counter.n
        return out

    def _base_sample(self, n, seed):
        gen = torch.Generator(device=self.device).manual_seed(seed)
        return self.module.base_sample(n, gen, self.device)

    def _sample(self, n, seed):
        return self._call("sample", self._base_sample(n, seed))[0]

    def _initialize(self, x):
        self.module.initialize(x)
        self._needs_init = False

    def _train_step(self, x):
        if self._needs_init:
            self._initialize(x)
        return self._adam_step("train_step", x)

    def _train_step_reverse_kl(self, target, z):
        return self._adam_step("train_step_reverse_kl", z, target)

    def _adam_step(self, op: str, data, target=None):
        """One Adam step on op's objective (the NLL of x, or the reverse KL to target on
        base draws z)."""
        self.counter.reset()
        self.optimizer.zero_grad(set_to_none=True)
        if self.variant == "compile":
            loss = self._compiled_call(op, data, target=target)
        else:
            method = getattr(self.module, _OPS[op][0])
            loss = method(data) if target is None else method(data, target)
        loss.backward()
        if self.train_config.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.train_config.clip_norm)
        self.optimizer.step()
        self.passes = (self._passes[_key(op, target)] if self.variant == "compile"
                       else self.counter.n)
        return loss.item()

    def executed(self, run, analytic):
        if self.variant == "eager":
            return counted_work(run, self.backend.block)
        self.variant = "eager"  # FlopCounterMode cannot run inside torch.compile's code
        try:
            work = counted_work(run, self.backend.block)
        finally:
            self.variant = "compile"
        return dataclasses.replace(work, note="counted on the eager module torch.compile "
                                   "compiles (the counter cannot enter compiled code)")

    def _gradients(self, x):
        names = dict(self._names())
        params = dict(self.module.named_parameters())
        loss = self.module.loss(x)
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
    variants = VARIANTS
    flow_class = TorchFlow
