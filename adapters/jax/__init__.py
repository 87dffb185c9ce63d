"""The JAX backend: canonical flows from distrax bijectors, Adam from optax, every op jitted.

Parameters live in the adapter as a dict of canonical names -> jax arrays (trained part
and fixed part, the LU permutation and signs), passed as arguments to functions that are
jitted once per spec (and input shape) and shared by every flow of that spec, so a new
flow, a new seed, set_weights or another learning rate never retraces. Sequential passes
run in lax.fori_loop (MADE inverse) and lax.while_loop (bisection): the traced program, and
so the compile time, does not grow with dim.

Float32 matmuls run at "highest" precision, process-wide: on GPU the default would use
TF32 passes and break parity with the other backends at 1e-4.
"""

from __future__ import annotations

import collections
import functools

import jax

# Matched float32 math: without this, f32 matmuls on GPU may run in TF32/bf16 passes.
jax.config.update("jax_default_matmul_precision", "highest")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from .. import canonical as C  # noqa: E402
from ..base import Backend, Flow, TrainConfig  # noqa: E402
from ..chain import ChainModel  # noqa: E402
from ..passes import PassCounter  # noqa: E402
from ..native.jax import JaxArrays, compiled_work  # noqa: E402
from ..quiet import without_tensorflow  # noqa: E402
from ..spec import Spec  # noqa: E402

with without_tensorflow():  # distrax -> TFP's JAX substrate would load all of TensorFlow
    import distrax

from .bijectors import block_bijector  # noqa: E402
from .image import JaxImageModel  # noqa: E402
from .ops import OPS  # noqa: E402


# Compiled programs kept per spec. Each XLA CPU executable holds a few memory mappings of
# its own and Linux allows 65530 per process (vm.max_map_count); a process that compiled
# thousands of programs crashed in XLA's compiler. Evicted programs are freed once no flow
# uses them; clear_caches() drops them all.
CACHE_SPECS = 64


def _split(weights: dict):
    train = {k: v for k, v in weights.items() if k.rsplit(".", 1)[-1] not in C.FIXED}
    fixed = {k: v for k, v in weights.items() if k.rsplit(".", 1)[-1] in C.FIXED}
    return train, fixed


class Model(ChainModel):
    """Pure functions of (train, fixed, data) for one vector spec: a distrax Chain."""

    chain, distributions, array = distrax.Chain, distrax, jnp
    block_bijector = staticmethod(block_bijector)

    def to_latent(self, train, fixed, x):
        return self.bijector({**train, **fixed}).forward_and_log_det(x)

    def to_data(self, train, fixed, z):
        return self.bijector({**train, **fixed}).inverse_and_log_det(z)

    def log_prob(self, train, fixed, x):
        z, ld = self.to_latent(train, fixed, x)
        return self.base().log_prob(z) + ld

    def base_sample(self, key, n):
        return self.base().sample(seed=key, sample_shape=(n,))

    def sample(self, train, fixed, key, n):
        return self.to_data(train, fixed, self.base_sample(key, n))[0]

    def sample_and_log_prob(self, train, fixed, key, n):
        z = self.base_sample(key, n)
        x, ld = self.to_data(train, fixed, z)
        return x, self.base().log_prob(z) - ld

    def actnorm_stats(self, x):
        return jnp.mean(x, 0), jnp.log(jnp.std(x, 0) + C.ACTNORM_EPS)

    def actnorm_init(self, train, fixed, x) -> dict:
        return self._actnorm_init({**train, **fixed}, x)


# spec family -> the model that computes it
MODELS = {"vector": Model, "image": JaxImageModel}


def _adam(clip: bool):
    """Adam (optionally after global-norm clipping) with its hyperparameters held in the
    optimizer state, not baked into the compiled step: a learning-rate sweep reuses it."""
    def make(learning_rate, b1, b2, eps, max_norm=None):
        adam = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
        return optax.chain(optax.clip_by_global_norm(max_norm), adam) if clip else adam
    return optax.inject_hyperparams(make)


def _optimizer(train: TrainConfig):
    hyper = dict(learning_rate=train.lr, b1=train.betas[0], b2=train.betas[1], eps=train.eps)
    if train.clip_norm is not None:
        hyper["max_norm"] = train.clip_norm
    return _adam(train.clip_norm is not None)(**hyper)


