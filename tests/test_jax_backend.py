"""What only the JAX backend promises: compiled once, loops not unrolled, keys from seeds."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from flowbench import adapters
from flowbench.adapters import canonical as C

from .conftest import load_or_skip, make_spec

load_or_skip("jax", module_level=True)

import jax  # noqa: E402
import jax.extend  # noqa: E402

from flowbench.adapters.jax import _compiled  # noqa: E402

OPS = ("log_prob", "inverse", "forward", "sample", "train_step")


def _every_op(flow, x):
    flow.log_prob(x)
    flow.inverse(x)
    flow.forward(x)
    flow.sample(len(x), seed=1)
    flow.train_step(x)


@pytest.mark.parametrize("arch", ["maf", "naf", "glow"])
def test_each_op_traces_once_per_shape(arch, rng):
    spec = make_spec(arch, 3, layers=2, hidden=(7, 5))  # a spec no other test compiles
    x = rng.standard_normal((11, 3)).astype(np.float32)
    flow = adapters.load("jax").build(spec, seed=0)
    for _ in range(3):
        _every_op(flow, x)
    assert all(flow.traces[op] == 1 for op in OPS), dict(flow.traces)
    # new weights, a new flow of the same spec, another learning rate: still no retrace
    flow.set_weights(C.random_weights(spec, 1))
    other = adapters.load("jax").build(spec, seed=5, train=adapters.TrainConfig(lr=0.1,
                                                                               eps=1e-3))
    _every_op(flow, x)
    _every_op(other, x)
    assert all(flow.traces[op] == 1 for op in OPS), dict(flow.traces)
    # a new batch size is a new shape: one more trace, as jit documents
    flow.log_prob(x[:5])
    assert flow.traces["log_prob"] == 2


def test_learning_rate_lives_in_the_state(rng):
    """Sharing the compiled step must not share the hyperparameters."""
    spec = make_spec("maf", 2, layers=2, hidden=(7, 5))
    x = rng.standard_normal((16, 2)).astype(np.float32)
    still = adapters.load("jax").build(spec, seed=0, train=adapters.TrainConfig(lr=0.0))
    moving = adapters.load("jax").build(spec, seed=0, train=adapters.TrainConfig(lr=0.1))
    w0 = still.get_weights()
    still.train_step(x)
    moving.train_step(x)
    for k, v in still.get_weights().items():
        np.testing.assert_array_equal(v, w0[k])
    assert any(not np.array_equal(v, w0[k]) for k, v in moving.get_weights().items())


def _program_size(spec, op):
    """Equations in the traced program of one op, nested loop bodies included."""
    m = _compiled(spec).model
    w = C.init_weights(spec, 0)
    train = {k: v for k, v in w.items() if k.rsplit(".", 1)[-1] not in C.FIXED}
    fixed = {k: v for k, v in w.items() if k.rsplit(".", 1)[-1] in C.FIXED}
    x = np.zeros((4, spec.dim), np.float32)
    fn = {"sample": lambda: jax.make_jaxpr(m.sample, static_argnums=3)(
              train, fixed, jax.random.key(0), 4),
          "log_prob": lambda: jax.make_jaxpr(m.log_prob)(train, fixed, x)}[op]
    jaxpr = fn().jaxpr

    def count(j):
        n = 0
        for eqn in j.eqns:
            n += 1
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                n += count(sub)
        return n

    return count(jaxpr)


@pytest.mark.parametrize("arch, op", [("maf", "sample"), ("iaf", "log_prob"),
                                      ("naf", "sample"), ("nsf-ar", "sample")])
def test_sequential_passes_are_loops_not_unrolled(arch, op):
    """The dim sequential conditioner passes are one lax loop: the program that XLA
    compiles is the same size at dim 2 and dim 64, so compile time cannot grow with dim."""
    small = _program_size(make_spec(arch, 2, layers=2), op)
    large = _program_size(make_spec(arch, 64, layers=2), op)
    assert small == large, (small, large)


def test_seed_maps_to_key_deterministically():
    flow = adapters.load("jax").build(make_spec("realnvp", 2), seed=0)
    a, b = flow.sample(50, seed=7), flow.sample(50, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, flow.sample(50, seed=8))


def test_native_arrays_stay_native_and_on_device(rng):
    backend = adapters.load("jax")
    flow = backend.build(make_spec("maf", 2), seed=0)
    x = backend.to_native(rng.standard_normal((5, 2)))
    out = flow.log_prob(x)
    assert isinstance(out, jax.Array) and out.dtype == np.float32
    assert out.devices() == {jax.devices("cpu")[0]}
    assert backend.block(out) is out
    assert isinstance(flow.sample(3, native=True), jax.Array)


def test_jax_backend_does_not_load_tensorflow():
    """distrax's TFP substrate would pull in all of TensorFlow's native libraries; and the
    tfp backend still works when loaded after it, in the same process."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys, numpy as np; from flowbench import adapters; adapters.load('jax'); "
            "print('tensorflow' in sys.modules); "
            "print('tfp' if adapters.available()['tfp'] else "
            "adapters.load('tfp').build(adapters.FlowSpec(arch='nsf')).log_prob(np.zeros((2, 2))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "False"
