"""The spec, the canonical layout and the float64 reference, checked without any framework.

The reference is the oracle the backends are held to, so it is checked here against
first principles: finite-difference Jacobians in float64, round trips, normalisation,
and the MADE masks' autoregressive structure.
"""

from __future__ import annotations

import numpy as np
import pytest

from flowbench import adapters
from flowbench.adapters import canonical as C
from flowbench.adapters.reference import Reference

from .conftest import ALL_ARCHS, COMBOS, make_spec


# --- FlowSpec -------------------------------------------------------------------------

def test_presets_fill_axes():
    s = adapters.FlowSpec(arch="glow", dim=4)
    assert (s.transform, s.conditioner, s.scale, s.actnorm, s.linear) == \
        ("affine", "coupling", "sigmoid", True, "lu")
    assert s.label == "glow"
    assert adapters.FlowSpec(arch="iaf").direction == "sampling"
    assert adapters.FlowSpec(arch="nice").final_scale
    custom = adapters.FlowSpec(arch="custom", transform="mlp", conditioner="coupling")
    assert custom.label == "mlp+coupling"
    assert adapters.FlowSpec(arch="maf", transform="spline").label == "spline+autoregressive"


@pytest.mark.parametrize("kw, match", [
    (dict(arch="sylvester"), "unknown arch"),
    (dict(arch=3), "unknown arch"),
    (dict(arch="realnvp", dim=1), "dim >= 2"),
    (dict(arch="nsf", bins=1), "bins"),
    (dict(arch="maf", dim=0), "dim"),
    (dict(arch="maf", layers=0), "layers"),
    (dict(arch="maf", hidden=()), "hidden"),
    (dict(arch="maf", hidden=(8, 0)), "hidden"),
    (dict(arch="maf", transform="quadratic"), "transform"),
    (dict(arch="maf", base="cauchy"), "base"),
    (dict(arch="maf", dtype="float64"), "dtype"),
    (dict(arch="nsf", tail_bound=-1.0), "tail_bound"),
    (dict(arch="naf", naf_hidden=0), "naf_hidden"),
    (dict(arch="custom"), "custom"),
    (dict(arch="maf", dim=2.5), "dim"),
])
def test_invalid_specs(kw, match):
    with pytest.raises(adapters.SpecError, match=match):
        adapters.FlowSpec(**kw)


def test_unknown_arch_is_typed():
    with pytest.raises(adapters.UnknownArch):
        adapters.FlowSpec(arch="sylvester")


def test_dim_one_autoregressive_is_valid():
    ref = Reference(make_spec("maf", 1), C.random_weights(make_spec("maf", 1), 0, 0.3))
    x = np.linspace(-3, 3, 7)[:, None]
    z, _ = ref.inverse(x)
    np.testing.assert_allclose(ref.forward(z)[0], x, atol=1e-10)


# --- layout ---------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_layout_matches_initialiser(arch):
    spec = make_spec(arch, 3)
    shapes = C.weight_shapes(spec)
    w = C.init_weights(spec, 0)
    assert list(w) == list(shapes)
    for k, (shape, dtype) in shapes.items():
        assert w[k].shape == shape and w[k].dtype == np.dtype(dtype), k
    np.testing.assert_equal(C.init_weights(spec, 0), w)  # seeded, deterministic
    assert not all(np.array_equal(w[k], v) for k, v in C.init_weights(spec, 1).items())


@pytest.mark.parametrize("dim", [1, 2, 3, 7])
@pytest.mark.parametrize("layer", [0, 1])
def test_made_masks_are_autoregressive(dim, layer):
    degrees = C.input_degrees(dim, layer)
    P = 3
    masks = C.made_masks(degrees, (11, 9), P)
    conn = masks[0]
    for m in masks[1:]:
        conn = (conn @ m > 0).astype(float)
    for i in range(dim):          # input i reaches output (j, p) iff deg_i < deg_j
        for j in range(dim):
            reach = conn[i, j * P:(j + 1) * P]
            assert (reach > 0).all() if degrees[i] < degrees[j] and dim > 1 else not reach.any()


def test_coupling_masks_alternate():
    assert C.coupling_split(5, 0) == ((0, 1), (2, 3, 4))
    assert C.coupling_split(5, 1) == ((3, 4), (0, 1, 2))
    assert C.coupling_split(2, 1) == ((1,), (0,))