class Compiled:
    """Everything jitted for one spec, shared by every flow of that spec (params are
    arguments, not constants), so a new flow, set_weights or a new seed never recompiles.
    Built lazily; ``passes[op]`` and ``traces[op]`` are written while an op traces."""

    def __init__(self, spec):
        self.model = m = MODELS[spec.family](spec)
        self.passes: dict[str, int] = {}
        self.traces: collections.Counter = collections.Counter()
        ops = {"log_prob": m.log_prob, "inverse": m.to_latent, "forward": m.to_data,
               "sample": m.sample}
        if hasattr(m, "sample_and_log_prob"):  # vector flows: one program for the op
            ops["sample_and_log_prob"] = m.sample_and_log_prob
        self.ops = {op: jax.jit(m.counter.counted(op, fn, self.passes, self.traces),
                                static_argnums=3 if op.startswith("sample") else ())
                    for op, fn in ops.items()}
        self._steps: dict[tuple, object] = {}
        self._jacobians: dict[str, object] = {}
        self.grad = jax.jit(jax.grad(self.loss))

    def loss(self, tr, fx, x):
        return -jnp.mean(self.model.log_prob(tr, fx, x))

    def reverse_kl(self, target):
        """The variational objective on base draws z: mean(log q(x) - log p~(x)), x the
        forward of z, differentiated through z's path (reparameterised)."""
        m = self.model

        def loss(tr, fx, z):
            x, ld = m.to_data(tr, fx, z)
            return jnp.mean(m.base().log_prob(z) - ld - target.log_density(OPS, x))
        return loss

    def step(self, clip: bool, target=None):
        """The train step on the NLL of a batch, or on the reverse KL to target from base
        draws; hyperparameters arrive in the optimizer state."""
        key = (clip, None if target is None else target.name)
        if key not in self._steps:
            opt = _adam(clip)(learning_rate=0.0, b1=0.0, b2=0.0, eps=0.0,
                              **({"max_norm": 0.0} if clip else {}))  # update() reads state
            objective = self.loss if target is None else self.reverse_kl(target)

            def step(tr, fx, state, x):
                loss, grads = jax.value_and_grad(objective)(tr, fx, x)
                updates, state = opt.update(grads, state, tr)
                return optax.apply_updates(tr, updates), state, loss

            op = "train_step" if target is None else "train_step_reverse_kl"
            self._steps[key] = jax.jit(self.model.counter.counted(
                op, step, self.passes, self.traces))
        return self._steps[key]

    def jacobian(self, direction: str):
        """Per-row forward-mode Jacobian of forward (z -> x) or inverse (x -> z)."""
        if direction not in self._jacobians:
            fn = self.model.to_data if direction == "forward" else self.model.to_latent

            def jac(tr, fx, a):
                return jax.vmap(jax.jacfwd(lambda r: fn(tr, fx, r[None])[0][0]))(a)

            self._jacobians[direction] = jax.jit(jac)
        return self._jacobians[direction]


@functools.lru_cache(maxsize=CACHE_SPECS)
def _compiled(spec: Spec) -> Compiled:
    return Compiled(spec)


class JaxFlow(Flow):
    def __init__(self, backend: "JaxBackend", spec: Spec, seed: int, device: str,
                 train: TrainConfig, variant: str = "jit"):
        super().__init__(backend, spec, device, train, variant)
        self._device = backend._resolve(device)
        self._compiled = _compiled(spec)
        self.model, self.traces = self._compiled.model, self._compiled.traces
        self.optimizer = _optimizer(train)
        self._step = self._compiled.step(train.clip_norm is not None)
        self._set(C.init_weights(spec, seed))
        self._needs_init = spec.actnorm

    @property
    def counter(self) -> PassCounter:
        """The conditioner-pass counter of the spec's model, hit while an op traces."""
        return self.model.counter

    # --- weights --------------------------------------------------------------------------
    def _set(self, weights):
        train, fixed = _split(weights)
        put = lambda d: {k: jax.device_put(jnp.asarray(v), self._device) for k, v in d.items()}
        self.params, self.fixed = put(train), put(fixed)
        self.opt_state = self.optimizer.init(self.params)

    def get_weights(self):
        out = {k: np.array(v) for k, v in {**self.params, **self.fixed}.items()}
        return {k: out[k] for k in C.weight_shapes(self.spec)}

    def set_weights(self, weights):
        self._set(C.check_weights(self.spec, weights))
        self._needs_init = False

    # --- ops ------------------------------------------------------------------------------
    def _call(self, op: str, *args):
        self._last = (self._compiled.ops[op], (self.params, self.fixed, *args))
        out = self._last[0](*self._last[1])
        self.passes = self._compiled.passes[op]
        return out

    def _key(self, seed):
        return jax.device_put(jax.random.key(seed), self._device)

    def _sample(self, n, seed):
        return self._call("sample", self._key(seed), n)

    def _base_sample(self, n, seed):
        return self.model.base_sample(self._key(seed), n)

    def _sample_and_log_prob(self, n, seed):
        if "sample_and_log_prob" not in self._compiled.ops:
            return super()._sample_and_log_prob(n, seed)
        return self._call("sample_and_log_prob", self._key(seed), n)

    def _initialize(self, x):
        self.params = {**self.params, **self.model.actnorm_init(self.params, self.fixed, x)}
        self.opt_state = self.optimizer.init(self.params)
        self._needs_init = False

    def _train_step(self, x):
        if self._needs_init:
            self._initialize(x)
        self._last = (self._step, (self.params, self.fixed, self.opt_state, x))
        self.params, self.opt_state, loss = self._step(*self._last[1])
        self.passes = self._compiled.passes["train_step"]
        return loss

    def _train_step_reverse_kl(self, target, z):
        step = self._compiled.step(self.train_config.clip_norm is not None, target)
        self._last = (step, (self.params, self.fixed, self.opt_state, z))
        self.params, self.opt_state, loss = step(*self._last[1])
        self.passes = self._compiled.passes["train_step_reverse_kl"]
        return loss

    def executed(self, run, analytic):
        self.backend.block(run())
        jitted, args = self._last
        return compiled_work(jitted, *args)

    def _gradients(self, x):
        return self._compiled.grad(self.params, self.fixed, x)

    def jacobian(self, a, direction: str = "forward"):
        jac = self._compiled.jacobian(direction)
        return np.asarray(jac(self.params, self.fixed, self.backend.to_native(a, self.device)))


def clear_caches() -> None:
    _compiled.cache_clear()
    jax.clear_caches()


class JaxBackend(JaxArrays, Backend):
    name = "jax"
    variants = ("jit",)
    flow_class = JaxFlow

    def clear_caches(self):
        clear_caches()
