"""Variational training (seed 004): target densities given only log p~, the reverse-KL
train step in every matched backend and variant, the fit metrics (reverse KL with its
error, ESS, mode coverage), vi cells and their report section."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from flowbench import adapters
from flowbench.adapters.ops import for_framework
from flowbench.benchmarks import matrix, metrics
from flowbench.datasets import targets as T

from .conftest import load_or_skip, make_spec, matched_targets

TARGETS = ["ring", "u1", "u2", "u3", "u4", "banana", "mixture", "funnel", "normal3"]


# --- targets ---------------------------------------------------------------------------
def test_closed_form_log_normalisers_match_quadrature_and_exact_densities():
    ring = T.load("ring")
    assert ring._quadrature()[0] == pytest.approx(ring.log_z, abs=1e-4)
    assert T.load("mixture")._quadrature()[0] == pytest.approx(T.load("mixture").log_z,
                                                               abs=1e-5)
    assert T.load("normal2")._quadrature()[0] == pytest.approx(math.log(2 * math.pi),
                                                               abs=2e-4)
    # banana: log p~ - log Z is Eq. 39's exact density
    x = np.random.default_rng(0).normal(0, 3, (50, 2))
    banana = T.load("banana")
    exact = norm.logpdf(x[:, 1], 0, 2) + norm.logpdf(x[:, 0], x[:, 1] ** 2 / 4, 1)
    np.testing.assert_allclose(banana(x) - banana.log_z, exact, atol=1e-12)
    funnel = T.load("funnel")
    x = np.random.default_rng(1).normal(0, 1, (50, 10))
    exact = norm.logpdf(x[:, 0], 0, 3) + norm.logpdf(
        x[:, 1:], 0, np.exp(x[:, :1] / 2)).sum(1)
    np.testing.assert_allclose(funnel(x) - funnel.log_z, exact, atol=1e-10)


def test_energy_modes_and_shares():
    u1 = T.load("u1")
    assert u1.modes == 2
    np.testing.assert_allclose(u1.mode_shares, [0.5, 0.5], atol=1e-3)  # symmetric in z1
    assert list(u1.regions(np.array([[2.0, 0.0], [-2.0, 0.0]]))) == [0, 1]
    np.testing.assert_allclose(T.load("mixture").mode_shares, 0.25, atol=1e-4)
    assert T.load("ring").modes == 1 and T.load("u2").modes == 1


def test_unknown_target_is_named():
    with pytest.raises(T.TargetError, match="unknown target 'donut'"):
        T.load("donut")


@pytest.mark.parametrize("framework", ["torch", "jax", "tensorflow"])
def test_every_framework_renders_the_same_log_density(framework):
    name = {"tensorflow": "tfp"}.get(framework, framework)
    backend = load_or_skip(name)
    ops = for_framework(framework)
    for target in map(T.load, TARGETS):
        x = np.random.default_rng(2).normal(0, 2, (64, target.dim)).astype(np.float32)
        got = backend.to_numpy(target.log_density(ops, backend.to_native(x)))
        np.testing.assert_allclose(got, target(x), rtol=1e-5, atol=1e-4,
                                   err_msg=f"{target.name} in {framework}")


# --- the reverse-KL step ------------------------------------------------------------------
DIM, LAYERS, N = 3, 2, 32


def _losses_and_weights(backend, variant, arch, target, weights, z, steps=3):
    flow = backend.build(make_spec(arch, DIM, LAYERS), seed=0, variant=variant)
    flow.set_weights(weights)
    losses = [flow.train_step_reverse_kl(target, z) for _ in range(steps)]
    return losses, flow.get_weights(), flow.passes


@pytest.mark.parametrize("arch, variants", [("iaf", "all"), ("maf", "default"),
                                            ("planar", "all"), ("radial", "all")])
def test_the_step_is_the_same_in_every_backend_and_variant(arch, variants):
    """Shared weights and base draws: the same losses and the same weights after three
    Adam steps (Adam's first step is lr * sign(g): later steps see the gradients' size).
    Every execution variant on IAF (one pass per layer), planar and radial, the default
    ones on MAF (dim passes); the transforms' own forward passes are held to parity in
    test_parity and test_residual."""
    target = _Shifted(DIM)
    spec = make_spec(arch, DIM, LAYERS)
    weights = spec.random_weights(1)
    z = np.random.default_rng(3).standard_normal((N, DIM)).astype(np.float32)
    torch = load_or_skip("torch")
    ref_losses, ref_w, _ = _losses_and_weights(torch, "eager", arch, target, weights, z)
    # the first loss is the objective at the given weights, recomputed in numpy
    flow = torch.build(spec, seed=0)
    flow.set_weights(weights)
    x, logdet = flow.forward(z)
    lq = norm.logpdf(z).sum(1) - logdet
    assert ref_losses[0] == pytest.approx(np.mean(lq - target(x)), rel=1e-5, abs=1e-5)
    for label, backend, variant in matched_targets():
        if variants == "default" and variant != backend._variant(None):
            continue
        losses, w, _ = _losses_and_weights(backend, variant, arch, target, weights, z)
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-4, atol=1e-4, err_msg=label)
        for k in ref_w:
            np.testing.assert_allclose(w[k], ref_w[k], rtol=1e-3, atol=2e-5,
                                       err_msg=f"{label} {k}")


class _Shifted(T.Target):
    """N(1, 0.5^2 I) with a coupling between the first two coordinates: gradients that
    differ in size per weight."""

    def __init__(self, dim):
        self.dim, self.name, self.closed_log_z = dim, f"shifted{dim}", None

    def terms(self, ops, x):
        r = (x - 1.0) / 0.5
        return (-0.5 * ops.sum(r * r, 1) + 0.3 * ops.sin(x[:, 0] * x[:, 1]))[:, None]


def test_passes_follow_the_sampling_direction(backend):
    target = T.load(f"normal{DIM}")
    z = np.zeros((4, DIM), np.float32)
    extra = backend.extra_logdet_passes
    for arch, passes in (("iaf", LAYERS), ("maf", LAYERS * DIM)):
        flow = backend.build(make_spec(arch, DIM, LAYERS), seed=0)
        flow.train_step_reverse_kl(target, z)
        assert flow.passes == passes + LAYERS * extra, arch


def test_training_moves_towards_the_target():
    torch = load_or_skip("torch")
    target = T.load("banana")
    flow = torch.build(make_spec("iaf", 2, 3), seed=0)

    def kl():
        x, lq = flow.sample_and_log_prob(4000, seed=7)
        return metrics.reverse_kl(lq, target(x), target.log_z)["kl"]

    before = kl()
    for s in range(300):
        flow.train_step_reverse_kl(target, flow.base_sample(128, seed=s))
    assert kl() < 0.5 * before


def test_bad_targets_and_flows_get_typed_errors():
    torch = load_or_skip("torch")
    flow = torch.build(make_spec("iaf", 2, 2), seed=0)
    z = np.zeros((4, 2), np.float32)
    with pytest.raises(adapters.ShapeError, match="3-D, the flow 2-D"):
        flow.train_step_reverse_kl(T.load("normal3"), z)
    with pytest.raises(adapters.InvalidInput, match="Target"):
        flow.train_step_reverse_kl(lambda x: x, z)
    with pytest.raises(adapters.NonFiniteError):
        flow.train_step_reverse_kl(T.load("normal2"), np.full((4, 2), np.nan, np.float32))
    naf = torch.build(make_spec("naf", 2, 2), seed=0)
    with pytest.raises(adapters.UnsupportedOp, match="bisection"):
        naf.train_step_reverse_kl(T.load("normal2"), z)


def test_a_peer_says_it_has_no_reverse_kl_step():
    zuko = load_or_skip("zuko")
    flow = zuko.build(make_spec("iaf", 2, 2), seed=0)
    with pytest.raises(adapters.UnsupportedOp, match="no reverse-KL"):
        flow.train_step_reverse_kl(T.load("normal2"), np.zeros((4, 2), np.float32))


# --- the fit metrics ----------------------------------------------------------------------
class _FlowDensity(T.Target):
    """The flow's own density as a target (numpy only), log Z = 0."""

    def __init__(self, flow, shift=0.0):
        self.flow, self.dim, self.shift = flow, flow.spec.dim, shift
        self.name, self.closed_log_z = "self", 0.0

    def __call__(self, x):
        return self.flow.log_prob(np.asarray(x, np.float32) - self.shift).astype(np.float64)


