"""Interleaved timing of one framework's backends in one process: the ratio a comparison
table prints, measured so that the machine's drift cancels.

On a shared VM the same op in the same process drifts by +-25% over seconds (a torch nsf
``log_prob`` at dim 2, batch 1024, measured in 0.2 s rounds back to back: 4.1 ms to
6.5 ms within ten seconds), and two cells timed a minute apart differ by that drift as
well as by their code. A paired cell builds every backend of one framework that a
comparison group holds (matched variants and peers, same spec and seed) and times them
in rounds: each round times every member's every op for a short block, members in a
fresh random order, so neighbouring blocks share the machine's state. The report's
ratio is the median over rounds of the per-round ratio, and its standard error that of a
median from the IQR of those per-round ratios (``report.tables.paired_rows``): drift
that moves both sides together is not in it.

Rows: ``paired_time`` (statistic ``round``, ``step`` = round, ``repeats`` = calls in the
block) per member, op and batch, the member in ``backend`` / ``variant``. A member that
cannot be built or whose op fails is a status row naming it; the others are timed.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from .timing import op_calls

SEP = "+"  # joins the members' backends (and variants) in a paired cell's fields


def members(cell) -> list[tuple[str, str]]:
    """(backend, variant) of each member of a paired cell."""
    backends, variants = cell.backend.split(SEP), cell.variant.split(SEP)
    if len(backends) != len(variants) or len(backends) < 2:
        raise ValueError(f"a paired cell names two or more backends and one variant for "
                         f"each, joined by {SEP!r}; got backend={cell.backend!r}, "
                         f"variant={cell.variant!r}")
    return list(zip(backends, variants))


def rounds(calls: dict[Any, Callable[[], Any]], block: dict[Any, Callable[[Any], Any]],
           n_rounds: int, round_time: float, rng: np.random.Generator,
           min_calls: int = 2) -> dict[Any, list[tuple[float, int]]]:
    """name -> [(median seconds per call, calls)] for each round. Every round runs every
    call for at least ``min_calls`` calls and ``round_time`` seconds, in an order drawn
    from ``rng`` (compile the calls before). Each block starts with one untimed call:
    the first call after another library's leaves caches, and allocations, as that one
    left them (a jax MAF ``train_step`` at batch 4096 took 1.25x flowjax's with it timed,
    0.89x in a cell of its own), and a loop that repeats one op, which is what a timing
    stands for, does not pay that."""
    out: dict[Any, list[tuple[float, int]]] = {name: [] for name in calls}
    names = list(calls)
    for _ in range(n_rounds):
        for i in rng.permutation(len(names)):
            name = names[i]
            fn, done = calls[name], block[name]
            done(fn())
            times: list[float] = []
            start = time.perf_counter()
            while len(times) < min_calls or time.perf_counter() - start < round_time:
                t0 = time.perf_counter()
                done(fn())
                times.append(time.perf_counter() - t0)
            out[name].append((float(np.median(times)), len(times)))
    return out


def paired_cell(cell, rows, spec, device: str, status_of, error_of) -> None:
    """Build each member, then time every op of every member at every batch in
    interleaved rounds (``cell.rounds`` of ``cell.min_time / cell.rounds`` seconds per
    member and op: each member gets the time a plain cell gives one op)."""
    from flowbench import adapters

    built = {}
    for b, v in members(cell):
        who = {"backend": b, "variant": v}
        try:
            backend = adapters.load(b)
            flow = backend.build(spec, seed=cell.seed, device=device,
                                 variant=None if v == "default" else v)
        except Exception as exc:  # a member that cannot be built is a row; the rest run
            rows.status(status_of(exc), error_of(exc), **who)
            continue
        built[(b, flow.variant)] = (backend, flow)
    rng = np.random.default_rng(cell.seed)
    n_rounds = cell.rounds or 10
    for batch in cell.batches:
        x = rng.standard_normal((batch, spec.dim)).astype(np.float32)
        calls, block = {}, {}
        for (b, v), (backend, flow) in built.items():
            native = op_calls(flow, backend.to_native(x, flow.device), seed=cell.seed + 1)
            for op in cell.ops:
                try:  # one compile here, so that a failing op is a row, not a lost cell
                    backend.block(native[op]())
                except Exception as exc:
                    rows.status(status_of(exc), error_of(exc), op=op, batch=batch,
                                backend=b, variant=v, backend_version=backend.version())
                    continue
                calls[(b, v, op)], block[(b, v, op)] = native[op], backend.block
        timed = rounds(calls, block, n_rounds, cell.min_time / n_rounds, rng)
        for (b, v, op), per_round in timed.items():
            version = built[(b, v)][0].version()
            for r, (median, n) in enumerate(per_round):
                rows.add("paired_time", median, "s", op, "round", step=r, repeats=n,
                         batch=batch, backend=b, variant=v, backend_version=version)
