"""The torch backend's ``compile`` variant (torch.compile, inductor): the eager variant's
numbers for every preset, the eager variant's passes, weights shared with the eager module.

Every compiled function is a C++ build on first use; with an empty inductor cache this
module takes about a minute on 2 CPU cores (seconds once the cache, by default in
/tmp/torchinductor_$USER, holds its kernels). So the specs are small (dim 2, 2 layers,
hidden (16, 16)), every op of a flow sees one batch size, and ``sample`` draws as many rows
as ``forward`` gets, so it reuses the kernels ``forward`` compiled. Deselect with
``-m "not slow"``.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flowbench import adapters  # noqa: E402
from flowbench.adapters import canonical as C  # noqa: E402

from .conftest import PRESETS, load_or_skip, make_spec  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    # inductor's own lowering of Glow's triangular solve, once per process; not ours to fix
    pytest.mark.filterwarnings(
        "ignore:`torch._prims_common.check` is deprecated:FutureWarning"),
    # torch's own modules that inductor imports on its first compile
    pytest.mark.filterwarnings(
        "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]

DIM = 2
N_ROWS = 32
ATOL = RTOL = 1e-4
LR = 1e-2


@pytest.fixture(scope="module")
def torch_backend():
    return load_or_skip("torch", module_level=True)


def pair(backend, arch, seed=0, **kw):
    """An eager and a compile flow holding the same random canonical weights."""
    spec = make_spec(arch, DIM)
    w = C.random_weights(spec, seed, 0.1)
    flows = []
    for variant in ("eager", "compile"):
        flow = backend.build(spec, seed=seed, variant=variant, **kw)
        flow.set_weights(w)
        flows.append(flow)
    return flows


def close(a, b, what, atol=ATOL, rtol=RTOL):
    np.testing.assert_allclose(np.asarray(b, np.float64), np.asarray(a, np.float64),
                               atol=atol, rtol=rtol, err_msg=what)


def test_variants(torch_backend):
    assert torch_backend.variants == ("eager", "compile")
    spec = make_spec("maf", DIM)
    assert torch_backend.build(spec).variant == "eager"
    assert torch_backend.build(spec, variant="compile").variant == "compile"
    with pytest.raises(adapters.UnsupportedSpec, match="no execution variant 'jit'"):
        torch_backend.build(spec, variant="jit")


@pytest.mark.parametrize("arch", PRESETS)
def test_compile_matches_eager(torch_backend, arch):
    """log_prob, inverse, forward (and the round trip), sample with one seed, and one
    train_step: the loss, the weights it leaves, and the passes of every op."""
    eager, comp = pair(torch_backend, arch, train=adapters.TrainConfig(lr=LR))
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((N_ROWS, DIM)) * 1.5).astype(np.float32)
    x[:4] *= 4.0  # spline tails
    close(eager.log_prob(x), comp.log_prob(x), "log_prob")
    assert comp.passes == eager.passes

    z_e, ld_e = eager.inverse(x)
    z_c, ld_c = comp.inverse(x)
    close(z_e, z_c, "inverse z")
    close(ld_e, ld_c, "inverse log-det")
    assert comp.passes == eager.passes

    x_e, fld_e = eager.forward(z_e)
    x_c, fld_c = comp.forward(z_e)
    assert comp.passes == eager.passes
    close(x_e, x_c, "forward x")
    close(fld_e, fld_c, "forward log-det")
    tol = 2e-4 if comp.spec.transform == "mlp" else 1e-4  # bisection, see test_flow_contract
    assert np.max(np.abs(x_c - x)) < tol * (1 + np.abs(x).max())  # the round trip
    close(-ld_c, fld_c, "round-trip log-det")

    s_e, s_c = eager.sample(N_ROWS, seed=3), comp.sample(N_ROWS, seed=3)
    assert comp.passes == eager.passes
    close(s_e, s_c, "sample")
    np.testing.assert_array_equal(s_c, comp.sample(N_ROWS, seed=3))

    loss_e, loss_c = eager.train_step(x), comp.train_step(x)
    assert comp.passes == eager.passes
    close(loss_e, loss_c, "train_step loss", atol=1e-5, rtol=1e-5)
    # the gradients the step applied: the compiled backward against eager autograd
    grads_c = dict(comp.module.named_parameters())
    scale = max(1.0, max(float(p.grad.abs().max()) for p in eager.module.parameters()))
    for name, p in eager.module.named_parameters():
        close(p.grad, grads_c[name].grad, f"gradient {name}", atol=1e-4 * scale, rtol=1e-3)
    # Adam's first step is lr * g / (|g| + eps) per element: a gradient within float noise
    # of zero may move by up to lr either way, so the weights are held to 5% of lr
    w_e, w_c = eager.get_weights(), comp.get_weights()
    for name in w_e:
        close(w_e[name], w_c[name], f"weight {name} after one step", atol=0.05 * LR, rtol=0)
    # the compiled functions read the trained parameters
    close(eager.log_prob(x), comp.log_prob(x), "log_prob after the step")


def test_passes_measured_eagerly(torch_backend):
    """MAF: log_prob one conditioner pass per layer, sample one per layer and dimension,
    as in the eager variant, on the first (compiling) call and on later ones, though
    compiled code runs no Python counter."""
    spec = make_spec("maf", DIM)
    eager = torch_backend.build(spec, seed=0)
    comp = torch_backend.build(spec, seed=0, variant="compile")
    x = np.random.default_rng(2).standard_normal((N_ROWS, DIM)).astype(np.float32)
    for _ in range(2):
        eager.log_prob(x)
        comp.log_prob(x)
        assert comp.passes == eager.passes == spec.layers
        eager.sample(N_ROWS)
        comp.sample(N_ROWS)
        assert comp.passes == eager.passes == spec.layers * spec.dim
        comp.train_step(x)
        assert comp.passes == spec.layers


def test_compiled_ops_see_new_weights(torch_backend):
    a, b = pair(torch_backend, "realnvp", seed=4)
    x = np.random.default_rng(3).standard_normal((N_ROWS, DIM)).astype(np.float32)
    before = b.log_prob(x)
    w = C.random_weights(a.spec, 5, 0.1)
    a.set_weights(w)
    b.set_weights(w)
    after = b.log_prob(x)
    assert np.abs(after - before).max() > 1e-3
    close(a.log_prob(x), after, "log_prob after set_weights")
    # gradients and jacobian run on the eager module the compiled functions share
    for name, g in a.gradients(x).items():
        close(g, b.gradients(x)[name], f"gradient {name}")
    close(a.jacobian(x, "inverse"), b.jacobian(x, "inverse"), "jacobian")


def test_recompile_limit_raises(torch_backend, monkeypatch):
    """Past RECOMPILE_LIMIT input shapes an op refuses; it never falls back to eager."""
    import flowbench.adapters.torch as backend_module

    monkeypatch.setattr(backend_module, "RECOMPILE_LIMIT", 1)
    flow = torch_backend.build(make_spec("nice", DIM), seed=0, variant="compile")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((N_ROWS, DIM)).astype(np.float32)
    flow.inverse(x)
    with pytest.raises(adapters.UnsupportedOp, match="input shapes"):
        flow.inverse(x[:-1])
    flow.inverse(x)  # the shape it compiled still runs
