"""Planar and radial flows (Rezende & Mohamed 2015, ``adapters/residual.py``): parity of
every matched backend and variant with the float64 reference (written separately, in the
paper's form), log-det against autodiff, the invertibility constraint for any raw
parameters, a density that integrates to 1 (x -> z solved numerically here, since the
flows have no closed-form inverse), and the refusal of every op that needs x -> z."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from flowbench import adapters
from flowbench.adapters import residual
from flowbench.adapters.ops import NUMPY_OPS
from flowbench.adapters.reference import Reference
from flowbench.datasets import targets as T

from .conftest import load_or_skip, matched_targets

ARCHS = list(adapters.ONE_WAY_PRESETS)


def _spec(arch, dim, layers=4):
    return adapters.FlowSpec(arch=arch, dim=dim, layers=layers)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dim", [1, 2, 5])
def test_every_backend_and_variant_matches_the_reference(arch, dim):
    """forward and sample_and_log_prob under shared weights far from the identity: the
    same x and log-det as the reference, and log q of the backend's own base draws."""
    spec = _spec(arch, dim)
    weights = spec.random_weights(3, scale=0.5)
    ref = Reference(spec, weights)
    z = np.random.default_rng(0).standard_normal((64, dim)).astype(np.float32) * 2
    x_ref, ld_ref = ref.forward(z)
    for label, backend, variant in matched_targets():
        flow = backend.build(spec, seed=0, variant=variant)
        flow.set_weights(weights)
        x, ld = flow.forward(z)
        np.testing.assert_allclose(x, x_ref, rtol=1e-5, atol=1e-5, err_msg=label)
        np.testing.assert_allclose(ld, ld_ref, rtol=1e-4, atol=1e-4, err_msg=label)
        xs, lq = flow.sample_and_log_prob(32, seed=5)
        zs = flow.base_sample(32, seed=5)
        xr, ldr = ref.forward(zs)
        np.testing.assert_allclose(xs, xr, rtol=1e-5, atol=1e-5, err_msg=label)
        np.testing.assert_allclose(lq, norm.logpdf(zs).sum(1) - ldr, rtol=1e-4, atol=1e-4,
                                   err_msg=label)
        np.testing.assert_allclose(xs, flow.sample(32, seed=5), rtol=1e-6, atol=1e-6,
                                   err_msg=label)  # another program: an ulp may differ
        assert flow.passes == 0, label  # no conditioner network


@pytest.mark.parametrize("arch", ARCHS)
def test_log_det_is_the_autodiff_jacobians(backend, arch):
    spec = _spec(arch, 3)
    flow = backend.build(spec, seed=0)
    flow.set_weights(spec.random_weights(1, scale=0.3))
    z = np.random.default_rng(2).standard_normal((16, 3)).astype(np.float32)
    sign, logabs = np.linalg.slogdet(flow.jacobian(z, "forward").astype(np.float64))
    np.testing.assert_array_equal(sign, 1.0)
    np.testing.assert_allclose(flow.forward(z)[1], logabs, rtol=1e-4, atol=1e-4)


def _raw(rng, kind, dim, scale):
    """Raw layer parameters of any size: the constraint must hold for all of them."""
    if kind == "planar":
        return [rng.normal(0, scale, dim), rng.normal(0, scale, dim), rng.normal(0, scale, 1)]
    return [rng.normal(0, scale, dim), rng.normal(0, scale, 1), rng.normal(0, scale, 1)]


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0, 100.0])
def test_the_invertibility_constraint_holds_for_any_raw_parameters(scale):
    """Appendix A: w.u_hat >= -1 (planar), beta >= -alpha (radial); then each layer is
    monotone along its one free coordinate (w.z for planar, r for radial), hence
    invertible, and its Jacobian determinant is positive. The raw draws include w.u far
    below -1 and beta_raw far below alpha_raw: without the constraint the layers fold."""
    rng = np.random.default_rng(int(scale * 10))
    folds = 0
    for _ in range(200):
        u, w, _ = _raw(rng, "planar", 3, scale)
        u_hat, sp = residual.planar_u_hat(NUMPY_OPS, u, w)
        assert w @ u_hat >= -1 - 1e-9 * (1 + abs(w @ u))
        a = np.linspace(-30, 30, 2001)  # the planar map along w: a + w.u_hat tanh(a)
        assert np.all(np.diff(a + (w @ u_hat) * np.tanh(a)) > 0)
        folds += bool(np.any(np.diff(a + (w @ u) * np.tanh(a)) <= 0))
        _, alpha_raw, beta_raw = _raw(rng, "radial", 3, scale)
        alpha, beta, _ = residual.radial_coefficients(NUMPY_OPS, alpha_raw, beta_raw)
        assert alpha > 0 and beta >= -alpha
        r = np.linspace(0, 50, 2001)  # the radial map along r: r (1 + beta / (alpha + r))
        assert np.all(np.diff(r * (1 + beta / (alpha + r))) >= 0)
        for kind in residual.KINDS:
            z = rng.normal(0, 3, (50, 3))
            ld = residual.layer(NUMPY_OPS, kind, z, _raw(rng, kind, 3, scale))[1]
            assert np.all(np.isfinite(ld) | (ld == -np.inf)), kind
    if scale >= 1:
        assert folds > 0  # the raw draws did reach the unconstrained region


