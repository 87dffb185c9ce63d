"""The TensorFlow Probability backend: canonical flows from tfp.bijectors on TF2, Keras Adam.

Three execution variants, chosen per flow with ``build(..., variant=...)`` and recorded in
results: ``eager`` (plain eager TF), ``function`` (``tf.function``, the default) and ``xla``
(``tf.function(jit_compile=True)``). Parameters are canonical-named ``tf.Variable``s held by
the flow; the ops are functions of (parameters, input) traced once per spec and variant
with a batch-polymorphic input signature and shared by every flow of that spec, so new
flows, set_weights and new batch sizes do not retrace. In ``function`` each flow calls them
through a thin tf.function of its own that captures its variables (``TfpFlow._bound``):
handing 25 variables over as arguments cost each call more than the graph's own dispatch.
The train step closes over its flow's variables and Keras optimizer, so it is traced once
per flow.

The optimizer is Keras' Adam with its epsilon moved to where torch and optax add it
(``adapters/tfp/optim.py``: Keras adds it before bias correction, which measurably changed
one step of a spline flow).

TensorFlow is imported and configured by ``adapters/native/tf.py``: start-up chatter
silenced, memory growth on GPUs, CPU thread pools from FLOWBENCH_THREADS.
"""

from __future__ import annotations

import collections
import functools

import numpy as np

from .. import canonical as C
from ..base import Backend, Flow, TrainConfig
from ..chain import ChainModel
from ..passes import PassCounter
from ..native.tf import TFArrays, function_work, tf  # imports TF quietly, configures it
from ..quiet import quiet_imports
from ..spec import Spec

with quiet_imports():
    import tensorflow_probability as tfp

from .bijectors import block_bijector  # noqa: E402
from .image import TfImageModel  # noqa: E402
from .ops import OPS  # noqa: E402
from .optim import Adam  # noqa: E402

tfd, tfb = tfp.distributions, tfp.bijectors
VARIANTS = ("eager", "function", "xla")
CACHE_SPECS = 64  # traced functions kept per spec and variant (see adapters/jax on why few)
DEFAULT_VARIANT = "function"


class Model(ChainModel):
    """Pure functions of (params, data) for one vector spec, params: canonical name ->
    tensor; the flow is a tfb.Chain."""

    chain, distributions, array = tfb.Chain, tfd, tf
    block_bijector = staticmethod(block_bijector)

    def distribution(self, params):
        """The flow as TFP sees it: base pushed through the sampling direction z -> x."""
        return tfd.TransformedDistribution(self.base(), tfb.Invert(self.bijector(params)))

    def to_latent(self, params, x):
        b = self.bijector(params)
        z = b.forward(x)
        ld = b.forward_log_det_jacobian(x, event_ndims=1)
        return z, tf.broadcast_to(ld, tf.shape(x)[:1])

    def to_data(self, params, z):
        b = self.bijector(params)
        x = b.inverse(z)
        ld = b.inverse_log_det_jacobian(z, event_ndims=1)
        return x, tf.broadcast_to(ld, tf.shape(z)[:1])

    def log_prob(self, params, x):
        return self.distribution(params).log_prob(x)

    def sample(self, params, n, seed):
        return self.distribution(params).sample(n, seed=seed)

    def base_sample(self, n, seed):
        """The draws TransformedDistribution.sample makes: it hands the seed to the base."""
        return self.base().sample(n, seed=seed)

    def sample_and_log_prob(self, params, n, seed):
        """sample's draws and their log q from the one pass z -> x."""
        z = self.base_sample(n, seed)
        x, ld = self.to_data(params, z)
        return x, self.base().log_prob(z) - ld

    def actnorm_stats(self, x):
        mean, var = tf.nn.moments(x, axes=[0])
        return mean, tf.math.log(tf.sqrt(var) + C.ACTNORM_EPS)

    def actnorm_init(self, params, x) -> dict:
        return self._actnorm_init(params, x)


# spec family -> the model that computes it
MODELS = {"vector": Model, "image": TfImageModel}


def _signature(spec: Spec):
    return {k: tf.TensorSpec(shape, tf.int64 if dtype == "int64" else tf.float32)
            for k, (shape, dtype) in C.weight_shapes(spec).items()}