def test_reverse_kl_to_the_flows_own_density_is_zero_within_its_error(backend):
    flow = backend.build(make_spec("maf", DIM, LAYERS), seed=0)
    flow.set_weights(flow.spec.random_weights(4))
    x, lq = flow.sample_and_log_prob(4000, seed=5)
    res = metrics.reverse_kl(lq, _FlowDensity(flow)(x), 0.0)
    assert abs(res["kl"]) <= 3 * res["stderr"] + 1e-4
    assert res["ess_fraction"] == pytest.approx(1.0, abs=1e-3)
    # a shifted copy is another density: far from 0 in units of the error
    off = metrics.reverse_kl(lq, _FlowDensity(flow, shift=0.5)(x), 0.0)
    assert off["kl"] > 10 * off["stderr"] and off["ess_fraction"] < 0.9


def test_reverse_kl_of_known_gaussians():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(200_000)
    lq, lp = norm.logpdf(x), norm.logpdf(x, 1.0, 1.0)  # KL(N(0,1) || N(1,1)) = 0.5
    res = metrics.reverse_kl(lq, lp + 2.0, log_z=2.0)
    assert res["kl"] == pytest.approx(0.5, abs=4 * res["stderr"])
    assert res["elbo"] == pytest.approx(1.5, abs=4 * res["stderr"])
    assert res["ess_fraction"] == pytest.approx(math.exp(-1), rel=0.05)  # 1 / E_q[w^2]
    lq[:3] = -np.inf
    assert metrics.reverse_kl(lq, lp, 0.0)["dropped"] == 3
    shares = metrics.mode_shares(np.array([0, 0, 1, 1, 1, 1]), 3)
    assert [s["share"] for s in shares] == pytest.approx([1 / 3, 2 / 3, 0.0])


