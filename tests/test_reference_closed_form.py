"""The float64 oracle ``adapters/reference.py`` against numbers worked out by hand.

Every backend is held to ``Reference``, but the reference's own tests (test_canonical.py)
check only self-consistency: round trip, Jacobian against finite differences,
normalisation. A wrong constant passes all of them: ``sigmoid(s + 1)`` for Glow's
``sigmoid(s + 2)``, a missing spline derivative floor or DSF slope floor, a sign in
ActNorm, a dropped LU permutation, a wrong base density. This file is an independent
oracle for the oracle.

Technique: take a tiny spec of every arch preset, zero every conditioner weight and put
the parameters theta in the last bias (column i*P + p is parameter p of transformed
dimension i), so each transformer receives known constants; where conditioning itself is
under test, one hand-chosen path goes through a ReLU with a positive input, so theta is
an affine function of one earlier value. The expected z, log|dz/dx| and log p(x) are then
computed here from the closed forms in the ``adapters/canonical.py`` docstring, never from
reference internals. Canonical weights are float32, so every hand computation starts from
the float32 value actually stored (``f32``); most chosen numbers are exact in float32.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from flowbench import adapters
from flowbench.adapters import FlowSpec
from flowbench.adapters import canonical as C
from flowbench.adapters.reference import Reference

RTOL, ATOL = 1e-10, 1e-12
FORWARD_ATOL = 1e-11  # the DSF inverse is a bisection to 1e-12 * (1 + |u|)


def f32(a):
    """The float64 value of what a canonical (float32) array actually stores."""
    return np.asarray(a, np.float32).astype(np.float64)


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-np.asarray(a, np.float64)))


def softplus(a):
    return np.log1p(np.exp(np.asarray(a, np.float64)))


def normal_logpdf(z):
    return -0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)


def logistic_logpdf(z):
    """Density sigmoid(z) * (1 - sigmoid(z)) of the standard logistic."""
    return np.log(sigmoid(z)) + np.log(sigmoid(-z))


BASES = {"normal": normal_logpdf, "logistic": logistic_logpdf}


def zeroed(spec: FlowSpec, thetas) -> dict[str, np.ndarray]:
    """Canonical weights whose conditioners output constants: every net weight and hidden
    bias zero, the last bias of layer l set to ``thetas[l]`` (transformed dims x P)."""
    w = C.init_weights(spec, 0)
    for name in w:
        if ".net." in name:
            w[name] = np.zeros_like(w[name])
    kind = "coupling" if spec.conditioner == "coupling" else "made"
    last = len(spec.hidden)
    for l, theta in enumerate(thetas):
        name = f"layers.{l}.{kind}.net.{last}.bias"
        theta = np.asarray(theta, np.float32)
        assert theta.shape[-1] == spec.params_per_dim
        assert w[name].shape == (theta.size,), name
        w[name] = theta.reshape(-1)
    assert set(w) == set(C.weight_shapes(spec))
    return w


def check_flow(spec: FlowSpec, w, x, z, logdet):
    """Reference(spec, w) maps x -> z with log|dz/dx| = logdet (all hand values), maps z
    back to x with the opposite log-det, and log p(x) = sum base(z) + logdet for the
    normal and the logistic base."""
    x, z, logdet = (np.asarray(a, np.float64) for a in (x, z, logdet))
    ref = Reference(spec, w)
    z_ref, ld_ref = ref.inverse(x)
    assert_allclose(z_ref, z, rtol=RTOL, atol=ATOL, err_msg="inverse: z")
    assert_allclose(ld_ref, logdet, rtol=RTOL, atol=ATOL, err_msg="inverse: log-det")
    x_ref, ld_back = ref.forward(z)
    assert_allclose(x_ref, x, rtol=RTOL, atol=FORWARD_ATOL, err_msg="forward: x")
    assert_allclose(ld_back, -logdet, rtol=RTOL, atol=FORWARD_ATOL, err_msg="forward: log-det")
    for base, logpdf in BASES.items():
        lp = Reference(spec.replace(base=base), w).log_prob(x)
        assert_allclose(lp, logpdf(z).sum(1) + logdet, rtol=RTOL, atol=ATOL,
                        err_msg=f"log_prob, {base} base")


# The tiny spec of each test below, by arch preset (plus the sigmoid-scale affine).
SPECS = {
    "nice": FlowSpec(arch="nice", dim=3, layers=2, hidden=(2,)),
    "realnvp": FlowSpec(arch="realnvp", dim=3, layers=2, hidden=(2,)),
    "realnvp-conditioned": FlowSpec(arch="realnvp", dim=3, layers=2, hidden=(1,)),
    "maf": FlowSpec(arch="maf", dim=2, layers=2, hidden=(1,)),
    "iaf": FlowSpec(arch="iaf", dim=2, layers=2, hidden=(1,)),
    "maf-sigmoid": FlowSpec(arch="maf", scale="sigmoid", dim=2, layers=1, hidden=(1,)),
    "glow": FlowSpec(arch="glow", dim=2, layers=1, hidden=(1,)),
    "naf-equal": FlowSpec(arch="naf", dim=2, layers=1, hidden=(1,), naf_hidden=3),
    "naf-two": FlowSpec(arch="naf", dim=2, layers=1, hidden=(1,), naf_hidden=2),
    "nsf": FlowSpec(arch="nsf", dim=2, layers=1, hidden=(1,), bins=3, tail_bound=3.0),
    "nsf-ar": FlowSpec(arch="nsf-ar", dim=2, layers=1, hidden=(1,), bins=3, tail_bound=2.0),
}


# --- base densities -------------------------------------------------------------------


@pytest.mark.parametrize("base", list(BASES))
def test_base_log_density_of_the_identity_flow(base):
    """An identity flow (MAF, shift 0, log-scale 0): log p(x) is the base density alone:
    normal -x^2/2 - log(2 pi)/2, logistic log sigmoid(x) + log sigmoid(-x), per dim."""
    spec = FlowSpec(arch="maf", dim=2, layers=1, hidden=(1,), base=base)
    w = zeroed(spec, [np.zeros((2, 2))])
    x = np.array([[0.0, 0.0], [1.0, -1.0], [3.0, -4.0]])
    by_hand = {"normal": [-math.log(2 * math.pi), -1.0 - math.log(2 * math.pi)],
               "logistic": [2 * math.log(0.25),
                            2 * math.log(sigmoid(1.0) * sigmoid(-1.0))]}
    lp = Reference(spec, w).log_prob(x)
    assert_allclose(lp[:2], by_hand[base], rtol=RTOL)
    check_flow(spec, w, x, x, np.zeros(3))


# --- NICE, RealNVP: coupling --------------------------------------------------------------


def test_nice_additive_coupling_masks_and_final_scale():
    """NICE, dim 3, two layers: layer 0 keeps dim 0 and shifts dims 1, 2; layer 1 (the
    mirrored mask) keeps dim 2 and shifts dims 0, 1; then z = y * exp(log_scale)."""
    spec = SPECS["nice"]
    w = zeroed(spec, [[[0.5], [-1.25]],    # layer 0: shifts of dims 1, 2
                      [[0.75], [2.0]]])    # layer 1: shifts of dims 0, 1
    ls = np.array([0.5, -0.25, 1.0])
    w["scale.log_scale"] = ls.astype(np.float32)
    x = np.array([[0.3, -1.2, 2.0], [-0.7, 0.45, -3.1], [4.0, 0.0, 1.5]])
    y = x + np.array([0.75, 0.5 + 2.0, -1.25])
    z = y * np.exp(ls)
    check_flow(spec, w, x, z, np.full(3, 0.5 - 0.25 + 1.0))


def test_realnvp_affine_exp_coupling():
    """RealNVP, dim 3, two layers: v = u * exp(s) + shift on the transformed half, the
    other half untouched; log-det = sum of s."""
    spec = SPECS["realnvp"]
    w = zeroed(spec, [[[0.5, 0.25], [-1.0, -0.5]],     # layer 0: dims 1, 2 ([shift, s])
                      [[0.125, 0.75], [1.5, -1.0]]])   # layer 1: dims 0, 1
    x = np.array([[0.3, -1.2, 2.0], [-0.7, 0.45, -3.1], [4.0, 0.0, 1.5]])
    y = np.stack([x[:, 0],
                  x[:, 1] * np.exp(0.25) + 0.5,
                  x[:, 2] * np.exp(-0.5) - 1.0], 1)
    z = np.stack([y[:, 0] * np.exp(0.75) + 0.125,
                  y[:, 1] * np.exp(-1.0) + 1.5,
                  y[:, 2]], 1)
    check_flow(spec, w, x, z, np.full(3, 0.25 - 0.5 + 0.75 - 1.0))


def test_coupling_conditions_on_the_identity_half():
    """Layer 1 of a dim-3 coupling flow conditions on dim 2 only (A = last dim//2): with
    hidden unit h = relu(u_2 + 8) = u_2 + 8, shift_0 = 0.5 h + 0.125 and
    s_1 = -0.25 h + 1.75 (columns 0 and 3: dimension-major [shift, s] of dims 0, 1)."""
    spec = SPECS["realnvp-conditioned"]
    w = zeroed(spec, [np.zeros((2, 2)), [[0.125, 0.0], [0.0, 1.75]]])
    w["layers.1.coupling.net.0.weight"][0, 0] = 1.0
    w["layers.1.coupling.net.0.bias"][0] = 8.0
    w["layers.1.coupling.net.1.weight"][0, [0, 3]] = [0.5, -0.25]
    x = np.array([[0.3, -1.2, 2.0], [-0.7, 0.45, -3.1], [4.0, 0.0, 1.5]])
    h = x[:, 2] + 8.0
    assert np.all(h > 0)  # the ReLU is the identity here
    shift0, s1 = 0.5 * h + 0.125, -0.25 * h + 1.75
    z = np.stack([x[:, 0] + shift0, x[:, 1] * np.exp(s1), x[:, 2]], 1)
    check_flow(spec, w, x, z, s1)


# --- MAF, IAF: MADE, affine ---------------------------------------------------------------

# A two-layer dim-2 MADE with hidden (1,): the hidden unit has degree 1. Layer 0 has
# input degrees (1, 2), so dim 1 may depend on x_0; layer 1 has degrees (2, 1) (reversed),
# so dim 0 may depend on u_1. Only those connections are set (canonical weights are
# stored masked); theta of the dependent dim is affine in the earlier value.
MADE_BIAS = [[[0.25, -0.5], [0.5, 0.125]],     # layer 0: [shift, s] of dims 0, 1
             [[-0.75, 0.25], [1.0, -0.375]]]   # layer 1
MADE_COEF = [(0.5, -0.25), (0.75, 0.125)]      # d(shift, s)/dh of the dependent dim


def made_weights(spec):
    w = zeroed(spec, MADE_BIAS)
    P = spec.params_per_dim
    for l, (src, dep) in enumerate([(0, 1), (1, 0)]):   # (conditioning input, its dependent)
        w[f"layers.{l}.made.net.0.weight"][src, 0] = 1.0
        w[f"layers.{l}.made.net.0.bias"][0] = 8.0
        w[f"layers.{l}.made.net.1.weight"][0, dep * P:dep * P + 2] = MADE_COEF[l]
    return w


def made_layer(l, u):
    """The easy map h of MADE layer l of ``made_weights``, by hand: (v, log|dv/du|)."""
    src, dep = [(0, 1), (1, 0)][l]
    hid = u[:, src] + 8.0
    assert np.all(hid > 0)
    shift, s = np.array(MADE_BIAS[l])[:, 0], np.array(MADE_BIAS[l])[:, 1]
    shift = np.tile(shift, (len(u), 1))
    s = np.tile(s, (len(u), 1))
    shift[:, dep] += MADE_COEF[l][0] * hid
    s[:, dep] += MADE_COEF[l][1] * hid
    return u * np.exp(s) + shift, s.sum(1)


def test_maf_made_order_and_affine_exp():
    """MAF (density-fast): x -> z is h_1(h_0(x)), each h one pass of v = u exp(s) + shift
    with theta from the masked MADE; layer 1 runs in reversed order."""
    spec = SPECS["maf"]
    x = np.array([[0.3, -1.2], [-0.7, 0.45], [2.0, 1.5], [-3.0, -2.0]])
    y, ld0 = made_layer(0, x)
    z, ld1 = made_layer(1, y)
    check_flow(spec, made_weights(spec), x, z, ld0 + ld1)


def test_iaf_is_the_maf_block_inverted():
    """IAF with MAF's weights: z -> x is one pass of each h (x = h_0(h_1(z))), and x -> z
    (``inverse``) is the inverted map, log|dz/dx| = -(log-det of those passes)."""
    spec = SPECS["iaf"]
    z = np.array([[0.3, -1.2], [-0.7, 0.45], [1.0, 1.5], [-2.0, -1.0]])
    y, ld1 = made_layer(1, z)
    x, ld0 = made_layer(0, y)
    check_flow(spec, made_weights(spec), x, z, -(ld0 + ld1))


def test_affine_sigmoid_scale_is_sigmoid_s_plus_2():
    """Glow's scale on an autoregressive affine: v = u * sigmoid(s + 2) + shift,
    log-det = sum log sigmoid(s + 2). The chosen s make sigmoid(s + 1) clearly different."""
    spec = SPECS["maf-sigmoid"]
    theta = np.array([[0.25, 0.5], [-0.5, -3.0]])
    s = theta[:, 1]
    assert np.all(np.abs(sigmoid(s + 2) - sigmoid(s + 1)) > 0.05)
    x = np.array([[0.3, -1.2], [-0.7, 0.45], [4.0, -4.5]])
    c = sigmoid(s + 2.0)
    check_flow(spec, zeroed(spec, [theta]), x, x * c + theta[:, 0],
               np.full(3, np.log(c).sum()))


# --- Glow: ActNorm, LU, sigmoid-scale coupling --------------------------------------------


def test_glow_actnorm_lu_and_sigmoid_coupling():
    """Glow, dim 2, one layer, x -> z: ActNorm y = (x - loc) exp(-log_scale), then y' = W y
    with W = P L (U + diag(sign exp(log_diag))) written out below, then the coupling
    z_1 = y'_1 sigmoid(s + 2) + shift. log-det = -sum log_scale + sum log_diag + log c."""
    spec = SPECS["glow"]
    shift, s = 0.375, -1.0
    w = zeroed(spec, [[[shift, s]]])
    loc, ls = np.array([0.5, -0.25]), np.array([0.25, -0.5])
    w["layers.0.actnorm.loc"] = loc.astype(np.float32)
    w["layers.0.actnorm.log_scale"] = ls.astype(np.float32)
    # L = [[1, 0], [0.5, 1]], U + diag = [[-e^0.5, 0.25], [0, e^-0.25]], perm swaps rows
    w["layers.0.lu.lower"] = np.array([[0, 0], [0.5, 0]], np.float32)
    w["layers.0.lu.upper"] = np.array([[0, 0.25], [0, 0]], np.float32)
    w["layers.0.lu.log_diag"] = np.array([0.5, -0.25], np.float32)
    w["layers.0.lu.sign"] = np.array([-1, 1], np.float32)
    w["layers.0.lu.perm"] = np.array([1, 0], np.int64)
    a, b = math.exp(0.5), math.exp(-0.25)
    LU = np.array([[-a, 0.25],                 # row 0 of L @ (U + diag)
                   [-0.5 * a, 0.125 + b]])     # row 1
    W = LU[[1, 0]]                             # (P y)_i = y[perm[i]]
    assert_allclose(np.linalg.slogdet(W)[1], 0.5 - 0.25, rtol=RTOL)
    x = np.array([[0.3, -1.2], [-0.7, 0.45], [2.0, 1.5]])
    y = (x - loc) * np.exp(-ls)
    y = np.stack([W[0, 0] * y[:, 0] + W[0, 1] * y[:, 1],
                  W[1, 0] * y[:, 0] + W[1, 1] * y[:, 1]], 1)
    c = sigmoid(s + 2.0)
    z = np.stack([y[:, 0], y[:, 1] * c + shift], 1)
    check_flow(spec, w, x, z, np.full(3, -ls.sum() + (0.5 - 0.25) + math.log(c)))


# --- NAF: deep sigmoidal flow ---------------------------------------------------------------


def test_naf_identical_components_are_affine():
    """With all M components equal, v = logit(sigmoid(alpha u + b)) = alpha u + b whatever
    the mixture weights, alpha = MIN_DSF_SLOPE + softplus(a); log-det = log alpha."""
    spec = SPECS["naf-equal"]
    a, b = np.array([0.5, -2.0]), np.array([-0.25, 1.5])
    theta = [np.r_[[a[0]] * 3, [b[0]] * 3, [0.3, -1.2, 0.7]],
             np.r_[[a[1]] * 3, [b[1]] * 3, [0.0, 0.0, 0.0]]]
    alpha = C.MIN_DSF_SLOPE + softplus(a)
    x = np.array([[0.3, -1.2], [-0.7, 0.45], [2.0, 1.5], [-4.0, 3.0]])
    check_flow(spec, zeroed(spec, [theta]), x, alpha * x + b,
               np.full(4, np.log(alpha).sum()))


def dsf_by_hand(u, a, b, w):
    """Scalar DSF: v = logit(y), y = sum_j softmax(w)_j sigmoid(alpha_j u + b_j);
    dv/du = sum_j softmax(w)_j alpha_j sig_j (1 - sig_j) / (y (1 - y))."""
    a, b, w = f32(a), f32(b), f32(w)
    alpha = C.MIN_DSF_SLOPE + softplus(a)
    pi = np.exp(w) / np.exp(w).sum()
    sig = sigmoid(alpha * u + b)
    y = (pi * sig).sum()
    dy = (pi * alpha * sig * (1 - sig)).sum()
    return math.log(y / (1 - y)), math.log(dy / (y * (1 - y)))


def test_naf_two_unequal_components():
    """M = 2 with different slopes, offsets and weights: the mixture of sigmoids by hand."""
    spec = SPECS["naf-two"]
    params = [([0.5, -1.0], [0.25, -0.5], [0.0, 1.0]),     # dim 0: (a, b, w)
              ([-2.0, 1.5], [1.0, 0.0], [0.5, -0.75])]     # dim 1
    w = zeroed(spec, [[np.r_[a, b, ww] for a, b, ww in params]])
    x = np.array([[0.3, -1.2], [-0.7, 0.45], [2.0, 1.5], [-4.0, 3.0]])
    z, ld = np.zeros_like(x), np.zeros(len(x))
    for n in range(len(x)):
        for i in range(2):
            z[n, i], ldi = dsf_by_hand(x[n, i], *params[i])
            ld[n] += ldi
    check_flow(spec, w, x, z, ld)


# --- NSF, NSF-AR: rational-quadratic spline ------------------------------------------------


def knots_by_hand(raw, B):
    """Knot positions: sizes 1e-3 + (1 - 1e-3 K) softmax(raw), scaled to [-B, B]."""
    raw = f32(raw)
    sizes = C.MIN_BIN_SIZE + (1 - C.MIN_BIN_SIZE * len(raw)) * np.exp(raw) / np.exp(raw).sum()
    return -B + 2 * B * np.r_[0.0, np.cumsum(sizes)]


def rqs_by_hand(u, xk, yk, raw_d, B):
    """Scalar rational-quadratic spline (Durkan et al. 2019, eq. 4 and its derivative):
    in bin k, with xi = (u - x_k) / w_k, s = h_k / w_k and knot derivatives delta,
    v = y_k + h_k (s xi^2 + delta_k xi (1 - xi)) / (s + (delta_k+1 + delta_k - 2 s) xi (1 - xi)),
    dv/du = s^2 (delta_k+1 xi^2 + 2 s xi (1 - xi) + delta_k (1 - xi)^2) / denominator^2.
    Interior delta = MIN_DERIVATIVE + softplus(d), boundary delta = 1; identity outside."""
    if abs(u) > B:
        return u, 0.0
    delta = np.r_[1.0, C.MIN_DERIVATIVE + softplus(f32(raw_d)), 1.0]
    k = int(np.searchsorted(xk, u, side="right")) - 1
    assert 0 <= k < len(xk) - 1 and not np.isclose(u, xk).any()  # strictly inside a bin
    wk, hk = xk[k + 1] - xk[k], yk[k + 1] - yk[k]
    s, xi = hk / wk, (u - xk[k]) / wk
    den = s + (delta[k + 1] + delta[k] - 2 * s) * xi * (1 - xi)
    v = yk[k] + hk * (s * xi ** 2 + delta[k] * xi * (1 - xi)) / den
    dv = s ** 2 * (delta[k + 1] * xi ** 2 + 2 * s * xi * (1 - xi) + delta[k] * (1 - xi) ** 2)
    return v, math.log(dv / den ** 2)


def test_nsf_uniform_bins_spline_and_identity_tails():
    """NSF coupling, K = 3, B = 3: equal raw widths and heights give knots -3, -1, 1, 3 on
    both axes (s = 1), so only the interior derivatives bend the map; |u| > B is identity."""
    spec = SPECS["nsf"]
    raw_d = [1.5, -1.0]
    w = zeroed(spec, [[np.r_[[0.7] * 3, [-0.2] * 3, raw_d]]])
    knots = np.array([-3.0, -1.0, 1.0, 3.0])
    assert_allclose(knots_by_hand([0.7] * 3, 3.0), knots, rtol=RTOL)
    x = np.array([[0.3, 0.4], [-1.7, -1.5], [2.0, 2.2], [0.1, 4.0], [-0.9, -3.5], [1.0, -0.6]])
    z, ld = x.copy(), np.zeros(len(x))
    for n in range(len(x)):
        z[n, 1], ld[n] = rqs_by_hand(x[n, 1], knots, knots, raw_d, 3.0)
    assert np.all(np.abs(z[[0, 1, 2, 5], 1] - x[[0, 1, 2, 5], 1]) > 1e-2)  # really bent
    check_flow(spec, w, x, z, ld)


def test_nsf_ar_unequal_bins_and_unit_derivatives_are_identity():
    """Autoregressive spline, K = 3, B = 2. Dim 0: uniform bins and interior derivatives
    MIN_DERIVATIVE + softplus(d) = 1 (d = softplus^-1(1 - MIN_DERIVATIVE)), so the spline
    is the identity. Dim 1: unequal widths and heights through the softmax knot formula."""
    spec = SPECS["nsf-ar"]
    d_unit = math.log(math.expm1(1 - C.MIN_DERIVATIVE))
    dims = [([0.0] * 3, [0.0] * 3, [d_unit] * 2),
            ([0.0, 1.0, -0.5], [0.5, 0.0, -1.0], [0.25, -0.75])]
    w = zeroed(spec, [[np.r_[wd, ht, dd] for wd, ht, dd in dims]])
    x = np.array([[0.3, 0.4], [-1.7, -1.5], [1.2, 1.9], [2.5, -0.1], [-0.9, -3.5]])
    z, ld = x.copy(), np.zeros(len(x))
    for n in range(len(x)):
        for i, (wd, ht, dd) in enumerate(dims):
            z[n, i], ldi = rqs_by_hand(x[n, i], knots_by_hand(wd, 2.0),
                                       knots_by_hand(ht, 2.0), dd, 2.0)
            ld[n] += ldi
    # float32 storage of d leaves the unit derivative off by ~1e-7, nothing more
    assert_allclose(z[:, 0], x[:, 0], atol=1e-6)
    z_ref, _ = Reference(spec, w).inverse(x)
    assert_allclose(z_ref[:, 0], x[:, 0], atol=1e-6)
    check_flow(spec, w, x, z, ld)


def test_every_preset_has_a_closed_form_check():
    """A new arch preset needs its own hand-computed check in this file; each spec here is
    still the preset it is named after (only sizes changed) or the sigmoid-scale MAF."""
    assert {spec.arch for spec in SPECS.values()} == set(adapters.PRESETS)
    for key, spec in SPECS.items():
        assert spec.label == spec.arch or key == "maf-sigmoid", key
    assert SPECS["maf-sigmoid"].scale == "sigmoid"
