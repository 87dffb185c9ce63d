"""TensorFlow Probability (TF 2.21 substrate) as its users build flows: a
``tfd.TransformedDistribution`` over a standard normal whose bijector is a ``tfb.Chain`` of
TFP's own layers (MaskedAutoregressiveFlow + AutoregressiveNetwork, RealNVP, Invert,
Permute, RationalQuadraticSpline) with tf_keras networks as conditioners.

Directions: TFP's ``forward`` is base -> data (sampling), as the protocol. Which direction
is cheap is the library's: ``MaskedAutoregressiveFlow.forward`` is the sequential one (a
``tf.while_loop`` of ``dim`` network passes: sampling a MAF), its ``inverse`` one pass
(log_prob); ``tfb.Invert`` swaps the two for IAF.

Surprising, and handled here:

- Caching. TFP bijectors cache results keyed on the input tensor object (weakly, for as
  long as the output lives), and this peer keeps one distribution per flow, so a repeated
  call on the same eager tensor can skip some network passes: log_prob twice on one
  tensor measured 4 then 3 passes (MAF, dim 8, 2 layers), and after a train step that
  second call returns a stale value, partly computed with the old weights; an IAF's
  log_prob of its own samples skips the sequential loop (2 passes, not 18). The backend
  sets ``caches_inputs`` so the timing harness hands each call a fresh copy
  (``Backend.fresh``); the public methods copy their input anyway.
- Eager TFP evaluates a layer's network once for ``inverse`` and again for
  ``inverse_log_det_jacobian`` (tensorflow/probability#54): 2 passes per layer for a MAF's
  log_prob. Passes are measured, never derived from names: in the ``eager`` variant as the
  op runs, in ``function`` by running the last op once more eagerly on a fresh copy of its
  input when ``flow.passes`` is read (a traced call runs the Python network once per
  trace, not once per call).
- ``tfb.real_nvp_default_template`` (tf1 ``make_template`` over tf1 dense layers) still
  exists but is unusable here: its variables are invisible to the bijector (RealNVP
  reported 0 trainable variables), tf_keras' seed does not make it deterministic, and
  after one ``tf.function`` trace its eager calls fail with "out of scope" graph tensors.
  The same network (hidden Dense layers, a linear Dense split into shift | log_scale) is
  written with tf_keras Dense layers in a ``tf.Module``, as TFP's docs advise.
- Keras layers create their variables on first call, so every flow runs log_prob once at
  build time (that touches every network) before collecting its variables. Initial
  weights are seeded per build with the generator ``tf_keras.utils.set_random_seed``
  installs, scoped to the build so process-wide seeds are left alone.
- TFP's MADE keeps full kernels whose masked entries are held at zero by a Keras kernel
  *constraint*: only an optimizer that applies constraints (tf_keras' does) keeps the
  network autoregressive. Keras 3's ``keras.optimizers.Adam`` cannot train these tf_keras
  variables, so training uses ``tf_keras.optimizers.Adam``.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np

from ..base import TrainConfig
from ..native.tf import TFArrays, function_work, tf  # imports TF quietly, configures it
from ..passes import PassCounter
from ..quiet import quiet_imports
from ..spec import FlowSpec
from .base import Offer, PeerBackend, PeerFlow

with quiet_imports():
    import tensorflow_probability as tfp
    import tf_keras
    from tf_keras.src import backend as _keras_backend

tfb, tfd = tfp.bijectors, tfp.distributions
Dense = tf_keras.layers.Dense
VARIANTS = ("eager", "function")
SPLINE_MIN = 1e-2  # min bin width/height and knot slope of the TFP docs' SplineParams

_MADE = ("tfb.AutoregressiveNetwork with hidden_units=spec.hidden and the spec activation; "
         "hidden_degrees='equal' (contiguous blocks of hidden units per degree; canonical: "
         "cyclic), input_order='left-to-right' in every layer")
_REVERSE = ("tfb.Permute(reversed order) between layers (canonical reverses the MADE "
            "degrees on odd layers instead)")
_COUPLING_NET = ("real_nvp_default_template's network (Dense(h, activation) per spec.hidden, "
                 "then a linear Dense) as tf_keras layers in a tf.Module: the template "
                 "itself is untracked and breaks after a tf.function trace in TF 2.21")
_COUPLING_MASKS = ("num_masked=dim//2 (the first dim//2 features condition) in every layer, "
                   "a reversing tfb.Permute between layers stands for canonical's mirrored "
                   "mask: same conditioning sets, features in reversed order")
_SPLINE = ("the TFP docs' SplineParams constraints: widths/heights softmax * (2B - K*1e-2) "
           "+ 1e-2 (an absolute 1e-2 minimum; canonical 1e-3 of the interval, the same at "
           "tail_bound 5), knot slopes softplus + 1e-2 (canonical 1e-3 + softplus); "
           "RationalQuadraticSpline(range_min=-B): identity outside [-B, B], boundary "
           "slope 1, 3K-1 parameters per dimension as canonical")
_AFFINE = ("TFP's affine layer maps z -> x: x = z * exp(s) + m, i.e. z = (x - m) * exp(-s) "
           "(canonical z = x * exp(s) + m: the same family with s and m on the other side)")


class _CountedMADE(tfb.AutoregressiveNetwork):
    """TFP's MADE, counting each evaluation."""

    def __init__(self, counter: PassCounter, **kwargs):
        super().__init__(**kwargs)
        self._counter = counter

    def call(self, x, conditional_input=None):
        self._counter.hit()
        return super().call(x, conditional_input)


