"""A vi cell: a flow trained by reverse KL on a target density (``datasets.targets``), with
no data, and how well it fits.

Every backend gets the same procedure: Adam (``adapters.TrainConfig``) for ``steps``
steps, each on ``train_batch`` base draws of its own (``base_sample`` with a seed from one
numpy stream of the cell's seed: the same seeds everywhere; the numbers drawn are each
framework's own, except where a test hands the same draws to every backend). The curve
(the reverse KL of the last window of steps, or the negative ELBO where log Z is unknown)
becomes rows; a NaN loss ends the cell as failed at its step, after the curve so far.

Then ``metric_n`` draws of ``sample_and_log_prob`` (one pass in the sampling direction)
give the reverse KL (or ELBO) with its standard error, the ESS fraction of the
self-normalised importance weights and, for multimodal targets, each mode's share of the
draws beside the target's. 2-D cells save samples and the target's density on a grid
beside the results, for the report's figure.
"""

from __future__ import annotations

import time

import numpy as np

from flowbench.adapters.base import MAX_SEED

from . import metrics
from .cell import Cell
from .training import _save

PICTURE_SAMPLES = 2000


def fit_reverse_kl(flow, target, cell: Cell, rows) -> None:
    seeds = np.random.default_rng(cell.seed).integers(0, MAX_SEED, cell.steps)
    log_z = target.log_z if target.knows_log_z else None
    metric = "curve_reverse_kl" if log_z is not None else "curve_neg_elbo"
    running, t0, step = [], time.perf_counter(), 0
    for step in range(1, cell.steps + 1):
        z = flow.base_sample(cell.train_batch, seed=int(seeds[step - 1]), native=True)
        loss = flow.train_step_reverse_kl(target, z)
        if not np.isfinite(loss):
            rows.add("diverged_step", step, "step")
            raise FloatingPointError(f"reverse-KL training diverged at step {step}: "
                                     f"loss {loss}")
        running.append(loss)
        if step % cell.eval_every and step != cell.steps:
            continue
        rows.add(metric, np.mean(running) + (log_z or 0.0), "nats", step=step,
                 wall_s=time.perf_counter() - t0)
        running = []
    rows.add("train_time", time.perf_counter() - t0, "s")
    rows.add("steps_run", step, "step")


def evaluate_vi(flow, target, cell: Cell, rows) -> None:
    x, log_q = flow.sample_and_log_prob(cell.metric_n, seed=cell.seed + 1)
    x = np.asarray(x, np.float64)
    log_p = target(x)
    known = target.knows_log_z
    res = metrics.reverse_kl(log_q, log_p, target.log_z if known else None)
    more = dict(n_used=res["n"], detail=f"{res['dropped']} draws with a non-finite "
                "log-density left out" if res["dropped"] else "")
    if known:
        rows.add("reverse_kl", res["kl"], "nats", statistic="mean", stderr=res["stderr"],
                 note=f"log Z = {target.log_z:.6g} ({target.log_z_method})", **more)
    rows.add("elbo", res["elbo"], "nats", statistic="mean", stderr=res["stderr"], **more)
    rows.add("ess_fraction", res["ess_fraction"], "fraction", statistic="value", **more)
    rows.add("log_z_is", res["log_z_is"], "nats", statistic="value", **more)
    if target.modes > 1:
        finite = np.isfinite(x).all(1)
        for r in metrics.mode_shares(target.regions(x[finite]), target.modes):
            rows.add("mode_share", r["share"], "fraction", statistic="mean",
                     stderr=r["stderr"], mode=r["mode"],
                     reference=float(target.mode_shares[r["mode"]]))
    if cell.artifacts and target.dim == 2:
        gx, gy, true = target.grid()
        _save(cell, ".vi", samples=x[:PICTURE_SAMPLES].astype(np.float32), x=gx, y=gy,
              true=true)


def vi_cell(flow, target, cell: Cell, rows) -> None:
    fit_reverse_kl(flow, target, cell, rows)
    evaluate_vi(flow, target, cell, rows)
