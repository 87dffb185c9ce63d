"""The quick main job: every available backend x preset, trained briefly on Eq. 39.

Rows are tidy (one measurement per row) and carry their status; a failing cell is a row
with its error and the run goes on. Later issues replace the in-process loop with the
subprocess matrix runner; this module keeps the path end to end.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field

import numpy as np

import adapters
import datasets

from . import environment
from .timing import measure, op_calls


@dataclass
class QuickConfig:
    dataset: str = "eq39"
    archs: tuple[str, ...] = tuple(adapters.PRESETS)
    backends: tuple[str, ...] | None = None  # None: every available backend
    layers: int = 4
    hidden: tuple[int, ...] = (64, 64)
    steps: int = 1500
    batch: int = 256
    lr: float = 2e-3
    n_train: int = 20_000
    n_test: int = 5_000
    time_batch: int = 1024
    seed: int = 0
    threads: int = 2
    extra: dict = field(default_factory=dict)


class Standardizer:
    """x' = (x - mean) / std fitted on the training split; the flow models x', and
    log p(x) = log p'(x') - sum(log std) exactly, so NLLs stay in the data's units."""

    def __init__(self, train: np.ndarray):
        self.mean = train.mean(0)
        self.std = train.std(0)
        self.log_jac = float(np.log(self.std).sum())

    def __call__(self, x):
        return ((x - self.mean) / self.std).astype(np.float32)


def run_cell(backend_name: str, arch: str, ds, cfg: QuickConfig, std: Standardizer,
             log) -> list[dict]:
    base = {"backend": backend_name, "arch": arch, "dataset": ds.name, "dim": ds.dim,
            "layers": cfg.layers, "hidden": "x".join(map(str, cfg.hidden)),
            "steps": cfg.steps, "batch": cfg.batch, "seed": cfg.seed, "threads": cfg.threads}
    rows: list[dict] = []

    def row(metric, value, unit, **more):
        rows.append({**base, "metric": metric, "value": value, "unit": unit,
                     "status": "ok", "error": "", **more})

    try:
        backend = adapters.load(backend_name)
        base["backend_version"] = backend.version()
        spec = adapters.FlowSpec(arch=arch, dim=ds.dim, layers=cfg.layers, hidden=cfg.hidden)
        flow = backend.build(spec, seed=cfg.seed, train=adapters.TrainConfig(lr=cfg.lr))
        base["variant"] = flow.variant
        row("num_params", flow.num_params(), "count")
        rng = np.random.default_rng(cfg.seed)
        train = std(ds.train)
        t0 = time.perf_counter()
        loss = float("nan")
        for _ in range(cfg.steps):
            loss = flow.train_step(train[rng.integers(0, len(train), cfg.batch)])
            if not np.isfinite(loss):
                raise FloatingPointError(f"training diverged: loss {loss}")
        row("train_time", time.perf_counter() - t0, "s")
        row("final_train_loss", loss + std.log_jac, "nats")
        lp = backend.to_numpy(flow.log_prob(std(ds.test))) - std.log_jac
        row("test_nll", float(-lp.mean()), "nats",
            stderr=float(lp.std(ddof=1) / np.sqrt(len(lp))))
        calls = op_calls(flow, backend.to_native(std(ds.test[:cfg.time_batch]), flow.device),
                         seed=1)
        for op in ("log_prob", "sample"):
            t = measure(calls[op], backend.block)
            row(f"time_{op}", t["median"], "s", iqr=t["iqr"], repeats=t["repeats"],
                first_call=t["first"], passes=flow.passes, time_batch=cfg.time_batch)
    except adapters.UnsupportedSpec as exc:  # a peer without this arch: declared, skipped
        rows.append({**base, "metric": "cell", "value": float("nan"), "unit": "",
                     "status": "skipped", "error": str(exc)})
    except Exception as exc:  # a failing cell is recorded, the run goes on
        log(f"[red]{backend_name}/{arch} failed[/red]: {type(exc).__name__}: {exc}")
        rows.append({**base, "metric": "cell", "value": float("nan"), "unit": "",
                     "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc(limit=3)})
    return rows


def run_quick(cfg: QuickConfig, progress=None, log=print) -> list[dict]:
    environment.set_threads(cfg.threads)
    ds = datasets.load(cfg.dataset, n_train=cfg.n_train, n_val=0, n_test=cfg.n_test,
                       seed=cfg.seed)
    std = Standardizer(ds.train)
    avail = adapters.available()
    names = cfg.backends or [b for b, why in avail.items() if why is None]
    env = environment.describe()
    rows: list[dict] = []
    entropy = ds.entropy()
    cells = [(b, a) for b in names for a in cfg.archs]
    for i, (b, a) in enumerate(cells):
        if progress:
            progress(i, len(cells), f"{b}/{a}")
        if avail.get(b, "unknown backend") is not None:
            rows.append({"backend": b, "arch": a, "dataset": ds.name, "metric": "cell",
                         "status": "skipped", "error": avail.get(b) or "unknown backend"})
            continue
        rows.extend(run_cell(b, a, ds, cfg, std, log))
    if progress:
        progress(len(cells), len(cells), "done")
    for r in rows:
        r.update(env)
        if entropy is not None:
            r["target_entropy"] = entropy[0]
    return rows


def summary(rows: list[dict]):
    """Pivot: one line per backend x arch with NLL, entropy, gap and median times."""
    import pandas as pd

    df = pd.DataFrame(rows)
    ok = df[df["status"] == "ok"]
    keys = ["arch", "backend", "variant"]
    table = ok.pivot_table(index=keys, columns="metric", values="value", aggfunc="first")
    out = pd.DataFrame(index=table.index)
    out["test NLL (nats)"] = table.get("test_nll")
    if "target_entropy" in ok:
        out["entropy (nats)"] = ok.groupby(keys)["target_entropy"].first()
        out["gap"] = out["test NLL (nats)"] - out["entropy (nats)"]
    out["log_prob (ms)"] = table.get("time_log_prob") * 1e3
    out["sample (ms)"] = table.get("time_sample") * 1e3
    out["train (s)"] = table.get("train_time")
    out["params"] = table.get("num_params")
    passes = ok[ok["metric"] == "time_sample"].set_index(keys)["passes"]
    out["sample passes"] = passes
    failed = df[df["status"] != "ok"][["backend", "arch", "status", "error"]]
    return out.reset_index(), failed
