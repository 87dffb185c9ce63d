"""What only the TFP backend promises: three execution variants, traced once, no cache
hits between ops, quiet import, thread settings."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from flowbench import adapters
from flowbench.adapters import canonical as C

from .conftest import load_or_skip, make_spec

load_or_skip("tfp", module_level=True)

import tensorflow as tf  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = ("log_prob", "inverse", "forward", "sample")


@pytest.fixture(scope="module")
def tfp_backend():
    return adapters.load("tfp")


def test_variants_are_selectable_and_recorded(tfp_backend):
    spec = make_spec("maf", 2)
    assert tfp_backend.build(spec).variant == "function"
    for variant in ("eager", "function", "xla"):
        assert tfp_backend.build(spec, variant=variant).variant == variant
    with pytest.raises(adapters.UnsupportedSpec, match="no execution variant 'jit'"):
        tfp_backend.build(spec, variant="jit")


@pytest.mark.parametrize("variant", ["function", "xla"])
def test_ops_trace_once(tfp_backend, variant, rng):
    spec = make_spec("nsf-ar", 3, layers=2, hidden=(7, 5))  # a spec no other test traces
    flow = tfp_backend.build(spec, seed=0, variant=variant)
    x = rng.standard_normal((16, 3)).astype(np.float32)
    for _ in range(3):
        flow.log_prob(x)
        flow.inverse(x)
        flow.forward(x)
        flow.sample(16, seed=1)
        flow.train_step(x)
    flow.set_weights(C.random_weights(spec, 2))
    other = tfp_backend.build(spec, seed=9, variant=variant)
    for f in (flow, other):
        f.log_prob(x)
        f.forward(x)
    assert all(flow.traces[op] == 1 for op in OPS), dict(flow.traces)
    flow.log_prob(x[:5])  # a new batch size
    # tf.function has a batch-polymorphic signature; XLA specialises on shapes
    assert flow.traces["log_prob"] == (1 if variant == "function" else 2)


def test_function_ops_bound_to_a_flow_follow_its_weights_and_keep_the_trace_shared(
        tfp_backend, rng):
    """The function variant calls the spec's shared trace through a per-flow wrapper that
    captures the flow's variables: after set_weights (and on a second flow of the spec)
    every op agrees with eager TF on the new weights, and the shared ops trace once."""
    spec = make_spec("iaf", 3, layers=2, hidden=(6, 5))  # a spec no other test traces
    x = rng.standard_normal((9, 3)).astype(np.float32)
    flows = [tfp_backend.build(spec, seed=s, variant="function") for s in (0, 1)]
    eager = tfp_backend.build(spec, variant="eager")
    for f in flows:
        f.log_prob(x), f.sample(9, seed=3)  # bind, then change the weights under it
    for k, f in enumerate(flows):
        w = C.random_weights(spec, 10 + k)
        f.set_weights(w)
        eager.set_weights(w)
        for op in (lambda g: g.log_prob(x), lambda g: g.inverse(x)[0],
                   lambda g: g.forward(x)[1], lambda g: g.sample(9, seed=3),
                   lambda g: g.sample_and_log_prob(9, seed=3)[1]):
            np.testing.assert_allclose(op(f), op(eager), rtol=1e-5, atol=1e-5)
    assert all(flows[0].traces[op] == 1 for op in OPS), dict(flows[0].traces)
    assert {k[0] for k in flows[1]._bound_fns} >= {"log_prob", "inverse", "forward",
                                                    "sample", "sample_and_log_prob"}


@pytest.mark.parametrize("arch", ["realnvp", "maf", "iaf"])
def test_round_trip_evaluates_the_network_not_a_cache(tfp_backend, arch, rng):
    """TFP bijectors cache results keyed on the tensor; an op handed the tensor another op
    returned must still run its conditioner (eagerly, passes count real evaluations)."""
    spec = make_spec(arch, 3)
    flow = tfp_backend.build(spec, variant="eager")
    flow.set_weights(C.random_weights(spec, 0))
    z = tf.constant(rng.standard_normal((8, 3)).astype(np.float32))
    x, _ = flow.forward(z)
    z2, _ = flow.inverse(x)
    assert flow.passes > 0
    np.testing.assert_allclose(z2.numpy(), z.numpy(), atol=1e-4)


def test_passes_do_not_depend_on_the_variant(tfp_backend):
    spec = make_spec("maf", 4, layers=2)
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    counts = {}
    for variant in ("eager", "function", "xla"):
        flow = tfp_backend.build(spec, variant=variant)
        counts[variant] = []
        for op in (flow.log_prob, flow.forward):
            op(x)
            counts[variant].append(flow.passes)
        flow.sample(8)
        counts[variant].append(flow.passes)
    assert counts["eager"] == counts["function"] == counts["xla"] == [4, 10, 8], counts


def _python(code: str, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **env}, timeout=300)


def test_import_is_quiet_and_threads_follow_the_setting():
    out = _python("from flowbench import adapters; adapters.load('tfp'); adapters.load('jax'); "
                  "import tensorflow as tf; "
                  "print(tf.config.threading.get_intra_op_parallelism_threads())",
                  FLOWBENCH_THREADS="1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
    for noise in ("oneDNN", "cuda", "absl::InitializeLog"):
        assert noise not in out.stderr, out.stderr