class _CouplingNet(tf.Module):
    """RealNVP's ``shift_and_log_scale_fn`` (x0, units) -> (shift, log_scale): the network
    of ``real_nvp_default_template`` (shift only for NICE), owned by a tf.Module so that
    the bijector tracks its variables."""

    def __init__(self, counter, hidden, units, activation, shift_only=False):
        super().__init__()
        self._counter, self.shift_only = counter, shift_only
        self.layers = [Dense(h, activation=activation) for h in hidden]
        self.layers.append(Dense((1 if shift_only else 2) * units))

    def __call__(self, x, units):
        self._counter.hit()
        for layer in self.layers:
            x = layer(x)
        if self.shift_only:
            return x, None
        shift, log_scale = tf.split(x, 2, axis=-1)
        return shift, log_scale


def _spline(widths, heights, slopes, bound: float) -> tfb.Bijector:
    """The TFP docs' SplineParams constraints, on [-bound, bound] instead of [-1, 1]."""
    K = widths.shape[-1]

    def sizes(a):
        return tf.math.softmax(a, axis=-1) * (2 * bound - K * SPLINE_MIN) + SPLINE_MIN

    return tfb.RationalQuadraticSpline(bin_widths=sizes(widths), bin_heights=sizes(heights),
                                       knot_slopes=tf.math.softplus(slopes) + SPLINE_MIN,
                                       range_min=-bound)


class _SplineNet(tf.Module):
    """RealNVP's ``bijector_fn`` (x0, units) -> RationalQuadraticSpline: the TFP docs'
    SplineParams (Dense heads for widths, heights and slopes) on top of hidden layers."""

    def __init__(self, counter, hidden, units, bins, bound, activation):
        super().__init__()
        self._counter, self.bins, self.bound = counter, bins, float(bound)
        self.body = [Dense(h, activation=activation) for h in hidden]
        self.widths = Dense(units * bins)
        self.heights = Dense(units * bins)
        self.slopes = Dense(units * (bins - 1))

    def __call__(self, x, units):
        self._counter.hit()
        for layer in self.body:
            x = layer(x)
        lead = tf.shape(x)[:-1]

        def per_unit(a, k):  # (..., units * k) -> (..., units, k)
            return tf.reshape(a, tf.concat([lead, [units, k]], 0))

        K = self.bins
        return _spline(per_unit(self.widths(x), K), per_unit(self.heights(x), K),
                       per_unit(self.slopes(x), K - 1), self.bound)