@functools.lru_cache(maxsize=CACHE_SPECS)
def _compiled(spec: Spec, variant: str):
    """The ops of a spec in one execution variant, shared by every flow of that spec."""
    m = MODELS[spec.family](spec)
    passes: dict[str, int] = {}
    traces: collections.Counter = collections.Counter()
    fns = {"log_prob": m.log_prob, "inverse": m.to_latent, "forward": m.to_data,
           # n is static (the output shape; XLA needs it), the seed a tensor
           "sample": m.sample,
           # compiled as sample is: XLA draws other numbers than TF's kernels for the same
           # stateless seed, and sample(n, seed) must be forward(base_sample(n, seed))
           "base_sample": lambda params, n, seed: m.base_sample(n, seed)}
    if hasattr(m, "sample_and_log_prob"):  # vector flows: one function for the op
        fns["sample_and_log_prob"] = m.sample_and_log_prob
    out = {}
    for op, fn in fns.items():
        fn = m.counter.counted(op, fn, passes, traces)
        if variant == "xla":  # XLA compiles per concrete shape anyway; a static batch
            fn = tf.function(fn, jit_compile=True, autograph=False)  # size also lets it
            # differentiate through the MAF while_loop
        elif variant == "function":
            fn = tf.function(_read_once(fn), autograph=False)
            if op not in ("sample", "base_sample", "sample_and_log_prob"):
                fn = AnyBatch(fn, spec.dim)
        out[op] = fn
    return m, out, passes, traces


def _read_once(fn):
    """fn with every variable of its params read once, at the top of the graph: TFP
    evaluates a conditioner again for the log-det, and grappler merges the copy only when
    both read the same tensors (each read of a variable is a stateful op of its own; at
    dim 64 the unmerged copy doubled the matmul work, measured by the executed count)."""
    def run(params, *args):
        return fn({k: tf.convert_to_tensor(v) for k, v in params.items()}, *args)
    return run


class AnyBatch:
    """A tf.function of (params, data) traced once, on first call, for data of any batch
    size. No ``input_signature``: a signature of TensorSpecs makes every call read each
    variable of the params eagerly before it runs the graph (1.0 ms more per call at 25
    variables, measured), where variables passed as they are reach the graph as handles.
    Variables of another flow with the same shapes reuse the trace."""

    def __init__(self, function, dim: int):
        self.function, self.dim, self.traced = function, dim, False

    def __call__(self, params, x):
        if not self.traced:
            self.function.get_concrete_function(params, tf.TensorSpec([None, self.dim],
                                                                      tf.float32))
            self.traced = True
        return self.function(params, x)

    def __getattr__(self, name):  # get_concrete_function and the like, for the counters
        return getattr(self.function, name)


@functools.lru_cache(maxsize=CACHE_SPECS)
def _jacobian(spec: Spec, direction: str):
    """Per-row Jacobian of forward (z -> x) or inverse (x -> z), as one tf.function (an
    eager tape through MAF's while_loop would run it row by row in Python)."""
    m = _compiled(spec, "function")[0]
    fn = m.to_data if direction == "forward" else m.to_latent

    @tf.function(input_signature=[_signature(spec), tf.TensorSpec([None, spec.dim])],
                 autograph=False)
    def jac(params, a):
        with tf.GradientTape() as tape:
            tape.watch(a)
            out = fn(params, a)[0]
        # a while_loop over output rows traces far faster here than pfor through MAF loops
        return tape.batch_jacobian(out, a, experimental_use_pfor=False)

    return jac


