"""Matched training and the quality of what it learned, for one train cell.

Every backend, matched or peer, gets the same procedure: the same splits of the dataset
(drawn from the cell's seed), the same batch order (drawn here in numpy and handed to the
flow), Adam with the same hyperparameters (``adapters.TrainConfig``), the same number of
steps, optional global-norm clipping, early stopping on validation NLL. The curve (train
and validation NLL against step and wall time) becomes rows; a NaN loss ends the cell as
failed with the step it diverged at, after the curve so far is written.

Early stopping restores the best validation weights where the backend exports canonical
weights (every matched backend); peers, which do not, keep their last weights, and the
``restored_best`` row says which happened.

Where the cell has an artifacts folder, the per-row test log-densities (``test_log_density``,
float64, in the units of the ``test_nll`` row: its negative mean is that row) are saved
beside the results, so the report can pair two backends on the same test rows: in the
cell's pictures file ``{key}.npz`` when it draws pictures (2-D and image cells with
quality on), else in ``{key}.log_density.npz`` of their own (the report's figures read
every ``{key}.npz`` as pictures).
"""

from __future__ import annotations

import time

import numpy as np

from flowbench import adapters

from . import metrics
from .cell import Cell


class Standardizer:
    """x' = (x - mean) / std fitted on the training split; the flow models x', and
    log p(x) = log p'(x') - sum(log std) exactly, so NLLs stay in the data's units."""

    def __init__(self, train: np.ndarray):
        self.mean = train.mean(0)
        self.std = train.std(0)
        self.log_jac = float(np.log(self.std).sum())

    def __call__(self, x):
        return ((x - self.mean) / self.std).astype(np.float32)

    def undo(self, x):
        return np.asarray(x, np.float64) * self.std + self.mean

    def source(self, train):
        """What training batches are drawn from (rows), prepared once."""
        return self(train)

    def batch(self, rows, rng):
        """(the flow's input, what turns its mean loss into the data's NLL)."""
        return rows, self.log_jac

    def log_density(self, flow, backend, x) -> np.ndarray:
        """Per-row log-density in the data's units."""
        return backend.to_numpy(flow.log_prob(self(x))).astype(np.float64) - self.log_jac


class ImagePrep:
    """Images as a flow sees them: uniform dequantisation and the logit transform
    (``datasets.images.LogitDequantizer``), fresh noise for every training batch and one
    seeded draw for evaluation. Log-densities are those of the dequantised pixels
    u = (x + U) / levels on [0, 1]^D: log p(y) + log|dy/du|."""

    def __init__(self, images, alpha: float, seed: int):
        self.deq = images.dequantizer(alpha=alpha)
        self.seed = seed

    def source(self, train):
        return train

    def batch(self, rows, rng):
        y, log_jac = self.deq.transform(rows, rng)
        return y, -float(log_jac.mean())

    def transform(self, x):
        """(y, log|dy/du|) with the evaluation's one seeded dequantisation draw."""
        return self.deq.transform(x, self.seed + 99)

    def log_density(self, flow, backend, x) -> np.ndarray:
        y, log_jac = self.transform(x)
        return backend.to_numpy(flow.log_prob(y)).astype(np.float64) + log_jac


def fit(flow, backend, ds, cell: Cell, rows, prep=None):
    """Adam on the training split with early stopping on the validation split; returns
    the preparation (standardisation, or dequantisation for images) it trained under."""
    std = prep or Standardizer(ds.train)
    data = std.source(ds.train)
    rng = np.random.default_rng(cell.seed)
    every, patience = cell.eval_every, cell.patience
    has_val = len(ds.val) > 0
    best, best_step, best_weights, stale = np.inf, 0, None, 0
    can_restore = True
    running, t0 = [], time.perf_counter()
    step = 0
    for step in range(1, cell.steps + 1):
        batch, offset = std.batch(data[rng.integers(0, len(data), cell.train_batch)], rng)
        loss = flow.train_step(batch)
        if not np.isfinite(loss):
            rows.add("diverged_step", step, "step")
            raise FloatingPointError(f"training diverged at step {step}: loss {loss}")
        running.append(loss + offset)
        if step % every and step != cell.steps:
            continue
        wall = time.perf_counter() - t0
        rows.add("curve_train_nll", np.mean(running), "nats", step=step,
                 wall_s=wall)
        running = []
        if not has_val:
            continue
        val = -std.log_density(flow, backend, ds.val).mean()
        rows.add("curve_val_nll", val, "nats", step=step, wall_s=wall)
        if val < best:
            best, best_step, stale = val, step, 0
            if can_restore:
                try:
                    best_weights = flow.get_weights()
                except adapters.UnsupportedOp:
                    can_restore = False
        else:
            stale += 1
            if patience and stale >= patience:
                break
    rows.add("train_time", time.perf_counter() - t0, "s")
    rows.add("steps_run", step, "step")
    if has_val:
        rows.add("best_val_nll", best, "nats", step=best_step)
        restored = best_weights is not None and best_step != step
        if restored:
            flow.set_weights(best_weights)
        rows.add("restored_best", float(restored), "bool", step=best_step)
    return std