class _AutoregressiveSpline(tf.Module):
    """MaskedAutoregressiveFlow's ``bijector_fn`` y -> RationalQuadraticSpline, its 3K-1
    parameters per dimension from one AutoregressiveNetwork."""

    def __init__(self, made: _CountedMADE, bins: int, bound: float):
        super().__init__()
        self.made, self.bins, self.bound = made, bins, float(bound)

    def __call__(self, y):
        p, K = self.made(y), self.bins
        return _spline(p[..., :K], p[..., K:2 * K], p[..., 2 * K:], self.bound)


@contextlib.contextmanager
def _keras_seed(seed: int):
    """tf_keras.utils.set_random_seed's effect on Keras initialisers (every unseeded one
    draws its seed from this generator), for one build only: the Python, NumPy and TF
    global seeds that function also sets stay as they were."""
    holder = _keras_backend._SEED_GENERATOR
    saved = getattr(holder, "generator", None)
    holder.generator = random.Random(seed)
    try:
        yield
    finally:
        holder.generator = saved


class TfpKerasFlow(PeerFlow):
    def __init__(self, backend: "TfpKerasBackend", spec: FlowSpec, seed: int, device: str,
                 train: TrainConfig, variant: str):
        super().__init__(backend, spec, device, train, variant)
        self.offer = backend.offer(spec)
        self._tf_device = backend._resolve(device)
        # conditioner evaluations; only eager calls count (a traced call is one per trace)
        self.counter = PassCounter(counts=tf.executing_eagerly)
        with tf.device(self._tf_device):
            with _keras_seed(seed):
                self.dist = backend.make(spec, self.counter)
                # Keras layers make their variables on first call; log_prob calls every
                # network of the flow
                self.dist.log_prob(tf.zeros([1, spec.dim]))
            self.trainable = list(self.dist.trainable_variables)
            kw = {} if train.clip_norm is None else {"global_clipnorm": train.clip_norm}
            self.optimizer = tf_keras.optimizers.Adam(
                learning_rate=train.lr, beta_1=train.betas[0], beta_2=train.betas[1],
                epsilon=train.eps, **kw)
            self.optimizer.build(self.trainable)
        self._eager = {"log_prob": self.dist.log_prob, "inverse": self._to_latent,
                       "forward": self._to_data, "sample": self._draw,
                       "sample_and_log_prob": self._draw_and_log_prob,
                       "train_step": self._step}
        self._ops = self._eager if variant == "eager" else self._traced()
        self._last = None
        self._eager_passes = 0
        self._counts: dict = {}

    # --- the flow as TFP code -------------------------------------------------------------
    def _to_latent(self, x):
        b = self.dist.bijector  # z -> x
        z = b.inverse(x)
        ld = b.inverse_log_det_jacobian(x, event_ndims=1)
        return z, tf.broadcast_to(ld, tf.shape(x)[:1])  # a constant log-det is a scalar

    def _to_data(self, z):
        b = self.dist.bijector
        x = b.forward(z)
        ld = b.forward_log_det_jacobian(z, event_ndims=1)
        return x, tf.broadcast_to(ld, tf.shape(z)[:1])

    def _draw(self, n, seed):
        return self.dist.sample(n, seed=seed)

    def _draw_and_log_prob(self, n, seed):
        return self.dist.experimental_sample_and_log_prob(n, seed=seed)

    def _loss(self, x):
        return -tf.reduce_mean(self.dist.log_prob(x))

    def _step(self, x):
        with tf.GradientTape() as tape:
            loss = self._loss(x)
        grads = tape.gradient(loss, self.trainable)
        self.optimizer.apply_gradients(zip(grads, self.trainable))
        return loss

    def _traced(self):
        """The ops as tf.functions, traced once per signature (any batch size)."""
        data = [tf.TensorSpec([None, self.spec.dim], tf.float32)]
        sample = [tf.TensorSpec([], tf.int32), tf.TensorSpec([2], tf.int32)]
        ops = {}
        for op, fn in self._eager.items():
            ops[op] = tf.function(fn, input_signature=sample if op.startswith("sample")
                                  else data,
                                  autograph=False)
            # every flow traces its own functions (it owns its networks): that is by
            # design, not the runaway retracing TF warns about after five flows
            ops[op]._omit_frequent_tracing_warning = True
        return ops

    # --- protocol ops ---------------------------------------------------------------------
    def _call(self, op, *args):
        self._last = (op, args)
        self.counter.reset()
        with tf.device(self._tf_device):
            out = self._ops[op](*args)
        self._eager_passes = self.counter.n
        return out

    def _sample(self, n, seed):
        # a stateless seed: an int seed would draw from TF's stateful global generator
        return self._call("sample", tf.constant(n, tf.int32), tf.constant([seed, 0], tf.int32))

    def _sample_and_log_prob(self, n, seed):
        return self._call("sample_and_log_prob", tf.constant(n, tf.int32),
                          tf.constant([seed, 0], tf.int32))

    def _train_step(self, x):
        return self._call("train_step", x)

    def num_params(self) -> int:
        return int(sum(v.shape.num_elements() for v in self.trainable))

    def executed(self, run, analytic):
        run()
        op, args = self._last
        with tf.device(self._tf_device):
            return function_work(self._ops[op], args, self.variant, analytic)

    # --- measured passes ------------------------------------------------------------------
    @property
    def passes(self) -> int:
        if self._last is None:
            return 0
        if self.variant == "eager":
            return self._eager_passes
        op, args = self._last
        key = (op, tuple(tuple(a.shape) for a in args))
        if key not in self._counts:
            self._counts[key] = self._measure(op, args)
        return self._counts[key]

    def _measure(self, op, args) -> int:
        """The op once more, eagerly, on fresh copies of its tensors (a reused tensor
        could hit TFP's cache). A train step counts its loss: backprop runs no Python."""
        if not op.startswith("sample"):  # sample ops take (n, seed): nothing cached
            args = tuple(self.backend.to_native(a, self.device) for a in args)
        self.counter.reset()
        with tf.device(self._tf_device):
            (self._loss if op == "train_step" else self._eager[op])(*args)
        return self.counter.n


