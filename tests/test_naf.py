"""NAF's deep sigmoidal transformer and its bisection inverse, written once
(``adapters/naf.py``) over each framework's ops table, against the numpy reference's own
copy (``reference._dsf`` / ``reference._bisect``, the oracle), eagerly and inside the
framework's compiler (where the bisection runs as a while_loop)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from flowbench.adapters import canonical as C, naf, reference as R

from .conftest import IMPLEMENTED, load_or_skip

M = 4  # naf_hidden


@pytest.fixture(params=IMPLEMENTED)
def framework(request):
    """(ops table, to native float32, to numpy, compile) of one matched backend."""
    backend = load_or_skip(request.param)
    ops = importlib.import_module(f"flowbench.adapters.{request.param}.ops").OPS
    if request.param == "jax":
        import jax
        compile_ = jax.jit
    elif request.param == "tfp":
        from flowbench.adapters.native.tf import tf

        def compile_(fn):
            return tf.function(fn, autograph=False)
    else:
        def compile_(fn):  # torch's compile variant compiles only the loop bodies
            return fn
    return ops, lambda a: backend.to_native(np.asarray(a, np.float32)), \
        backend.to_numpy, compile_


@pytest.fixture
def points():
    """u spread over [-4, 4] (bracketing must double), and transformer parameters."""
    rng = np.random.default_rng(5)
    u = np.linspace(-4, 4, 9)
    a, b, w = (rng.standard_normal((9, M)) for _ in range(3))
    return u, a, b, w


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_dsf_equals_the_reference(framework, points, compiled):
    ops, native, numpy, compile_ = framework
    u, a, b, w = points
    fn = compile_(lambda *t: naf.dsf(ops, *t)) if compiled else (lambda *t: naf.dsf(ops, *t))
    v, logd = fn(*map(native, (u, a, b, w)))
    v_ref, logd_ref = R._dsf(u, a, b, w)
    np.testing.assert_allclose(numpy(v), v_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(numpy(logd), logd_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_bisection_inverse_equals_the_reference(framework, points, compiled):
    ops, native, numpy, compile_ = framework
    u, a, b, w = points
    v, logd_ref = R._dsf(u, a, b, w)
    u_ref = R._bisect(lambda t: R._dsf(t, a, b, w)[0], v)

    def inverse(*t):
        return naf.dsf_inverse(ops, *t)

    fn = compile_(inverse) if compiled else inverse
    back, logd = fn(*map(native, (v, a, b, w)))
    tol = 4 * C.BISECTION_TOL * (1 + np.abs(u_ref))  # its tolerance, and float32's rounding
    assert (np.abs(numpy(back) - u_ref) <= tol).all(), np.abs(numpy(back) - u_ref) / tol
    np.testing.assert_allclose(numpy(logd), -logd_ref, rtol=1e-4, atol=1e-4)


def test_bisect_solves_an_increasing_function(framework):
    """The loop on its own: cube root, roots far outside the first bracket [-1, 1]."""
    ops, native, numpy, _ = framework
    target = np.array([-1000.0, -0.3, 0.0, 2.0, 1e5])
    root = numpy(naf.bisect(ops, lambda t: t * t * t, native(target)))
    np.testing.assert_allclose(root, np.cbrt(target), rtol=4e-6, atol=4e-6)
