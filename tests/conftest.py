"""Shared fixtures. Backend tests are parametrized over every registered backend, so a
new backend runs the same suite. A backend that cannot load is skipped with its reason,
unless FLOWBENCH_REQUIRE_BACKENDS names it (CI does): then the skip is a failure."""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from pathlib import Path


class _Unprefixed(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports of flowbench.X give the module X itself (one module object, one name)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("flowbench."):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(spec.name.removeprefix("flowbench."))

    def exec_module(self, module):
        pass


def _mutants_are_flowbench() -> None:
    """Under ``nox -s mutants`` mutmut runs the tests with mutants/ first on sys.path,
    holding mutated copies of adapters/, datasets/ and benchmarks/ that it knows by those
    names: flowbench.X must then be the copy X, not the source the editable install maps
    it to."""
    for entry in sys.path:
        here = Path(entry or ".").resolve()
        if here.name == "mutants" and (here / "benchmarks").is_dir():
            sys.meta_path.insert(0, _Unprefixed())
            return


_mutants_are_flowbench()

import numpy as np  # noqa: E402 (after the mutants hook)
import pytest  # noqa: E402

from flowbench import adapters  # noqa: E402

REQUIRED = {b for b in os.environ.get("FLOWBENCH_REQUIRE_BACKENDS", "").split(",") if b}
PRESETS = list(adapters.PRESETS)

# Non-preset points of the matrix: every transform with each conditioner and direction.
COMBOS = {
    "coupling-mlp": dict(arch="custom", transform="mlp", conditioner="coupling"),
    "coupling-mlp-sampling": dict(arch="custom", transform="mlp", conditioner="coupling",
                                  direction="sampling"),
    "ar-additive": dict(arch="custom", transform="additive", conditioner="autoregressive"),
    "ar-sigmoid-affine": dict(arch="maf", scale="sigmoid"),
    "ar-spline-sampling": dict(arch="nsf-ar", direction="sampling"),
    "naf-sampling": dict(arch="naf", direction="sampling"),
    "realnvp-actnorm-lu": dict(arch="realnvp", actnorm=True, linear="lu"),
    "maf-logistic-base": dict(arch="maf", base="logistic"),
    "nsf-tanh-finalscale": dict(arch="nsf", activation="tanh", final_scale=True),
}
ALL_ARCHS = PRESETS + list(COMBOS)


def make_spec(arch: str, dim: int, layers: int = 2, hidden=(16, 16)) -> adapters.FlowSpec:
    """Two layers hold everything a deeper flow has (both coupling masks, both MADE
    orders, composition) at a fraction of the tracing and compile time."""
    kw = COMBOS.get(arch, {"arch": arch})
    return adapters.FlowSpec(**kw, dim=dim, layers=layers, hidden=hidden)


# Matched backends (canonical weights, the full contract); peers have tests of their own.
IMPLEMENTED = list(adapters.MATCHED)
PEERS = list(adapters.PEERS)


def load_or_skip(name: str, module_level: bool = False):
    """The backend; skipped with its reason when unavailable, failed when REQUIRED."""
    why = adapters.available()[name]
    if why is None:
        return adapters.load(name)
    if name in REQUIRED:
        pytest.fail(f"backend {name} is required here but unavailable: {why}", pytrace=False)
    pytest.skip(f"backend {name} unavailable: {why}", allow_module_level=module_level)


def matched_targets(exclude=()) -> list[tuple[str, adapters.Backend, str]]:
    """(label, backend, variant) for every available matched backend and each of its
    execution variants but ``exclude``d (backend, variant) pairs."""
    out = []
    for name in IMPLEMENTED:
        if adapters.available()[name] is not None and name not in REQUIRED:
            continue
        backend = load_or_skip(name)
        for variant in backend.variants:
            if (name, variant) in exclude:
                continue
            label = name if len(backend.variants) == 1 else f"{name}:{variant}"
            out.append((label, backend, variant))
    return out


@pytest.fixture(params=IMPLEMENTED)
def backend(request):
    return load_or_skip(request.param)


MAX_MAPS = 30_000


@pytest.fixture(autouse=True)
def bounded_compiled_code():
    """Compiled XLA programs each hold memory mappings and Linux allows 65530 a process;
    this suite compiles thousands, so drop the backends' compiled caches now and then."""
    yield
    try:
        with open("/proc/self/maps") as f:
            maps = sum(1 for _ in f)
    except OSError:  # not Linux
        return
    if maps > MAX_MAPS:
        import gc
        for name in adapters.loaded():
            adapters.load(name).clear_caches()
        gc.collect()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
