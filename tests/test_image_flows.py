"""Multi-scale image flows (Glow, RealNVP) in every matched backend and variant: the
contract (round trip, log-det against the autodiff Jacobian, a density that integrates to
1), parity under shared canonical weights (values, gradients, ActNorm's data-dependent
init, one Adam step), and the layout (squeeze order, splits)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from flowbench import adapters
from flowbench.adapters import canonical as C
from flowbench.adapters.image import ImageSpec, blocks

from .conftest import load_or_skip, matched_targets

ATOL = RTOL = 1e-4
# glow: squeeze 4x4x2 -> 2x2x8, 2 steps, split, squeeze -> 1x1x16, 2 steps;
# realnvp: 2 checkerboard, squeeze, 2 channel, split, 2 checkerboard at 2x2x4
SPECS = {arch: ImageSpec(arch=arch, shape=(4, 4, 2), levels=2, steps=2, hidden=8)
         for arch in ("glow", "realnvp")}
N = 16


@pytest.fixture(scope="module")
def targets():
    # torch's compile variant builds C++ per spec; its image path is the eager module's
    out = matched_targets(exclude={("torch", "compile")})
    if not out:
        pytest.skip("no matched backend is available")
    return out


def data(spec, seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal((N, spec.dim))).astype(
        np.float32)


def flows_with(targets, spec, weights):
    out = {}
    for label, backend, variant in targets:
        flow = backend.build(spec, seed=3, variant=variant)
        flow.set_weights(weights)
        out[label] = flow
    return out


@pytest.mark.parametrize("arch", SPECS)
def test_round_trip_and_logdet_against_autodiff(targets, arch):
    spec = SPECS[arch]
    x = data(spec)
    for label, flow in flows_with(targets, spec, C.random_weights(spec, 1)).items():
        z, ld = flow.inverse(x)
        back, ld_back = flow.forward(z)
        np.testing.assert_allclose(back, x, atol=1e-4, err_msg=label)
        np.testing.assert_allclose(ld, -ld_back, atol=1e-4, err_msg=label)
        jac = flow.jacobian(x[:3], "inverse")
        assert jac.shape == (3, spec.dim, spec.dim)
        np.testing.assert_allclose(np.linalg.slogdet(jac)[1], ld[:3], atol=1e-3,
                                   err_msg=label)
        assert abs(ld).max() > 0.1  # random weights: not a volume-preserving accident
        assert flow.passes == sum(b.kind == "coupling" for b in blocks(spec))


@pytest.mark.parametrize("arch", SPECS)
def test_parity_values_gradients_and_one_step(targets, arch):
    if len({b.name for _, b, _ in targets}) < 2:
        pytest.skip("parity needs at least two backends")
    spec = SPECS[arch]
    x, z = data(spec, 1), data(spec, 2)
    w = C.random_weights(spec, 2)
    flows = flows_with(targets, spec, w)
    out = {}
    for label, flow in flows.items():
        out[label] = dict(zip(
            ("lp", "z", "ld", "x", "ldf"),
            (flow.log_prob(x), *flow.inverse(x), *flow.forward(z))))
        out[label]["grads"] = flow.gradients(x)
    for a, b in itertools.combinations(out, 2):
        for key in ("lp", "z", "ld", "x", "ldf"):
            np.testing.assert_allclose(out[a][key], out[b][key], atol=ATOL, rtol=RTOL,
                                       err_msg=f"{key}: {a} vs {b}")
        assert set(out[a]["grads"]) == set(out[b]["grads"])
        for name, g in out[a]["grads"].items():
            np.testing.assert_allclose(g, out[b]["grads"][name], atol=1e-4, rtol=1e-3,
                                       err_msg=f"grad {name}: {a} vs {b}")
    # one Adam step from the same weights, the same batch: the same weights after
    after = {}
    for label, flow in flows.items():
        flow.train_step(x)
        after[label] = flow.get_weights()
    for a, b in itertools.combinations(after, 2):
        for name in w:
            np.testing.assert_allclose(after[a][name], after[b][name], atol=1e-5,
                                       err_msg=f"{name} after a step: {a} vs {b}")
    moved = max(np.abs(after[a][k] - w[k]).max() for k in w if w[k].dtype == np.float32)
    assert moved > 1e-4


def test_actnorm_data_dependent_init_matches(targets):
    spec = SPECS["glow"]
    x = data(spec, 4, scale=3.0) + 1.5
    inits = {}
    for label, backend, variant in targets:
        flow = backend.build(spec, seed=0, variant=variant)
        flow.initialize(x)
        inits[label] = flow.get_weights()
        z, _ = flow.inverse(x)
        assert np.isfinite(z).all()
    some = next(iter(inits.values()))
    # the first ActNorm sees the squeezed data: loc is its per-channel mean
    squeezed = x.reshape(N, 2, 2, 2, 2, 2).transpose(0, 1, 3, 5, 2, 4).reshape(-1, 8)
    np.testing.assert_allclose(some["levels.0.steps.0.actnorm.loc"], squeezed.mean(0),
                               atol=1e-5)
    np.testing.assert_allclose(some["levels.0.steps.0.actnorm.log_scale"],
                               np.log(squeezed.std(0) + 1e-6), atol=1e-5)
    for a, b in itertools.combinations(inits, 2):
        for name in inits[a]:
            np.testing.assert_allclose(inits[a][name], inits[b][name], atol=1e-5,
                                       err_msg=f"{name}: {a} vs {b}")


@pytest.mark.parametrize("arch", SPECS)
def test_density_integrates_to_one(targets, arch):
    """On the smallest image of each arch a grid covers the latent: realnvp on a 2x1
    image (dim 2), glow on 2x2x1 (dim 4, one squeeze)."""
    spec = (ImageSpec(arch="realnvp", shape=(2, 1, 1), levels=1, steps=3, hidden=8)
            if arch == "realnvp" else
            ImageSpec(arch="glow", shape=(2, 2, 1), levels=1, steps=2, hidden=8))
    axis = np.linspace(-7, 7, 57 if spec.dim == 2 else 29)
    grid = np.stack(np.meshgrid(*[axis] * spec.dim, indexing="ij"), -1).reshape(
        -1, spec.dim).astype(np.float32)
    cell = (axis[1] - axis[0]) ** spec.dim
    for label, flow in flows_with(targets, spec, C.random_weights(spec, 5, 0.3)).items():
        mass = np.exp(np.asarray(flow.log_prob(grid), np.float64)).sum() * cell
        assert abs(mass - 1) < 0.02, f"{label}: integrates to {mass}"


def test_squeeze_and_split_layout():
    """A pixel lands where the canonical layout says; the latent keeps every value."""
    spec = ImageSpec(arch="glow", shape=(4, 4, 1), levels=1, steps=1, hidden=4)
    backend = load_or_skip("torch")
    flow = backend.build(spec)
    w = C.init_weights(spec, 0)
    w["levels.0.steps.0.invconv.lower"][:] = 0
    w["levels.0.steps.0.invconv.upper"][:] = 0
    w["levels.0.steps.0.invconv.log_diag"][:] = 0
    w["levels.0.steps.0.invconv.sign"][:] = 1
    w["levels.0.steps.0.invconv.perm"][:] = np.arange(4)
    for k in range(3):
        w[f"levels.0.steps.0.coupling.net.{k}.weight"][:] = 0
        w[f"levels.0.steps.0.coupling.net.{k}.bias"][:] = 0
    flow.set_weights(w)  # squeeze + identity steps (sigmoid(2) scale on the second half)
    x = np.arange(16, dtype=np.float32)[None]
    z, _ = flow.inverse(x)
    img = x.reshape(4, 4)
    # latent position (h', w') * 4 + channel c*4 + 2i + j holds pixel (2h' + i, 2w' + j)
    expected = np.array([img[2 * hh + i, 2 * ww + j] for hh in range(2) for ww in range(2)
                         for i in range(2) for j in range(2)])
    scale = np.tile([1, 1, 1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(-2.0))], 4)
    np.testing.assert_allclose(z[0], expected * scale, rtol=1e-6)


def test_split_sizes_add_up():
    for arch in ("glow", "realnvp"):
        spec = ImageSpec(arch=arch, shape=(8, 8, 1), levels=3, steps=1, hidden=4)
        kinds = [b.kind for b in blocks(spec)]
        assert kinds.count("split") == 2
        assert C.weight_shapes(spec)  # every coupling has a net
    spec = ImageSpec(arch="glow", shape=(8, 8, 3), levels=3, steps=2, hidden=4)
    # 8x8x3 -> 4x4x12, split 4x4x6 -> 2x2x24, split 2x2x12 -> 1x1x48
    assert blocks(spec)[-1].shape == (1, 1, 48)
    assert sum(b.kind == "squeeze" for b in blocks(spec)) == 3


@pytest.mark.parametrize("bad, error", [
    (dict(arch="maf"), adapters.UnknownArch),
    (dict(shape=(6, 6, 1), levels=2), adapters.SpecError),  # glow squeezes twice: 6 % 4
    (dict(shape=(8, 8)), adapters.SpecError),
    (dict(levels=0), adapters.SpecError),
    (dict(hidden=True), adapters.SpecError),
])
def test_bad_specs_raise_typed_errors(bad, error):
    with pytest.raises(error):
        ImageSpec(**bad)


def test_bad_input_is_a_typed_error(targets):
    spec = SPECS["realnvp"]
    label, backend, variant = targets[0]
    flow = backend.build(spec, variant=variant)
    with pytest.raises(adapters.ShapeError, match="shape"):
        flow.log_prob(np.zeros((3, 4, 4, 2), np.float32))  # images must be flattened
    with pytest.raises(adapters.NonFiniteError):
        flow.log_prob(np.full((2, spec.dim), np.nan, np.float32))
    with pytest.raises(adapters.InvalidInput, match="missing"):
        flow.set_weights(C.init_weights(ImageSpec(arch="glow", shape=(4, 4, 2), levels=2,
                                                  steps=1, hidden=8)))