def test_blocks_order_and_inversion():
    names = [b.name for b in C.blocks(make_spec("glow", 4, layers=2))]
    assert names == ["layers.0.actnorm", "layers.0.lu", "layers.0.coupling",
                     "layers.1.actnorm", "layers.1.lu", "layers.1.coupling"]
    assert all(b.inverted for b in C.blocks(make_spec("iaf", 3)))
    assert C.blocks(make_spec("nice", 3))[-1].kind == "scale"


def test_lu_init_is_a_rotation():
    spec = make_spec("glow", 5)
    ref = Reference(spec, C.init_weights(spec, 3))
    W = ref.lu_matrix("layers.0.lu")
    np.testing.assert_allclose(W @ W.T, np.eye(5), atol=1e-6)


def test_check_weights_rejects_bad_permutation():
    spec = make_spec("glow", 3)
    w = C.init_weights(spec, 0)
    w["layers.0.lu.perm"] = np.array([0, 0, 1])
    with pytest.raises(adapters.InvalidInput, match="permutation"):
        C.check_weights(spec, w)
    w = C.init_weights(spec, 0)
    w["layers.0.lu.sign"] = np.array([1.0, 0.5, -1.0], np.float32)
    with pytest.raises(adapters.InvalidInput, match="sign"):
        C.check_weights(spec, w)


# --- the reference against first principles ---------------------------------------------

def _fd_jacobian(fn, a, eps=1e-6):
    jac = np.empty(a.shape + (a.shape[1],))
    for j in range(a.shape[1]):
        step = np.zeros_like(a)
        step[:, j] = eps
        jac[:, :, j] = (fn(a + step)[0] - fn(a - step)[0]) / (2 * eps)
    return jac


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_reference_logdet_and_round_trip(arch, dim):
    spec = make_spec(arch, dim)
    ref = Reference(spec, C.random_weights(spec, 1, 0.3))
    rng = np.random.default_rng(2)
    z = rng.standard_normal((6, dim))
    x, ld = ref.forward(z)
    np.testing.assert_allclose(np.linalg.slogdet(_fd_jacobian(ref.forward, z))[1], ld,
                               atol=1e-5)
    z2, ld2 = ref.inverse(x)
    np.testing.assert_allclose(z2, z, atol=1e-8)
    np.testing.assert_allclose(ld2, -ld, atol=1e-8)
    np.testing.assert_allclose(np.linalg.slogdet(_fd_jacobian(ref.inverse, x))[1], ld2,
                               atol=1e-5)


@pytest.mark.parametrize("arch", ["maf", "nsf", "naf", "glow", "nice"])
@pytest.mark.parametrize("base", ["normal", "logistic"])
def test_reference_normalises(arch, base):
    spec = make_spec(arch, 2).replace(base=base)
    ref = Reference(spec, C.random_weights(spec, 0, 0.05))
    lim = 9 if base == "normal" else 20
    g = np.linspace(-lim, lim, 401)
    xx, yy = np.meshgrid(g, g, indexing="ij")
    p = np.exp(ref.log_prob(np.stack([xx.ravel(), yy.ravel()], 1))).reshape(xx.shape)
    assert abs(np.trapezoid(np.trapezoid(p, g, axis=1), g) - 1) < 0.01


def test_spline_is_identity_outside_and_continuous_at_the_bound():
    spec = make_spec("nsf-ar", 1)
    ref = Reference(spec, C.random_weights(spec, 0, 0.5))
    B = spec.tail_bound
    x = np.array([[-50.0], [-B - 1e-9], [-B + 1e-9], [B - 1e-9], [B + 1e-9], [50.0]])
    for layer_block in ref.blocks:
        z, ld = ref._block(layer_block, x, True)
        np.testing.assert_allclose(z[[0, 5]], x[[0, 5]])
        np.testing.assert_allclose(ld[[0, 5]], 0)
        np.testing.assert_allclose(z[1], z[2], atol=1e-6)
        np.testing.assert_allclose(z[3], z[4], atol=1e-6)
        np.testing.assert_allclose(ld[1:5], 0, atol=1e-6)  # boundary derivative is 1


def test_combos_cover_every_transform_and_direction():
    specs = [make_spec(a, 3) for a in ALL_ARCHS]
    pairs = {(s.transform, s.conditioner) for s in specs}
    networks = [c for c in adapters.spec.CONDITIONERS if c != "none"]
    assert pairs == {(t, c) for t in adapters.spec.TRANSFORMS if t not in adapters.spec.RESIDUAL
                     for c in networks}  # planar and radial: test_residual
    assert {s.direction for s in specs} == {"density", "sampling"}
    assert len(COMBOS) >= 8
