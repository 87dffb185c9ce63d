"""What the JAX peers share: the library's model is a pytree (an equinox module or a dict
of arrays); its array leaves are trained with optax Adam, every op is jitted with
``eqx.filter_jit`` (non-array leaves static), and conditioner evaluations are *measured*:
when ``flow.passes`` is read, the last op runs once more without jit (``jax.disable_jit``
makes lax loops run their bodies in Python) while the backend's conditioner hits its
``PassCounter``. A count taken while tracing would see each loop body once."""

from __future__ import annotations

import abc
from typing import ContextManager

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ..base import TrainConfig
from ..native.jax import JaxArrays, compiled_work
from ..passes import PassCounter
from ..spec import FlowSpec
from .base import LIBRARY_OPS, PeerBackend, PeerFlow


class JaxPeerFlow(PeerFlow):
    def __init__(self, backend: "JaxPeerBackend", spec: FlowSpec, seed: int, device: str,
                 train: TrainConfig, variant: str = "jit"):
        super().__init__(backend, spec, device, train, variant)
        self.offer = backend.offer(spec)
        dev = backend._resolve(device)
        # models hold non-array leaves too (activations, closures): move only the arrays
        model = jax.tree_util.tree_map(lambda a: jax.device_put(a, dev) if eqx.is_array(a)
                                       else a, backend.make(spec, jax.random.key(seed)))
        self.params, self.static = backend.partition(model)
        opt = optax.adam(train.lr, b1=train.betas[0], b2=train.betas[1], eps=train.eps)
        if train.clip_norm is not None:
            opt = optax.chain(optax.clip_by_global_norm(train.clip_norm), opt)
        self.optimizer = opt
        self.opt_state = opt.init(self.params)
        self._last = None
        self._counts: dict = {}

    @property
    def counter(self) -> PassCounter:
        return self.backend.counter

    @property
    def model(self):
        return self.backend.combine(self.params, self.static)

    # --- ops ------------------------------------------------------------------------------
    def _call(self, op: str, *args):
        method = LIBRARY_OPS[op]
        self._last = (method, args)
        return _jitted(self.backend, method)(self.params, self.static, *args)

    def _sample(self, n, seed):
        key = jax.device_put(jax.random.key(seed), self.backend._resolve(self.device))
        return self._call("sample", key, n)

    def _sample_and_log_prob(self, n, seed):
        key = jax.device_put(jax.random.key(seed), self.backend._resolve(self.device))
        return self._call("sample_and_log_prob", key, n)

    def _train_step(self, x):
        self._last = ("train_step", (x,))
        step = _train_step(self.backend)
        self.params, self.opt_state, loss = step(self.params, self.static, self.opt_state,
                                                 self.optimizer, x)
        return loss

    def num_params(self) -> int:
        return int(sum(a.size for a in jax.tree_util.tree_leaves(self.params)))

    def executed(self, run, analytic):
        self.backend.block(run())
        op, args = self._last
        if op == "train_step":
            return compiled_work(_train_step(self.backend), self.params, self.static,
                                 self.opt_state, self.optimizer, *args)
        return compiled_work(_jitted(self.backend, op), self.params, self.static, *args)

    # --- measured passes ------------------------------------------------------------------
    @property
    def passes(self) -> int:
        if self._last is None:
            return 0
        op, args = self._last
        key = (op, tuple(getattr(a, "shape", a) for a in args))
        if key not in self._counts:
            with jax.disable_jit(), self.backend.counting() as counter:
                if op == "train_step":
                    jax.grad(lambda p: _loss(self.backend, p, self.static, args[0]))(
                        self.params)
                else:
                    getattr(self.backend, op)(self.model, *args)
            self._counts[key] = counter.n
        return self._counts[key]


def _loss(backend, params, static, x):
    return -jnp.mean(backend.log_prob(backend.combine(params, static), x))


_JITTED: dict = {}


def _jitted(backend, op):
    """One filter_jit per (backend, op): flows of the same spec share compiled code."""
    if (backend.name, op) not in _JITTED:
        fn = getattr(backend, op)

        def run(params, static, *args):  # python ints (sample's n) stay static
            return fn(backend.combine(params, static), *args)

        _JITTED[backend.name, op] = eqx.filter_jit(run)
    return _JITTED[backend.name, op]


def _train_step(backend):
    if (backend.name, "train_step") not in _JITTED:
        @eqx.filter_jit
        def step(params, static, opt_state, optimizer, x):
            loss, grads = jax.value_and_grad(_loss, argnums=1)(backend, params, static, x)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        _JITTED[backend.name, "train_step"] = step
    return _JITTED[backend.name, "train_step"]


class JaxPeerBackend(JaxArrays, PeerBackend):
    """A library's flows as pytrees. Subclasses build one, say how the library names its
    directions, and which callable is the conditioner."""

    variants = ("jit",)
    flow_class = JaxPeerFlow

    def version(self):
        return f"{PeerBackend.version(self)} (jax {jax.__version__})"

    @abc.abstractmethod
    def make(self, spec: FlowSpec, key): ...
    @abc.abstractmethod
    def log_prob(self, model, x): ...
    @abc.abstractmethod
    def to_latent(self, model, x): ...     # (z, log|det dz/dx|)
    @abc.abstractmethod
    def to_data(self, model, z): ...       # (x, log|det dx/dz|)
    @abc.abstractmethod
    def sample(self, model, key, n: int): ...

    def partition(self, model):
        """(trained arrays, everything else) of a model pytree."""
        return eqx.partition(model, eqx.is_inexact_array)

    def combine(self, params, static):
        return eqx.combine(params, static)

    counter: PassCounter  # the backend's: its conditioner hits it inside counting()

    @abc.abstractmethod
    def counting(self) -> ContextManager[PassCounter]:
        """Inside, every conditioner evaluation hits ``counter`` (zeroed on entry, and
        yielded)."""
