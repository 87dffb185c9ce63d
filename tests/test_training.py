"""Matched training and quality rows of a train cell (in-process, tiny torch flows)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks import matrix, worker

TORCH = {"torch": {"variants": ["eager"], "reason": None, "missing": {}}}


def _cell(tmp_path, **over):
    m = matrix.load("quick", {"backends": ["torch"], "archs": ["maf"], "steps": 60,
                              **over})
    cell = matrix.expand(m, TORCH)[0]
    cell.update(artifacts=str(tmp_path / "artifacts"), n_train=2000, n_val=500,
                n_test=1000, batches=[64], min_time=0.01, layers=2, hidden=[16, 16])
    return cell


def _run(cell, tmp_path) -> pd.DataFrame:
    out = tmp_path / "rows.jsonl"
    worker.run_cell(cell, str(out))
    return pd.read_json(out, lines=True)


def test_early_stopping_stops_and_restores_the_best_weights(tmp_path):
    # lr 0: the validation NLL never improves after the first evaluation
    cell = _cell(tmp_path, lr=0.0, eval_every=10, patience=2, steps=200, quality=False)
    rows = _run(cell, tmp_path).set_index("metric")
    assert rows.loc["status", "status"] == "ok"
    assert rows.loc["steps_run", "value"] == 30
    assert rows.loc["best_val_nll", "step"] == 10
    assert rows.loc["restored_best", "value"] == 1.0
    curve = _run(cell, tmp_path)
    assert (curve[curve.metric == "curve_val_nll"].step.tolist()[:3] == [10, 20, 30])


def test_quality_rows_and_pictures(tmp_path):
    cell = _cell(tmp_path, eval_every=20, null_draws=5, metric_n=500)
    rows = _run(cell, tmp_path)
    assert rows[rows.metric == "status"].status.tolist() == ["ok"]
    by = rows.set_index("metric")
    for metric in ("test_nll", "entropy_gap", "normality_ks_mean",
                   "normality_henze_zirkler", "two_sample_mmd_rbf",
                   "two_sample_sliced_wasserstein", "invertibility_max_abs"):
        assert np.isfinite(by.loc[metric, "value"]), metric
    assert np.isfinite(by.loc["normality_ks_mean", "null_q95"])
    assert np.isfinite(by.loc["two_sample_ks_mean", "reference"])
    assert by.loc["invertibility_max_abs", "value"] < 1e-4
    assert rows[rows.metric == "curve_val_nll"].step.tolist() == [20, 40, 60]
    pic = np.load(tmp_path / "artifacts" / f"{cell['key']}.npz")
    dx, dy = pic["x"][1] - pic["x"][0], pic["y"][1] - pic["y"][0]
    # the grid covers the test data's 0.5-99.5 percentile box, padded: nearly all mass
    assert 0.9 < np.exp(pic["learned"]).sum() * dx * dy < 1.01
    assert 0.9 < np.exp(pic["true"]).sum() * dx * dy < 1.01
    assert pic["z"].shape == (1000, 2)
