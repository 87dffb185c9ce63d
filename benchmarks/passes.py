"""Conditioner evaluations per op, measured in every backend: the sequential direction of
an autoregressive flow shows up as ``dim`` passes per layer, whatever the library calls
that direction.

Matched backends count as their ops run (traced backends scale loop bodies by their trip
counts); torch peers count with forward hooks; JAX and TF peers re-run the op eagerly and
count the conditioner's calls. Beside that count, each row has the work that executed by
the framework's counter (``adapters/work.py``), in passes' worth. A cell that cannot be
built is a row with its reason.
"""

from __future__ import annotations

import functools

import numpy as np

from flowbench import adapters

from .flops import op_flops
from .worker import executed_work

OPS = ("log_prob", "sample")


def pass_rows(backend_names, archs, dim: int = 8, layers: int = 4, hidden=(64, 64),
              batch: int = 16) -> list[dict]:
    rows = []
    x = np.random.default_rng(0).standard_normal((batch, dim)).astype(np.float32)
    for name in backend_names:
        for arch in archs:
            base = {"backend": name, "arch": arch, "dim": dim, "layers": layers}
            try:
                backend = adapters.load(name)
                spec = adapters.FlowSpec(arch=arch, dim=dim, layers=layers, hidden=hidden)
                flow = backend.build(spec, seed=0)
                for op in OPS:
                    run = (functools.partial(flow.log_prob, x) if op == "log_prob"
                           else functools.partial(flow.sample, batch, seed=0))
                    run()
                    passes = int(flow.passes)
                    one = op_flops(spec, op, 1, batch)
                    work = executed_work(flow, run, one * passes)
                    rows.append({**base, "variant": flow.variant, "op": op,
                                 "passes": passes, "per_layer": passes / layers,
                                 "executed_per_layer": work.flops / one / layers,
                                 "counter": work.counter, "status": "ok", "error": ""})
            except adapters.UnsupportedSpec as exc:
                rows.append({**base, "status": "skipped", "error": str(exc)})
            except Exception as exc:  # a failing cell is a row; the rest goes on
                rows.append({**base, "status": "failed",
                             "error": f"{type(exc).__name__}: {exc}"})
    return rows


def pass_table(rows):
    """arch x backend, 'log_prob / sample' passes per layer, and what ran where the
    framework's counter saw other work ("(ran 1 / 8)": a compiler removed a copy)."""
    import pandas as pd

    from .report.tables import passes_cells

    df = pd.DataFrame(rows)
    ok = df[df.status == "ok"]
    if ok.empty:
        return pd.DataFrame()
    return passes_cells(*(ok.pivot_table(index=["arch", "backend"], columns="op", values=v,
                                         aggfunc="first")
                          for v in ("per_layer", "executed_per_layer")))