def evaluate(flow, backend, ds, cell: Cell, rows, std: Standardizer) -> None:
    """Test NLL (and the gap to the target's entropy), normality of the latent against
    its null at the same n, two-sample distances of flow samples against held-out data
    with the level two draws of the target reach, and the round-trip error."""
    lp = std.log_density(flow, backend, ds.test)
    pictures = bool(cell.artifacts) and cell.quality and ds.dim == 2
    if not pictures:
        save_log_density(cell, lp)
    # overflow is a result: counted, and the NLL is +inf rather than a mean of the rest
    overflowed = int(np.isneginf(lp).sum())
    rows.add("overflowed_log_prob", overflowed, "count", statistic="value", n_used=len(lp))
    if overflowed:
        rows.add("test_nll", float("inf"), "nats", statistic="mean",
                 note=f"{overflowed} of {len(lp)} test rows have log q = -inf: the flow's "
                      "float arithmetic overflowed there; no quality metric follows")
        return
    res = metrics.nll(lp, ds.dim)
    rows.add("test_nll", res["nll"], "nats", statistic="mean", stderr=res["stderr"])
    rows.add("test_nll_per_dim", res["nll_per_dim"], "nats", statistic="mean",
             stderr=res["stderr_per_dim"])
    entropy = ds.entropy()
    if entropy is not None:
        rows.add("target_entropy", entropy[0], "nats", statistic="mean", stderr=entropy[1])
        gap = metrics.entropy_gap(res, *entropy)
        rows.add("entropy_gap", gap["gap"], "nats", statistic="mean", stderr=gap["stderr"])
    if not cell.quality:
        return
    seed, max_n = cell.seed, cell.metric_n
    z = latent_rows(flow, std(ds.test), cell, rows, "data units (standardised)")
    if pictures:
        save_pictures(flow, backend, ds, std, z, cell, test_log_density=lp)
    n = min(len(ds.test), max_n)
    samples = std.undo(flow.sample(n, seed=seed + 1))
    ref = ds.density.sample(n, np.random.default_rng(seed + 10_007))
    two_sample_rows(samples, ds.test[:n], ref, cell, rows, "distance")


