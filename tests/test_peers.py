"""Peer backends: every arch a library offers builds, evaluates, inverts (where it declares
an exact inverse), normalises and trains; every arch it does not offer is refused with the
declared reason; conditioner passes are measured and show the sequential direction."""

from __future__ import annotations

import numpy as np
import pytest

from flowbench import adapters
from flowbench import datasets

from .conftest import PEERS, load_or_skip, make_spec

ARCHS = list(adapters.PRESETS)


@pytest.fixture(params=PEERS)
def peer(request):
    return load_or_skip(request.param)


def offered(peer, arch, dim=2, train=None, **kw):
    spec = make_spec(arch, dim, **kw)
    if arch not in peer.offers:
        with pytest.raises(adapters.UnsupportedSpec, match="does not offer"):
            peer.build(spec)
        assert peer.capabilities()[arch] == peer.missing[arch]
        pytest.skip(f"{peer.name} does not offer {arch}: {peer.missing[arch]}")
    return peer.build(spec, seed=0, train=train)


@pytest.mark.parametrize("arch", ARCHS)
def test_builds_evaluates_and_inverts(peer, arch, rng):
    flow = offered(peer, arch)
    x = rng.standard_normal((32, 2)).astype(np.float32)
    lp = flow.log_prob(x)
    assert lp.shape == (32,) and np.isfinite(lp).all()
    z, ld = flow.inverse(x)
    base = -0.5 * (z.astype(np.float64) ** 2).sum(1) - np.log(2 * np.pi)
    np.testing.assert_allclose(lp, base + ld, atol=1e-4, rtol=1e-4)  # log_prob is x -> z
    s = flow.sample(64, seed=1)
    assert s.shape == (64, 2) and np.isfinite(s).all()
    np.testing.assert_array_equal(s, flow.sample(64, seed=1))
    assert flow.num_params() > 0
    if peer.offers[arch].exact_inverse:
        x2, ld2 = flow.forward(z)
        np.testing.assert_allclose(x2, x, atol=2e-4)
        np.testing.assert_allclose(ld2, -ld, atol=2e-4, rtol=1e-4)
    with pytest.raises(adapters.UnsupportedOp):
        flow.get_weights()


@pytest.mark.parametrize("arch", ARCHS)
def test_density_integrates_to_one(peer, arch):
    flow = offered(peer, arch)
    g = np.linspace(-9, 9, 361)
    xx, yy = np.meshgrid(g, g, indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float32)
    p = np.exp(np.asarray(flow.log_prob(pts), np.float64)).reshape(xx.shape)
    mass = np.trapezoid(np.trapezoid(p, g, axis=1), g)
    assert abs(mass - 1) < 0.01, mass


@pytest.mark.parametrize("arch", ARCHS)
def test_short_training_lowers_nll(peer, arch):
    ds = datasets.load("eq39", n_train=4096, n_val=0, n_test=1024, seed=0)
    mean, std = ds.train.mean(0), ds.train.std(0)
    train, test = (ds.train - mean) / std, (ds.test - mean) / std
    flow = offered(peer, arch, hidden=(32, 32), train=adapters.TrainConfig(lr=5e-3))
    before = -np.mean(flow.log_prob(test))
    rng = np.random.default_rng(0)
    for _ in range(60):  # a spline peer takes up to 0.5 s a step on 2 busy cores
        assert np.isfinite(flow.train_step(train[rng.integers(0, len(train), 128)]))
    after = -np.mean(flow.log_prob(test))
    assert after < before - 0.1, (before, after)


@pytest.mark.parametrize("arch", ["maf", "iaf", "nsf-ar", "naf", "realnvp", "nsf"])
def test_passes_show_the_sequential_direction(peer, arch, rng):
    """Measured conditioner evaluations at dim 8: an autoregressive flow pays at least dim
    passes per layer in one direction and about one in the other; coupling flows pay a few
    per layer in both."""
    dim, layers = 8, 2
    flow = offered(peer, arch, dim=dim, layers=layers)
    x = rng.standard_normal((16, dim)).astype(np.float32)
    flow.log_prob(x)
    density = flow.passes
    flow.sample(16, seed=0)
    sampling = flow.passes
    assert density > 0 and sampling > 0
    if flow.spec.conditioner == "autoregressive":
        assert max(density, sampling) >= layers * dim, (density, sampling)
        assert min(density, sampling) <= 2 * layers + layers, (density, sampling)
    else:
        assert max(density, sampling) <= 2 * layers, (density, sampling)


def test_non_preset_specs_are_refused(peer):
    with pytest.raises(adapters.UnsupportedSpec, match="non-preset"):
        peer.build(adapters.FlowSpec(arch="maf", transform="spline"))


def test_conventions_are_declared(peer):
    rows = peer.conventions()
    assert {r["arch"] for r in rows} == set(peer.offers)
    assert all(r["value"] for r in rows)
    assert set(peer.offers) | set(peer.missing) == set(ARCHS)
