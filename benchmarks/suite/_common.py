"""What every benchmark of the asv suite shares: the parameter grid and flow set-up.

Module-level code here imports no framework (asv imports every module of the suite to
discover benchmarks): the grid needs only the backend registry's names. Frameworks load in
``setup``, through ``adapters.load``. A parameter combination that cannot run here (backend
not installed, arch the library does not offer, op it lacks) raises NotImplementedError in
setup, which asv records as skipped (n/a), never as a failure.

The grid can be narrowed (or widened) with environment variables, comma-separated:

    FLOWBENCH_ASV_BACKENDS   backend names, or the groups "matched", "peers", "all"
                             (default: matched; "all" adds the peers, and asv then
                             runs about 600 processes, close to an hour on 2 cores)
    FLOWBENCH_ASV_ARCHS      arch presets (default: maf,realnvp,nsf,iaf)
    FLOWBENCH_ASV_DIMS       data dimensions of the op/compile/memory benchmarks (default: 2,16)
    FLOWBENCH_ASV_THREADS    CPU threads of every framework (default: 2)

e.g. CI's tiny subset: FLOWBENCH_ASV_BACKENDS=torch FLOWBENCH_ASV_ARCHS=maf FLOWBENCH_ASV_DIMS=2.
asv records the parameter values with each result, so runs over different grids still
line up per combination in the published history.
"""

from __future__ import annotations

import os

import numpy as np

from flowbench import adapters  # the registry only: adapters imports no framework

LAYERS = 5
HIDDEN = (64, 64)
BATCH = 256          # rows of x for log_prob/inverse/forward/train_step, rows drawn by sample
SEED = 0
OPS = ("log_prob", "inverse", "forward", "sample", "train_step")

_GROUPS = {
    "matched": list(getattr(adapters, "MATCHED", {})),
    "peers": list(getattr(adapters, "PEERS", {})),
}
_GROUPS["all"] = _GROUPS["matched"] + _GROUPS["peers"]


def _env_list(var: str, default: str) -> list[str]:
    raw = os.environ.get(var, "").strip() or default
    return [t.strip() for t in raw.split(",") if t.strip()]


def _backends() -> list[str]:
    names: list[str] = []
    for token in _env_list("FLOWBENCH_ASV_BACKENDS", "matched"):
        for name in _GROUPS.get(token, [token]):
            if name not in names:
                names.append(name)
    return names


BACKENDS = _backends()
ARCHS = _env_list("FLOWBENCH_ASV_ARCHS", "maf,realnvp,nsf,iaf")
DIMS = [int(d) for d in _env_list("FLOWBENCH_ASV_DIMS", "2,16")]
THREADS = int(os.environ.get("FLOWBENCH_ASV_THREADS", "") or 2)


def load_backend(name: str):
    """The backend, after fixing the thread count; NotImplementedError (asv: skipped) when
    it cannot load here."""
    try:
        from flowbench.benchmarks.environment import set_threads
    except ImportError:  # a commit from before the harness had it (asv run over history)
        def set_threads(n):
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                        "FLOWBENCH_THREADS"):
                os.environ[var] = str(n)

    set_threads(THREADS)  # before the framework is imported
    reason = adapters.available().get(name, f"unknown backend {name!r}")
    if reason is not None:
        raise NotImplementedError(f"backend {name!r} unavailable: {reason}")
    try:
        return adapters.load(name)
    except adapters.BackendUnavailable as exc:
        raise NotImplementedError(str(exc)) from exc


def spec(arch: str, dim: int):
    return adapters.FlowSpec(arch=arch, dim=int(dim), layers=LAYERS, hidden=HIDDEN)


def check_offered(backend, arch: str, dim: int) -> None:
    """NotImplementedError when backend cannot build this spec, without building it (peers
    declare their offers; matched backends build every preset)."""
    offer = getattr(backend, "offer", None)
    if offer is not None:
        try:
            offer(spec(arch, dim))
        except adapters.UnsupportedSpec as exc:
            raise NotImplementedError(str(exc)) from exc


def build(backend, arch: str, dim: int):
    """A fresh flow with seed 0; NotImplementedError when the backend cannot build it."""
    try:
        return backend.build(spec(arch, dim), seed=SEED)
    except adapters.UnsupportedSpec as exc:
        raise NotImplementedError(str(exc)) from exc


def native_x(backend, flow, n: int = BATCH):
    """Standard-normal input, already native and on the flow's device."""
    x = np.random.default_rng(SEED).standard_normal((n, flow.spec.dim)).astype(np.float32)
    return backend.to_native(x, flow.device)


def op_call(flow, x, op: str):
    """The zero-argument call of one unchecked native op (benchmarks.timing.op_calls)."""
    try:
        from flowbench.benchmarks.timing import op_calls
    except ImportError as exc:  # a commit from before op_calls (asv run over history)
        raise NotImplementedError(f"no benchmarks.timing.op_calls here: {exc}") from exc
    return op_calls(flow, x, SEED)[op]


def first_call(backend, call) -> float:
    """Run call once, blocked; NotImplementedError when the flow lacks the op. Seconds."""
    import time

    t0 = time.perf_counter()
    try:
        backend.block(call())
    except adapters.UnsupportedOp as exc:
        raise NotImplementedError(str(exc)) from exc
    return time.perf_counter() - t0
