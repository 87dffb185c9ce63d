"""Conditioner evaluations per op, measured in every backend: the sequential direction of
an autoregressive flow shows up as ``dim`` passes per layer, whatever the library calls
that direction.

Matched backends count as their ops run (traced backends scale loop bodies by their trip
counts); torch peers count with forward hooks; JAX and TF peers re-run the op eagerly and
count the conditioner's calls. A cell that cannot be built is a row with its reason.
"""

from __future__ import annotations

import numpy as np

from flowbench import adapters

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
                    flow.log_prob(x) if op == "log_prob" else flow.sample(batch, seed=0)
                    rows.append({**base, "variant": flow.variant, "op": op,
                                 "passes": int(flow.passes),
                                 "per_layer": flow.passes / layers, "status": "ok",
                                 "error": ""})
            except adapters.UnsupportedSpec as exc:
                rows.append({**base, "status": "skipped", "error": str(exc)})
            except Exception as exc:  # a failing cell is a row; the rest goes on
                rows.append({**base, "status": "failed",
                             "error": f"{type(exc).__name__}: {exc}"})
    return rows


def pass_table(rows):
    """arch x backend, 'log_prob / sample' passes per layer."""
    import pandas as pd

    df = pd.DataFrame(rows)
    ok = df[df.status == "ok"]
    if ok.empty:
        return pd.DataFrame()
    per = ok.pivot_table(index=["arch", "backend"], columns="op", values="per_layer",
                         aggfunc="first")
    cell = per.apply(lambda r: f"{r['log_prob']:g} / {r['sample']:g}", axis=1)
    return cell.unstack("backend").fillna("-")
