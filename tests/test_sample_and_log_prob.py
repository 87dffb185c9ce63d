"""``sample_and_log_prob``: the draws of ``sample`` with the log-density of each, from one
pass in the sampling direction (no pass back through an autoregressive inverse): MAF pays
dim passes per layer, IAF one. Every matched backend and execution variant, and every peer
that offers the op (each through its library's own call)."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import PEERS, load_or_skip, make_spec, matched_targets

N = 64
DIM, LAYERS = 4, 3


def _check(flow):
    x, lp = flow.sample_and_log_prob(N, seed=3)
    passes = flow.passes
    assert x.shape == (N, flow.spec.dim) and lp.shape == (N,)
    # the same draws (a jitted forward may fuse differently from sample's: float noise)
    np.testing.assert_allclose(x, flow.sample(N, seed=3), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lp, flow.log_prob(x), rtol=1e-4, atol=2e-4)
    return passes


@pytest.mark.parametrize("arch", ["maf", "iaf", "realnvp", "nsf-ar"])
def test_equals_sample_then_log_prob_with_the_sampling_direction_passes(backend, arch):
    flow = backend.build(make_spec(arch, DIM, layers=LAYERS), seed=0)
    spec = flow.spec
    sequential = LAYERS * DIM if spec.conditioner == "autoregressive" else LAYERS
    sampling = LAYERS if spec.direction == "sampling" else sequential
    assert _check(flow) == sampling + LAYERS * backend.extra_logdet_passes


@pytest.mark.parametrize("label, backend, variant", matched_targets())
def test_every_execution_variant(label, backend, variant):
    flow = backend.build(make_spec("iaf", DIM, layers=LAYERS), seed=0, variant=variant)
    assert _check(flow) == LAYERS * (1 + backend.extra_logdet_passes)


@pytest.mark.parametrize("name", PEERS)
def test_peers_through_their_library_op(name):
    backend = load_or_skip(name)
    for arch in ("maf", "iaf"):
        if backend.capabilities()[arch] is not None:
            continue
        flow = backend.build(make_spec(arch, DIM, layers=LAYERS), seed=0)
        # a library may spend more (a second pass for the log-det): counted, not assumed
        assert _check(flow) >= (LAYERS if arch == "iaf" else LAYERS * DIM)
