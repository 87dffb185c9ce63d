"""First-call (trace + compile) cost of each op against its steady state, over dims.

For jitted backends the first call of an op on a new shape pays tracing and compilation;
the question this answers is whether that cost grows with ``dim`` (it must not when the
sequential passes are loops, not unrolled code).
"""

from __future__ import annotations

import numpy as np

from flowbench import adapters

from .timing import measure, op_calls

OPS = ("log_prob", "inverse", "forward", "sample", "train_step")


def compile_rows(backend_name: str, arch: str, dims, layers: int = 5,
                 hidden=(128, 128), batch: int = 256, ops=OPS) -> list[dict]:
    backend = adapters.load(backend_name)
    rows = []
    for dim in dims:
        spec = adapters.FlowSpec(arch=arch, dim=int(dim), layers=layers, hidden=tuple(hidden))
        flow = backend.build(spec, seed=0)
        x = np.random.default_rng(0).standard_normal((batch, spec.dim)).astype(np.float32)
        calls = op_calls(flow, backend.to_native(x, flow.device))
        for op in ops:
            t = measure(calls[op], backend.block, min_repeats=3, min_time=0.1)
            rows.append({"backend": backend_name, "version": backend.version(),
                         "arch": arch, "dim": int(dim), "op": op, "batch": batch,
                         "first_call_s": t["first"], "median_s": t["median"],
                         "compile_s": max(t["first"] - t["median"], 0.0),
                         "passes": flow.passes})
    return rows