# --- cells, matrix and report ------------------------------------------------------------
def test_vi_matrix_expands_over_targets_and_names_unknown_ones(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('kind = "vi"\nbackends = ["torch"]\narchs = ["iaf"]\n'
                    'targets = ["banana", "ring"]\n')
    cells = matrix.expand(matrix.load(str(path)),
                          {"torch": {"variants": ["eager"], "reason": None, "missing": {}}})
    assert sorted(c.dataset for c in cells) == ["banana", "ring"]
    assert all(c.kind == "vi" and c.metric_n and c.n_train is None for c in cells)
    path.write_text('kind = "vi"\ntargets = ["donut"]\n')
    with pytest.raises(matrix.MatrixError, match="unknown target 'donut'"):
        matrix.load(str(path))
    assert "vi" in matrix.presets()


def test_vi_run_writes_fit_rows_figure_and_the_direction_section(tmp_path):
    from flowbench.benchmarks import cli, results

    load_or_skip("torch")
    m = tmp_path / "vi.toml"
    m.write_text("""
backends = ["torch"]
layers = 2
hidden = [8, 8]
train_batch = 32
batches = [32]
min_time = 0.02
min_repeats = 3
[[sweep]]
kind = "vi"
archs = ["iaf"]
targets = ["mixture"]
steps = 40
eval_every = 20
metric_n = 400
ops = ["sample_and_log_prob", "train_step_reverse_kl"]
[[sweep]]
kind = "time"
archs = ["maf"]
dims = [2, 3]
ops = ["train_step", "train_step_reverse_kl"]
""")
    out = tmp_path / "out"
    assert cli.main(["run", str(m), "--out", str(out)]) == 0
    df = results.read(out / "vi")
    vi = df[df["kind"] == "vi"]
    kl = vi[vi["metric"] == "reverse_kl"]
    assert len(kl) == 1 and np.isfinite(kl["stderr"].iloc[0])
    assert sorted(vi.loc[vi["metric"] == "mode_share", "mode"].astype(int)) == [0, 1, 2, 3]
    assert len(vi[vi["metric"] == "curve_reverse_kl"]) == 2
    assert set(vi.loc[vi["metric"] == "time", "op"]) == {"sample_and_log_prob",
                                                          "train_step_reverse_kl"}
    report = (out / "REPORT.md").read_text()
    for text in ("### mixture: reverse KL (nats)", "mode coverage", "ESS fraction",
                 "vi_samples_mixture.png", "## The direction trade-off"):
        assert text in report, text
    assert (out / "vi_samples_mixture.png").exists()
    assert (out / "vi_direction_dim.png").exists()


def test_a_target_section_names_its_unfinished_cells_with_the_reason():
    import pandas as pd

    from flowbench.benchmarks.report.variational import _failed_lines

    rows = pd.DataFrame([
        {"metric": "status", "status": "failed", "arch": "maf", "column": "torch",
         "error": "FloatingPointError: reverse-KL training diverged at step 130"},
        {"metric": "curve_reverse_kl", "status": "failed", "arch": "maf", "column": "torch",
         "error": ""}])
    (line, _) = _failed_lines("funnel", rows)
    assert line == ("funnel: not finished (blank above): maf torch: FloatingPointError: "
                    "reverse-KL training diverged at step 130")
    assert _failed_lines("funnel", rows.iloc[1:]) == []


def test_mode_coverage_shows_each_share_with_its_standard_error():
    """Two seeds of one cell: the mean shares, and the largest of their standard errors
    sqrt(mean se^2 / 2), by hand."""
    import pandas as pd

    from flowbench.benchmarks.report.variational import _mode_lines

    rows = pd.DataFrame([
        {"arch": "iaf", "column": "jax", "mode": m, "value": v, "stderr": e}
        for m, v, e in ((0, 0.6, 0.03), (1, 0.4, 0.01), (0, 0.4, 0.04), (1, 0.6, 0.02))])
    lines = _mode_lines("u1", T.load("u1"), rows)
    se = math.sqrt((0.03 ** 2 + 0.04 ** 2) / 2 / 2)  # mode 0's, the larger
    assert f"| iaf    | 0.50 / 0.50 (±{se:.3f}) |" in lines[2]
    assert "± the largest standard error" in lines[0]