class TfpKerasBackend(TFArrays, PeerBackend):
    name = "tfp-keras"
    library = "tfp-nightly"
    variants = VARIANTS
    default_variant = "function"
    caches_inputs = True
    flow_class = TfpKerasFlow
    common = {
        "direction": "bijector forward is base -> data (sampling), as the protocol; "
                     "MaskedAutoregressiveFlow.forward is its sequential direction",
        "base": "tfd.MultivariateNormalDiag(zeros, ones), not trained",
        "initialisation": "Keras defaults in every layer: glorot-uniform kernels, zero "
                          "biases (canonical: a small random output layer, so flows start "
                          "near the identity)",
        "optimizer": "tf_keras.optimizers.Adam: epsilon added to sqrt(v) before bias "
                     "correction (torch/optax add it after)",
        "log-det passes": "eager TFP evaluates a layer's network again for the log-det "
                          "(inverse and inverse_log_det_jacobian each call it; "
                          "tensorflow/probability#54); tf.function may merge the two",
    }
    offers = {
        "maf": Offer("TransformedDistribution(MVNDiag, Chain of MaskedAutoregressiveFlow("
                     "shift_and_log_scale_fn=AutoregressiveNetwork(params=2)) with "
                     "Permute(reverse) between layers)", {
            "scale": _AFFINE, "conditioner": _MADE, "permutation": _REVERSE}),
        "iaf": Offer("Chain of Invert(MaskedAutoregressiveFlow(shift_and_log_scale_fn="
                     "AutoregressiveNetwork(params=2))) with Permute(reverse) between layers", {
            "scale": "sampling x = (z - m) * exp(-s), (m, s) from z_<i (the MAF layer's "
                     "one-pass inverse; canonical x = z * exp(s) + m)",
            "conditioner": _MADE, "permutation": _REVERSE}),
        "realnvp": Offer("RealNVP(num_masked=dim//2, shift_and_log_scale_fn=<MLP>) with "
                         "Permute(reverse) between layers", {
            "scale": _AFFINE + "; (m, s) from the conditioning half",
            "conditioner": _COUPLING_NET + "; output [shift | log_scale] halves",
            "masks": _COUPLING_MASKS}),
        "nice": Offer("RealNVP(num_masked=dim//2, shift_and_log_scale_fn=<shift-only MLP>, "
                      "is_constant_jacobian=True) with Permute(reverse) between layers", {
            "conditioner": _COUPLING_NET + " with shift_only=True",
            "masks": _COUPLING_MASKS,
            "extra layers": "no final diagonal scaling (TFP's NICE recipe has none)"}),
        "nsf": Offer("RealNVP(num_masked=dim//2, bijector_fn=<SplineParams module> -> "
                     "RationalQuadraticSpline) with Permute(reverse) between layers", {
            "conditioner": "Dense(h, activation) per spec.hidden, then three linear Dense "
                           "heads (widths, heights, slopes; canonical: one output layer, "
                           "dimension-major)",
            "spline": _SPLINE + "; maps z -> x (canonical x -> z)",
            "masks": _COUPLING_MASKS}),
        "nsf-ar": Offer("MaskedAutoregressiveFlow(bijector_fn=y -> RationalQuadraticSpline("
                        "AutoregressiveNetwork(params=3K-1)(y))) with Permute(reverse) "
                        "between layers", {
            "conditioner": _MADE + "; parameters split [widths | heights | slopes] per "
                                   "dimension",
            "spline": _SPLINE + "; maps z -> x with parameters from x_<i (canonical x -> z)",
            "permutation": _REVERSE}),
    }
    missing = {
        "glow": "tfb.Glow is for NHWC images: it takes num_glow_blocks >= 1, each with a "
                "2x2 squeeze, so height and width must be divisible by 2^num_glow_blocks, "
                "which an (n, dim) vector (a 1x1 image) is not; TFP assembles no vector Glow",
        "naf": "TFP has no neural autoregressive (deep sigmoidal) transformer",
    }

    def version(self):
        return (f"{PeerBackend.version(self)} (tensorflow {tf.__version__}, "
                f"tf_keras {tf_keras.__version__})")

    # --- building -------------------------------------------------------------------------
    def make(self, spec: FlowSpec, counter: PassCounter) -> tfd.TransformedDistribution:
        D, act = spec.dim, spec.activation  # "relu" / "tanh" are Keras activation names
        reverse = np.arange(D)[::-1].astype(np.int32)
        units = D - D // 2
        layers = []  # z -> x order
        for l in range(spec.layers):
            if l:
                layers.append(tfb.Permute(permutation=reverse))
            made = dict(counter=counter, hidden_units=list(spec.hidden), activation=act)
            if spec.arch == "maf":
                layers.append(tfb.MaskedAutoregressiveFlow(
                    shift_and_log_scale_fn=_CountedMADE(params=2, **made)))
            elif spec.arch == "iaf":
                layers.append(tfb.Invert(tfb.MaskedAutoregressiveFlow(
                    shift_and_log_scale_fn=_CountedMADE(params=2, **made))))
            elif spec.arch == "nsf-ar":
                spline = _AutoregressiveSpline(_CountedMADE(params=3 * spec.bins - 1, **made),
                                               spec.bins, spec.tail_bound)
                layers.append(tfb.MaskedAutoregressiveFlow(bijector_fn=spline))
            elif spec.arch == "nsf":
                layers.append(tfb.RealNVP(num_masked=D // 2, bijector_fn=_SplineNet(
                    counter, spec.hidden, units, spec.bins, spec.tail_bound, act)))
            else:  # realnvp, nice
                nice = spec.arch == "nice"
                net = _CouplingNet(counter, spec.hidden, units, act, shift_only=nice)
                layers.append(tfb.RealNVP(num_masked=D // 2, shift_and_log_scale_fn=net,
                                          is_constant_jacobian=nice))
        base = tfd.MultivariateNormalDiag(loc=tf.zeros(D), scale_diag=tf.ones(D))
        return tfd.TransformedDistribution(base, tfb.Chain(layers[::-1]))