def _solve(fn, target, lo, hi, iters=200):
    """The root of the increasing fn(t) = target, elementwise, by bisection."""
    lo, hi = np.full_like(target, lo), np.full_like(target, hi)
    for _ in range(iters):
        mid = (lo + hi) / 2
        below = fn(mid) < target
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return (lo + hi) / 2


def _planar_along_w(wu, bias):
    return lambda t: t + wu * np.tanh(t + bias)


def _radial_along_r(alpha, beta):
    return lambda t: t * (1 + beta / (alpha + t))


def _invert(spec, weights, x):
    """z with forward(z) = x, layer by layer (each has one free scalar coordinate)."""
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    for b in spec.blocks():  # x -> z order
        n = b.name
        if b.kind == "planar":
            u_hat, sp = residual.planar_u_hat(NUMPY_OPS, w[f"{n}.u"], w[f"{n}.w"])
            bias = w[f"{n}.b"][0]
            a = _solve(_planar_along_w(sp - 1, bias), x @ w[f"{n}.w"], -1e3, 1e3)
            x = x - np.tanh(a + bias)[:, None] * u_hat
        else:
            alpha, beta, _ = residual.radial_coefficients(NUMPY_OPS, w[f"{n}.alpha"],
                                                          w[f"{n}.beta"])
            diff = x - w[f"{n}.z0"]
            r = _solve(_radial_along_r(alpha, beta), np.linalg.norm(diff, axis=1), 0.0, 1e3)
            x = w[f"{n}.z0"] + diff / (1 + beta / (alpha + r))[:, None]
    return x


@pytest.mark.parametrize("arch", ARCHS)
def test_the_density_integrates_to_one_on_a_grid(arch):
    """log q(x) = log p(z) - log|det dx/dz| with z solved from x numerically: the grid sum
    of q over a box that holds the mass is 1, and the torch flow maps the solved z back
    onto the grid."""
    spec = _spec(arch, 2, layers=3)
    weights = spec.random_weights(4, scale=0.5)
    g = np.linspace(-9, 9, 361)
    x = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    z = _invert(spec, weights, x)
    x_back, ld = Reference(spec, weights).forward(z)
    np.testing.assert_allclose(x_back, x, atol=1e-8)
    log_q = norm.logpdf(z).sum(1) - ld
    assert np.exp(log_q).sum() * (g[1] - g[0]) ** 2 == pytest.approx(1.0, abs=2e-3)
    flow = load_or_skip("torch").build(spec, seed=0)
    flow.set_weights(weights)
    np.testing.assert_allclose(flow.forward(z[::97].astype(np.float32))[0], x[::97],
                               atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_ops_that_need_the_inverse_are_refused_with_the_reason(arch):
    spec = _spec(arch, 2)
    x = np.zeros((3, 2), np.float32)
    for _, backend, variant in matched_targets():
        flow = backend.build(spec, seed=0, variant=variant)
        native = backend.to_native(x)
        for method, arg in (("log_prob", x), ("inverse", x), ("train_step", x),
                            ("gradients", x), ("_log_prob", native), ("_inverse", native)):
            with pytest.raises(adapters.UnsupportedOp, match="no closed-form inverse"):
                getattr(flow, method)(arg)
        with pytest.raises(adapters.UnsupportedOp, match="no closed-form inverse"):
            flow.jacobian(x, "inverse")
    with pytest.raises(adapters.UnsupportedOp, match="no closed-form inverse"):
        Reference(spec, spec.init_weights()).inverse(x)


def test_presets_and_specs():
    planar = adapters.FlowSpec(arch="planar", dim=2, layers=20)
    assert planar.label == "planar" and not planar.invertible
    assert len(planar.blocks()) == 20 and planar.conditioner_flops() == 0
    assert adapters.FlowSpec(arch="maf").invertible
    for bad in (dict(arch="planar", direction="density"), dict(arch="radial", actnorm=True),
                dict(arch="custom", transform="planar", conditioner="coupling"),
                dict(arch="custom", transform="affine", conditioner="none")):
        with pytest.raises(adapters.SpecError):
            adapters.FlowSpec(**bad)
    assert not set(adapters.ONE_WAY_PRESETS) & set(adapters.PRESETS)


def test_peers_name_why_they_have_no_planar_flow():
    for name in adapters.PEERS:
        if adapters.available()[name] is not None:
            continue
        with pytest.raises(adapters.UnsupportedSpec, match="planar or radial"):
            adapters.load(name).build(_spec("planar", 2))


def test_reverse_kl_training_moves_both_towards_the_ring():
    """Seed 004's setting, shortened: both flows lower the reverse KL to the ring."""
    ring = T.load("ring")
    torch = load_or_skip("torch")
    for arch in ARCHS:
        flow = torch.build(_spec(arch, 2, layers=8), seed=0)
        before = _reverse_kl(flow, ring)
        for step in range(150):
            flow.train_step_reverse_kl(ring, flow.base_sample(256, seed=step, native=True))
        assert _reverse_kl(flow, ring) < before - 0.3, arch


def _reverse_kl(flow, target):
    x, lq = flow.sample_and_log_prob(4000, seed=99)
    return np.mean(lq - target(x)) + target.log_z