def latent_rows(flow, x, cell: Cell, rows, unit: str) -> np.ndarray:
    """Normality of z = f^-1(x) against its null at the same n, and the round trip's
    error (in ``unit``); returns z."""
    z = np.asarray(flow.inverse(x)[0], np.float64)
    for r in metrics.normality(z, seed=cell.seed, max_n=cell.metric_n,
                               null_draws=cell.null_draws,
                               hz_null_draws=max(2, cell.null_draws // 2)):
        rows.add(f"normality_{r['metric']}", r["value"], "statistic", statistic="value",
                 null_mean=r["null_mean"], null_q95=r["null_q95"], null_p=r["null_p"],
                 n_used=r["n"])
    back, _ = flow.forward(z.astype(np.float32))
    err = metrics.invertibility_error(x, back)
    rows.add("invertibility_max_abs", err["max_abs"], unit, statistic="max")
    return z


def two_sample_rows(samples, data, ref, cell: Cell, rows, unit: str, detail: str = ""):
    """Distances between flow samples and held-out data, each beside its reference."""
    if not np.isfinite(samples).all():
        raise FloatingPointError("flow samples hold NaN or inf")
    for r in metrics.two_sample(samples, data, ref, seed=cell.seed, max_n=cell.metric_n):
        rows.add(f"two_sample_{r['metric']}", r["value"], unit, statistic="value",
                 reference=r["reference"],
                 detail="; ".join(filter(None, [r.get("detail", ""), detail])))


GRID = 96


def save_pictures(flow, backend, ds, std: Standardizer, z, cell: Cell,
                  test_log_density: np.ndarray) -> None:
    """What the report draws for a 2-D dataset, beside the results: the learned and the
    true log-density on a grid over the test data's range, and test points mapped to the
    latent; with them the per-row test log-densities the report pairs backends on."""
    lo, hi = np.percentile(ds.test, [0.5, 99.5], axis=0)
    pad = 0.1 * (hi - lo)
    axes = [np.linspace(lo[i] - pad[i], hi[i] + pad[i], GRID) for i in range(2)]
    xx, yy = np.meshgrid(*axes)
    pts = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float32)
    learned = std.log_density(flow, backend, pts).reshape(GRID, GRID)
    true = (ds.log_prob(pts).reshape(GRID, GRID) if ds.log_prob is not None
            else np.full((GRID, GRID), np.nan))
    _save(cell, x=axes[0], y=axes[1], learned=learned, true=true,
          z=z[:1000].astype(np.float32),
          test_log_density=np.asarray(test_log_density, np.float64))


def train_cell(flow, backend, cell: Cell, rows, images=None):
    """Fit and evaluate; returns the prepared test split for the cell's timing."""
    if images is not None:
        prep = ImagePrep(images, cell.logit_alpha, cell.seed)
        fit(flow, backend, images, cell, rows, prep)
        return evaluate_images(flow, backend, images, cell, rows, prep)
    from flowbench import datasets

    ds = datasets.load(cell.dataset, n_train=cell.n_train, n_val=cell.n_val,
                       n_test=cell.n_test, seed=cell.seed)
    std = fit(flow, backend, ds, cell, rows)
    evaluate(flow, backend, ds, cell, rows, std)
    return std(ds.test)


SAMPLE_GRID = 64  # flow samples kept per image cell for the report's grid


def evaluate_images(flow, backend, images, cell: Cell, rows, prep: ImagePrep) -> np.ndarray:
    """Bits/dim and NLL of the dequantised test images (logit Jacobian included), the
    latent's normality, two-sample distances in the flow's (logit) space against the
    validation split as the reference level, the round trip, and a grid of samples."""
    deq, D = prep.deq, images.dim
    y, log_jac = prep.transform(images.test)
    lp_y = backend.to_numpy(flow.log_prob(y)).astype(np.float64)
    bpd = metrics.bits_per_dim(lp_y, D, levels=deq.levels, logit_alpha=deq.alpha,
                               log_jacobian=log_jac)
    nll = bpd["bpd"] * D * np.log(2)  # of x + U on [0, levels]^D: an upper bound on -log P(x)
    rows.add("test_bpd", bpd["bpd"], "bits/dim", statistic="mean", stderr=bpd["stderr"])
    rows.add("test_nll", nll, "nats", statistic="mean", stderr=bpd["stderr"] * D * np.log(2))
    rows.add("test_nll_per_dim", nll / D, "nats", statistic="mean",
             stderr=bpd["stderr"] * np.log(2))
    # per row, in test_nll's units (x + U on [0, levels]^D): its negative mean is test_nll
    lp = lp_y + log_jac - D * np.log(deq.levels)
    if not cell.quality:
        save_log_density(cell, lp)
        return y
    seed, max_n = cell.seed, cell.metric_n
    latent_rows(flow, y, cell, rows, "logit units")
    n = min(len(y), max_n)
    samples = np.asarray(flow.sample(max(n, SAMPLE_GRID), seed=seed + 1), np.float64)
    ref = deq.transform(images.val, seed + 10_007)[0]
    two_sample_rows(samples[:n], y[:n], ref, cell, rows, "distance (logit space)",
                    "reference: validation images")
    if cell.artifacts:
        _save(cell, samples=deq.to_pixels(samples[:SAMPLE_GRID]),
              data=images.test[:SAMPLE_GRID], levels=np.int64(images.levels),
              test_log_density=np.asarray(lp, np.float64))
    return y


LOG_DENSITY_SUFFIX = ".log_density"  # {key}.log_density.npz: a cell that draws no pictures


def save_log_density(cell: Cell, lp) -> None:
    """Per-row test log-densities of a cell that draws no pictures, in a file of its own
    (the report pairs backends on them); nothing without an artifacts folder."""
    if cell.artifacts:
        _save(cell, LOG_DENSITY_SUFFIX, test_log_density=np.asarray(lp, np.float64))


def _save(cell: Cell, suffix: str = "", **arrays) -> None:
    """The cell's pictures beside the results (written atomically), for the report."""
    from pathlib import Path

    path = Path(cell.artifacts) / f"{cell.key}{suffix}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
