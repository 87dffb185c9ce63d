"""What only the tfp-keras peer has: execution variants, TFP's input-keyed bijector cache
(and how the timing harness steps around it), passes measured eagerly in the traced
variant, tracked Keras variables, seeded builds, and MADE masks that survive training."""

from __future__ import annotations

import numpy as np
import pytest

from flowbench import adapters
from flowbench.benchmarks.timing import op_calls

from .conftest import load_or_skip

DIM, LAYERS = 8, 2


@pytest.fixture(scope="module")
def peer():
    return load_or_skip("tfp-keras", module_level=True)


def maf(peer, variant=None, **kw):
    spec = adapters.FlowSpec(**{"arch": "maf", "dim": DIM, "layers": LAYERS,
                                "hidden": (16, 16), **kw})
    return peer.build(spec, seed=0, variant=variant)


@pytest.fixture
def x(peer, rng):
    return peer.to_native(rng.standard_normal((16, DIM)).astype(np.float32))


def test_variants(peer):
    assert peer.variants == ("eager", "function") and peer.caches_inputs
    assert maf(peer).variant == "function"
    assert maf(peer, "eager").variant == "eager"
    with pytest.raises(adapters.UnsupportedSpec, match="no execution variant"):
        maf(peer, "xla")


def test_cache_hit_on_the_same_tensor(peer, x):
    """Eager: TFP remembers results keyed on the input tensor, so a second log_prob on the
    same tensor runs the networks fewer times; a fresh copy, or the timing harness's op
    call (which hands each call a fresh copy), runs them all every time."""
    flow = maf(peer, "eager")
    flow._log_prob(x)
    first = flow.passes
    flow._log_prob(x)
    assert flow.passes < first, (first, flow.passes)
    for _ in range(3):
        flow._log_prob(peer.fresh(x))
        assert flow.passes == first
    call = op_calls(flow, x)["log_prob"]
    for _ in range(3):
        call()
        assert flow.passes == first


def test_cache_hit_after_training_is_stale(peer, x, rng):
    """The hit survives a parameter update: the same tensor then gets a log_prob that is
    partly computed with the old weights. The public methods copy their input and are
    immune."""
    flow = maf(peer, "eager")
    flow._log_prob(x)
    for _ in range(5):
        flow.train_step(rng.standard_normal((64, DIM)).astype(np.float32))
    stale = flow._log_prob(x).numpy()
    current = flow._log_prob(peer.fresh(x)).numpy()
    assert np.abs(stale - current).max() > 1e-3
    np.testing.assert_array_equal(flow.log_prob(x).numpy(), current)


def test_traced_passes_are_measured_eagerly_on_fresh_input(peer, x):
    """In the function variant a traced call runs the Python network once per trace, so
    passes come from one eager run on a fresh copy: the same as the eager variant's count,
    never a cache hit, whatever tensor the op was given."""
    eager = maf(peer, "eager")
    eager._log_prob(peer.fresh(x))
    flow = maf(peer)
    for _ in range(2):
        flow._log_prob(x)
        assert flow.passes == eager.passes == 2 * LAYERS  # TFP's duplicate ildj pass (#54)
    eager.sample(16)
    flow.sample(16)
    assert flow.passes == eager.passes == DIM * LAYERS


def test_networks_are_tracked(peer):
    """Every Keras variable is found through the distribution (a conditioner written as a
    plain closure would not be): RealNVP, dim 2, hidden (16, 16), one unit per layer."""
    flow = peer.build(adapters.FlowSpec(arch="realnvp", dim=2, layers=2, hidden=(16, 16)))
    per_net = (1 * 16 + 16) + (16 * 16 + 16) + (16 * 2 + 2)
    assert flow.num_params() == 2 * per_net
    assert len(flow.trainable) == len(flow.dist.trainable_variables) == 2 * 6


def test_build_is_deterministic_per_seed(peer, rng):
    spec = adapters.FlowSpec(arch="nsf", dim=4, layers=2, hidden=(16, 16))
    xs = rng.standard_normal((32, 4)).astype(np.float32)
    a, b, c = (peer.build(spec, seed=s).log_prob(xs) for s in (3, 3, 4))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_training_keeps_made_autoregressive(peer, rng):
    """TFP's MADE holds full kernels and keeps masked weights at zero with a Keras
    constraint; the gradient there is not zero, so only an optimizer that applies
    constraints (tf_keras Adam does) keeps dz_i/dx_j = 0 for j > i."""
    flow = peer.build(adapters.FlowSpec(arch="maf", dim=4, layers=1, hidden=(16, 16)),
                      train=adapters.TrainConfig(lr=1e-2, clip_norm=10.0))
    assert float(flow.optimizer.global_clipnorm) == 10.0
    data = rng.standard_normal((256, 4)).astype(np.float32) * [1, 2, 0.5, 1]
    before = flow.log_prob(data)
    for _ in range(20):
        flow.train_step(data[rng.integers(0, 256, 64)])
    assert not np.allclose(before, flow.log_prob(data))
    jac = flow.jacobian(rng.standard_normal((8, 4)).astype(np.float32), "inverse")
    assert np.all(np.triu(jac, 1) == 0), jac[0]
    assert np.all(np.abs(np.diagonal(jac, axis1=1, axis2=2)) > 0)