class TfpFlow(Flow):
    def __init__(self, backend: "TfpBackend", spec: Spec, seed: int, device: str,
                 train: TrainConfig, variant: str):
        super().__init__(backend, spec, device, train, variant)
        self._tf_device = backend._resolve(device)
        self.model, self._fns, self._passes, self.traces = _compiled(spec, variant)
        with tf.device(self._tf_device):
            self.vars = {k: tf.Variable(np.zeros(shape, dtype), name=k,
                                        trainable=k.rsplit(".", 1)[-1] not in C.FIXED)
                         for k, (shape, dtype) in C.weight_shapes(spec).items()}
            self.trainable = [v for v in self.vars.values() if v.trainable]
            kw = {} if train.clip_norm is None else {"global_clipnorm": train.clip_norm}
            self.optimizer = Adam(learning_rate=train.lr, beta_1=train.betas[0],
                                  beta_2=train.betas[1], epsilon=train.eps, **kw)
            self.optimizer.build(self.trainable)
        self._bound_fns: dict = {}  # (op, n) -> the op bound to this flow's variables
        self._step = self._make_step()
        self._rkl_steps: dict = {}  # target name -> its reverse-KL step, made on first use
        self._set(C.init_weights(spec, seed))
        self._needs_init = spec.actnorm

    @property
    def counter(self) -> PassCounter:
        """The conditioner-pass counter of the spec's model, hit while an op runs or traces."""
        return self.model.counter

    # --- weights --------------------------------------------------------------------------
    def _set(self, weights):
        for k, v in self.vars.items():
            v.assign(weights[k])

    def get_weights(self):
        return {k: v.numpy().copy() for k, v in self.vars.items()}

    def set_weights(self, weights):
        self._set(C.check_weights(self.spec, weights))
        self._needs_init = False

    # --- ops ------------------------------------------------------------------------------
    def _call(self, op: str, *args):
        self._last = (self._fns[op], (self.vars, *args))  # the work done: the shared trace
        with tf.device(self._tf_device):
            if self.variant == "function":
                out = self._bound(op, args)(args[-1])
            else:
                out = self._fns[op](self.vars, *args)
        self.passes = self._passes[op]
        return out

    def _bound(self, op: str, args):
        """The shared traced op with this flow's variables captured: a tf.function of the
        data (or of the seed, for an n sampled) that calls the shared one inside its graph.
        Handing 25 variables to a tf.function costs its Python dispatch about 0.4 ms a call
        (nice sample at dim 2, batch 1024: 1.74 against 1.37 ms); the wrapper's trace
        holds one call op, so it is cheap, and the spec's trace stays shared."""
        key = (op, *args[:-1])  # sample ops: n is static
        fn = self._bound_fns.get(key)
        if fn is None:
            shared, static = self._fns[op], args[:-1]
            last = (tf.TensorSpec([2], tf.int32) if static
                    else tf.TensorSpec([None, self.spec.dim], tf.float32))
            fn = self._bound_fns[key] = tf.function(
                lambda a: shared(self.vars, *static, a), input_signature=[last],
                autograph=False)
        return fn

    def _sample(self, n, seed):
        return self._call("sample", n, tf.constant([seed, 0], tf.int32))

    def _base_sample(self, n, seed):
        return self._call("base_sample", n, tf.constant([seed, 0], tf.int32))

    def _sample_and_log_prob(self, n, seed):
        if "sample_and_log_prob" not in self._fns:
            return super()._sample_and_log_prob(n, seed)
        return self._call("sample_and_log_prob", n, tf.constant([seed, 0], tf.int32))

    def _make_step(self, target=None):
        """The train step on the NLL of a batch x, or on the reverse KL to target from
        base draws z (x = forward(z), differentiated through z's path)."""
        m, counter = self.model, self.model.counter
        flow = self

        def objective(params, data):
            if target is None:
                return -tf.reduce_mean(m.log_prob(params, data))
            x, ld = m.to_data(params, data)
            return tf.reduce_mean(m.base().log_prob(data) - ld
                                  - target.log_density(OPS, x))

        def step(x):
            counter.reset()
            with tf.GradientTape() as tape:  # variables read once: see _read_once
                params = {k: tf.convert_to_tensor(v) for k, v in flow.vars.items()}
                loss = objective(params, x)
            grads = tape.gradient(loss, flow.trainable)
            flow.optimizer.apply_gradients(zip(grads, flow.trainable))
            flow._step_passes = counter.n
            return loss

        if self.variant == "eager":
            return step
        if self.variant == "xla":  # traced per batch shape, as XLA compiles per shape
            return tf.function(step, jit_compile=True, autograph=False)
        return tf.function(step, input_signature=[tf.TensorSpec([None, self.spec.dim],
                                                                tf.float32)], autograph=False)

    def _train_step(self, x):
        if self._needs_init:
            self._initialize(x)
        self._last = (self._step, (x,))
        with tf.device(self._tf_device):
            loss = self._step(x)
        self.passes = self._step_passes
        return loss

    def _train_step_reverse_kl(self, target, z):
        step = self._rkl_steps.get(target.name)
        if step is None:
            step = self._rkl_steps[target.name] = self._make_step(target)
        self._last = (step, (z,))
        with tf.device(self._tf_device):
            loss = step(z)
        self.passes = self._step_passes
        return loss

    def executed(self, run, analytic):
        run()
        with tf.device(self._tf_device):
            return function_work(*self._last, self.variant, analytic)

    def _initialize(self, x):
        for name, value in self.model.actnorm_init(self.vars, x).items():
            self.vars[name].assign(value)
        self._needs_init = False

    def _gradients(self, x):
        with tf.device(self._tf_device), tf.GradientTape() as tape:
            loss = -tf.reduce_mean(self.model.log_prob(self.vars, x))
        names = [k for k, v in self.vars.items() if v.trainable]
        return dict(zip(names, tape.gradient(loss, self.trainable)))

    def jacobian(self, a, direction: str = "forward") -> np.ndarray:
        """Per-row autodiff Jacobian (n, dim, dim) of forward (z -> x) or inverse (x -> z)."""
        a = self.backend.to_native(a, self.device)
        with tf.device(self._tf_device):
            return _jacobian(self.spec, direction)(self.vars, a).numpy()


def clear_caches() -> None:
    """Drop the traced (and XLA-compiled) functions shared per spec; flows keep theirs."""
    _compiled.cache_clear()
    _jacobian.cache_clear()


class TfpBackend(TFArrays, Backend):
    name = "tfp"
    variants = VARIANTS
    default_variant = DEFAULT_VARIANT
    extra_logdet_passes = 1
    flow_class = TfpFlow

    def version(self):
        return f"{tf.__version__} / tfp {tfp.__version__}"

    def clear_caches(self):
        clear_caches()
